"""Optimizer updates: one call updates every parameter, in one fused pass over each.

The arguments are flat: ``table`` has a row per parameter, ``(address of its weights, start,
size)``; the gradient sums and each state are one 1-D buffer for every parameter, the
parameter's numbers at ``[start, start + size)`` (the gradient sums are the optimizer's
``gradient_buffer``). The weights stay where the graph keeps them (their addresses, taken
from arrays the optimizer holds). So a kernel has one signature per dtype, whatever the
number of parameters: it is compiled once (the tuples of arrays it used to take were
compiled again for every parameter count: 0.8 s of CPU each for Adam).

Each rule is an element function, inlined into a loop that runs on every core (``prange``)
for a large parameter (``PARALLEL_MIN`` numbers or more), and on one core for a small one,
for which starting the threads (about 2 us) would cost more than the update. On two threads
the parallel loop also keeps the step fast for another reason: the products that made the
gradient and read the weights ran on both cores, split by the parameter's rows as Numba's
static schedule splits this loop (``kernels.owned_rows``, ``kernels.blas.gemm_owned``), so
each thread updates the numbers that its core made and read, from its own cache (an update
on one core alone took the MLP's 2-thread step from 240-250 to about 280 us).

``c`` holds the scalars, in the parameters' dtype, so a float32 model updates in float32
arithmetic (promoting to float64 would make the division and square root several
times slower); ``c[0]`` is 1 / samples, which turns the gradient sums into means on the fly.
The rules and their defaults follow the formulas that PyTorch's ``torch.optim`` documents;
RMSProp and Adam also take an eps inside the square root, for the article's form of the
rules.

Each rule is compiled in two forms from one text (:class:`OnThreads`): with ``prange``,
for the steps that run on several threads, and as plain loops, for those on one; a process
compiles the forms it runs. Neither takes floating-point freedoms (no ``fastmath``), so the
two give the same numbers bit for bit, on any thread count.
"""

import numpy as np
from numba import prange

from ..threads import before_more_threads, threads
from . import PARALLEL_MIN, _kernel_decorator, ahead, array_at, inline, plain_twin

#: The parallel compilation of an update: ``prange`` loops on every core, and no ``fastmath``
#: (with it, the parallel loop and the plain one rounded differently: the last bit of about
#: a third of the MLP's weights after one Adam update; without it, the same speed here:
#: 25.0 us an update of the MLP on one thread either way, 15.1 against 15.4 on two).
_parallel_update = _kernel_decorator(cache=True, error_model="numpy", nogil=True,
                                     parallel=True)

#: The columns of an optimizer's parameter table.
ADDRESS, START, SIZE = 0, 1, 2


class OnThreads:
    """An update rule compiled twice from one text: ``every_core`` runs its ``prange`` loops
    on Numba's threads, ``one_core`` runs them as plain loops (the same numbers, bit for
    bit: no fastmath in either, so the thread count never changes a result).

    A call runs the form for the thread count that the calling Python thread runs on now
    (``fastgraph.threads``): ``one_core`` on one thread, ``every_core`` on more. A process
    that never runs more than one (``FASTGRAPH_THREADS=1``, one core, an MPI rank with a
    core of its own) never compiles the parallel loop, and one whose thread chooser starts
    on one thread (auto, on several cores) makes it ready only before the chooser's first
    trial of more threads (:func:`compile_parallel_forms`), not in its first step: on an
    empty cache Adam's parallel loop is 1.3 s of CPU to compile, its plain loop about 0.5,
    and the compile worker compiles the parallel one meanwhile (``kernels.ahead``; the
    optimizer lists it with ``ahead.expect_later``)."""

    def __init__(self, function):
        self.__name__, self.__doc__ = function.__name__, function.__doc__
        self.__module__ = function.__module__
        self.every_core = _parallel_update(function)
        self.one_core = self.every_core.twin = plain_twin(function, self.every_core._options)
        _RULES.append(self)

    def __call__(self, *args):
        return self.chosen()(*args)

    def chosen(self):
        """The form a call makes now: the parallel loops where more than one thread runs
        them (a Python thread that set no count yet runs on Numba's, every core)."""
        count = threads.current
        if (threads.most if count is None else count) == 1:
            return self.one_core
        ahead.background_done(wait=True)  # (never two processes compiling one function)
        return self.every_core

    def __repr__(self):
        return f"<update kernels {self.__module__}.{self.__name__} (one core, every core)>"


#: Every update rule (:class:`OnThreads`), for :func:`compile_parallel_forms`.
_RULES = []


def compile_parallel_forms():
    """Compile, or load from the cache, the parallel form of every update rule for each
    argument type its plain form was called with (the steps on one thread so far): called
    by the thread chooser before it times the first step of a trial of more threads, so
    that compiling is no step's time (``fastgraph.threads.before_more_threads``). False,
    with nothing done, while the compile worker compiles them (``ahead.background_done``)."""
    if not ahead.background_done():
        return False
    for rule in _RULES:
        plain = rule.one_core.__dict__.get("dispatcher")  # (made if the rule ran)
        if plain is None:
            continue
        parallel = rule.every_core.dispatcher
        for argtypes in list(plain.overloads):
            if argtypes not in parallel.overloads:
                parallel.compile(argtypes)
    return True


before_more_threads.append(compile_parallel_forms)


@inline
def _weights(table, p, like):
    """Parameter ``p``'s weights: the 1-D array at its address."""
    return array_at(table[p, ADDRESS], table[p, SIZE], like)


@inline
def _written(w, size):
    """A use of the weights after the loops that write them. Numba's parallel pass drops a
    ``prange`` loop's writes to an array that is no argument's view and that nothing reads
    afterwards (as it does for a scratch array): the weights made from an address are such
    an array to it, and their update was lost without this."""
    if w.shape[0] != size:
        raise ValueError("optimizer update: a parameter changed size")


#: The smallest normal float32. A state of a rule (a velocity, a moving average) that decays
#: below it, on a step whose gradient is 0, is stored as zero: for the weights of inputs that
#: are zero for many steps (the border pixels of MNIST) Adam's first moment decays by 0.9 a
#: step into the subnormal numbers, on which this processor multiplies several times slower
#: (31% of the MLP's m after an epoch: its update took 88 us on one thread, 42 with those
#: states zeroed). Decayed that far, a state moves no weight (Adam's m / sqrt(v) shrinks by
#: 0.9 / 0.9995 a step: below 1e-30 by then). A state a nonzero gradient makes stays as it
#: is, however small (a gradient of 1e-19 makes v = 1e-41, and with a tiny eps the step
#: depends on it); NaN and infinity stay too.
TINY = np.float32(np.finfo(np.float32).tiny)
ZERO = np.float32(0.0)


@inline
def _decayed(x, g):
    """``x``, or zero when it is below TINY and the gradient ``g`` is 0.

    Both tests are made, joined by ``&`` rather than ``and``: a short-circuit ``and`` is a
    branch in the loop, which LLVM vectorised with masked loads of the state and a scatter
    to store it (AVX-512 here), and Adam's update ran at half speed: 47-51 against 24-29 us
    on the MLP's 80,730 numbers on two threads (Intel Xeon)."""
    return ZERO if (g == 0) & (abs(x) < TINY) else x  # (NaN < TINY is False: NaN kept)


@inline
def _gradient_descent(w, gradient, j, c):  # c = (1 / samples, learning rate)
    w[j] -= c[1] * c[0] * gradient[j]


@OnThreads
def gradient_descent(table, gradients, c):
    for p in range(table.shape[0]):
        start, size = table[p, START], table[p, SIZE]
        w, gradient = _weights(table, p, gradients), gradients[start:start + size]
        if size >= PARALLEL_MIN:
            for j in prange(size):
                _gradient_descent(w, gradient, j, c)
        else:
            for j in range(size):
                _gradient_descent(w, gradient, j, c)
        _written(w, size)


@inline
def _momentum(w, gradient, velocity, j, c):  # c = (1 / samples, learning rate, mu)
    v = _decayed(c[2] * velocity[j] + gradient[j] * c[0], gradient[j])
    velocity[j] = v
    w[j] -= c[1] * v


@OnThreads
def momentum(table, gradients, velocities, c):
    for p in range(table.shape[0]):
        start, size = table[p, START], table[p, SIZE]
        w, gradient = _weights(table, p, gradients), gradients[start:start + size]
        velocity = velocities[start:start + size]
        if size >= PARALLEL_MIN:
            for j in prange(size):
                _momentum(w, gradient, velocity, j, c)
        else:
            for j in range(size):
                _momentum(w, gradient, velocity, j, c)
        _written(w, size)


@inline
def _adagrad(w, gradient, square_sum, j, c):  # c = (1 / samples, learning rate, eps)
    g = gradient[j] * c[0]
    s = square_sum[j] + g * g
    square_sum[j] = s
    w[j] -= c[1] * g / (np.sqrt(s) + c[2])


@OnThreads
def adagrad(table, gradients, square_sums, c):
    for p in range(table.shape[0]):
        start, size = table[p, START], table[p, SIZE]
        w, gradient = _weights(table, p, gradients), gradients[start:start + size]
        square_sum = square_sums[start:start + size]
        if size >= PARALLEL_MIN:
            for j in prange(size):
                _adagrad(w, gradient, square_sum, j, c)
        else:
            for j in range(size):
                _adagrad(w, gradient, square_sum, j, c)
        _written(w, size)


@inline
def _rmsprop(w, gradient, square_avg, j, c):
    # c = (1 / samples, learning rate, beta, 1 - beta, eps, eps inside the square root):
    # torch's eps is added to sqrt(s) (c[5] = 0), the article's inside it (c[4] = 0)
    g = gradient[j] * c[0]
    s = _decayed(c[2] * square_avg[j] + c[3] * g * g, g)
    square_avg[j] = s
    w[j] -= c[1] * g / (np.sqrt(s + c[5]) + c[4])


@OnThreads
def rmsprop(table, gradients, square_avgs, c):
    for p in range(table.shape[0]):
        start, size = table[p, START], table[p, SIZE]
        w, gradient = _weights(table, p, gradients), gradients[start:start + size]
        square_avg = square_avgs[start:start + size]
        if size >= PARALLEL_MIN:
            for j in prange(size):
                _rmsprop(w, gradient, square_avg, j, c)
        else:
            for j in range(size):
                _rmsprop(w, gradient, square_avg, j, c)
        _written(w, size)


@inline
def _adam(w, gradient, m, v, j, c):
    # c = (1 / samples, step size = lr / (1 - beta_1^t), beta_1, 1 - beta_1, beta_2,
    #      1 - beta_2, 1 / sqrt(1 - beta_2^t), eps, eps inside the square root): torch's
    #      eps is added after the square root (c[8] = 0), the article's inside it (c[7] = 0)
    g = gradient[j] * c[0]
    mi = _decayed(c[2] * m[j] + c[3] * g, g)
    vi = _decayed(c[4] * v[j] + c[5] * g * g, g)
    m[j] = mi
    v[j] = vi
    w[j] -= c[1] * mi / (np.sqrt(vi + c[8]) * c[6] + c[7])


@OnThreads
def adam(table, gradients, ms, vs, c):
    """m and v as torch.optim.Adam; w -= step m / (sqrt(v) / sqrt(1 - beta_2^t) + eps)."""
    for p in range(table.shape[0]):
        start, size = table[p, START], table[p, SIZE]
        w, gradient = _weights(table, p, gradients), gradients[start:start + size]
        m, v = ms[start:start + size], vs[start:start + size]
        if size >= PARALLEL_MIN:
            for j in prange(size):
                _adam(w, gradient, m, v, j, c)
        else:
            for j in range(size):
                _adam(w, gradient, m, v, j, c)
        _written(w, size)
