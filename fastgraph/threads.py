"""How many threads a training step runs on: chosen by measuring, because cores are shared.

A step's GEMMs (MKL) and its memory-bound kernels (Numba's ``prange`` loops) can use every
core. On an idle machine two threads are faster (the 784-256-128-10 step in about 1.0 ms
against 1.5 on one core, here); when another process wants a core, a parallel region waits
at its end for a partner thread that the operating system has descheduled, and the same
step took 2-70 ms on average, with single steps of hundreds of milliseconds, while one
thread kept to 1.6 ms. Neither count is right on a shared machine, so by default
(``FASTGRAPH_THREADS=auto``) every optimizer times its own steps and keeps the count that is
faster now:

- it starts on one thread (never much slower than it should be), then tries every core
  for a few steps, and keeps the faster;
- it tries the other count again after 64 steps, then after twice as many each time the
  other count loses (up to 1,024: trials that lose by little cost little, and a count that
  lost while a core was slow for a while came back up to 4,096 steps late, 6 s of the
  784-256-128-10 network at one thread's 1.6x the time), and at once when steps on every
  core get much slower;
- a trial step twice as slow as the current count's ends the trial, and after a lost
  trial at least 20 times the time it lost passes before the next (a trial step on every
  core can take 50 times a one-thread step when another process holds a core: trials then
  cost a few percent, not a third of the time);
- a trial of fewer threads that wins is confirmed by the current count's next 8 steps
  (after one that wakes its threads, not judged): the switch is made only if they are
  still slower (one step twice the trial's time confirms it at once). A burst of slow
  steps on every core (3-12 ms where the 784-256-128-10 step takes 1 ms, for a few dozen
  steps) both starts a trial at once and inflates the median it is judged against; a
  one-thread trial then won in the burst and held for 64 steps, each about 1.6x the two
  threads' time after it. Where another process takes a core for longer, the
  confirmation costs two more slow steps;
- a trial's first step is not judged: it wakes the other threads, which may have slept
  since the last trial (1.5-63 ms for a first Jacobian on two threads under load, where
  the next calls took 0.6 ms), and a trial ended by it came back only ~900 calls later.
- what only more threads run is made ready just before a trial of them, outside its
  steps' time: the optimizer updates' parallel loops (``before_more_threads``), which the
  steps on one thread do not need. On an empty cache the first step compiles Adam's plain
  loop (about 0.5 s of CPU against 1.3 for the parallel one), and the compile worker
  compiles the parallel loop after its share of the first pass, while the steps run on
  one thread; trials wait for it.

Both counts compute the same numbers except where MKL splits a product itself in another
order than on one thread: along the inner dimension for a few shapes on AMD's processors
(e.g. 6x25 by 25x50176), and the input gradient of a layer of 1024 units on an Intel Xeon
(64x1024 by 1024x784; ``kernels.blas.gemm_owned`` splits a weight's own products into the
process's parts on any count; ``MKL_CBWR=AUTO,STRICT`` makes every product's bits
independent of the count, at a cost to small products). So a run that must repeat bit for
bit sets ``FASTGRAPH_THREADS`` to a number (the same number: a process fixed to one thread
makes those products whole, and may get other bits than one fixed to two): that many
threads, always (at most Numba's, ``NUMBA_NUM_THREADS``, the cores unless set: a larger
number is taken as that, with a warning). The counts are set per Python thread (Numba's
count is a thread's own, and MKL's is set with ``MKL_Set_Num_Threads_Local``): a graph
trained in each of two threads runs on the count its own optimizer chose, and a fixed count
holds in every thread that computes. Before MKL runs, fastgraph asks it to use GNU OpenMP,
the runtime of Numba's own threads, so the process has one pool of threads rather than two
spinning side by side (unless ``MKL_THREADING_LAYER`` is set). A child forked after the
parent computed runs on one thread (see ``_forked``).
"""

import ctypes
import functools
import inspect
import os
import sys
import threading
import warnings
import weakref
from time import perf_counter

import numba

_TRIAL_STEPS = 8  # steps a count is timed over: their median is its time
_FIRST_INTERVAL = 64  # steps before the other count is tried again (doubled when it loses)
_LONGEST_INTERVAL = 1024  # ... unless the lost time asks for longer (see _BUDGET)
_WIN = 0.95  # the other count is taken when its median is below this share of the current's
_WORSE = 1.5  # the current count's median this much above its last: the load changed, retry
_ABORT = 2.0  # a trial step this much slower than the current median ends the trial
_BUDGET = 20  # after a lost trial, at least this many times the time it lost runs untried


def _requested():
    text = os.environ.get("FASTGRAPH_THREADS", "auto").strip().lower() or "auto"
    if text == "auto":
        return None
    if not (text.isascii() and text.isdigit()) or int(text) < 1:  # "²" is a digit too
        raise ValueError(f"FASTGRAPH_THREADS={text!r}: give 'auto' or a positive number of "
                         "threads")
    return int(text)


class _Threads:
    """The thread count for kernels, MKL's and Numba's set together, per Python thread."""

    def __init__(self):
        self.fixed = _requested()
        self.most = min(self.fixed or len(os.sched_getaffinity(0)),
                        numba.config.NUMBA_NUM_THREADS)
        if self.fixed is not None and self.fixed > self.most:  # (1000 became 2, unsaid)
            warnings.warn(f"FASTGRAPH_THREADS={self.fixed}: Numba runs at most {self.most} "
                          f"threads here (NUMBA_NUM_THREADS); using {self.most}", stacklevel=2)
        self._local = threading.local()  # this Python thread's (limit number, count)
        self._limits = 0  # calls of limit(): a count set before the last is set again
        self._mkl = None
        self._parts = None  # a forked child's: its parent's most (see parts)

    @property
    def current(self):
        """The count the calling Python thread's kernels run on, or None before it sets one."""
        mine = getattr(self._local, "count", None)
        return mine[1] if mine is not None and mine[0] == self._limits else None

    def limit(self, most):
        """Use at most ``most`` threads (``fastgraph.distributed``: cores / ranks a node)."""
        self.most = max(1, min(int(most), numba.config.NUMBA_NUM_THREADS))
        self._limits += 1
        self._parts = None

    @property
    def parts(self):
        """The parts that a product split by a parameter's rows is made in by the kernels
        MKL generates for them (``kernels.blas.split_product``): ``most``, but in a child
        forked from a process that computed, its parent's. The child runs on one thread
        (``_forked``) and makes those parts one after the other: its numbers are its
        parent's. (The products ``gemm_owned`` makes in parts by MKL's count, one in the
        child, it makes whole there.)"""
        return self._parts or self.most

    @property
    def most(self):
        """The most threads this process's kernels run on; set, it is MKL's own count too
        (``share_most``)."""
        return self._most

    @most.setter
    def most(self, count):
        self._most = count
        self.share_most()

    def share_most(self):
        """Set MKL's own thread count, the process's, to ``most``: MKL runs the calls of a
        Python thread that set no count of its own on it, and ``kernels.blas.gemm_owned``
        splits a parameter's products into that many parts whatever count runs them (so
        that the count does not change their numbers)."""
        blas = sys.modules.get("fastgraph.kernels.blas")
        if blas is not None and blas.BACKEND == "mkl":
            ctypes.CDLL(blas.LIBRARY).MKL_Set_Num_Threads(ctypes.c_int(self.most))

    def use(self, count):
        """Run the kernels that the calling Python thread calls next on ``count`` threads
        (at most ``most``)."""
        count = min(count, self.most)
        if count == self.current:
            return
        if self._mkl is None:
            from .kernels import blas

            self._mkl = (ctypes.CDLL(blas.LIBRARY).MKL_Set_Num_Threads_Local
                         if blas.BACKEND == "mkl" else False)
        if self._mkl:
            self._mkl(ctypes.c_int(count))
        numba.set_num_threads(count)
        self._local.count = (self._limits, count)

    def here(self):
        """A fixed count (``FASTGRAPH_THREADS=N``, one core, a limit of one) also in a
        Python thread that has set none yet: Numba starts a new thread on every core. Called
        by a thread's outermost claim of a graph (``Graph.claim``: every feed, pass, step,
        update), so a thread that only feeds and computes, with no chooser, keeps it too."""
        if (self.fixed is not None or self.most == 1) and self.current is None:
            self.use(self.most)


threads = _Threads()


def _forked():
    """In a child just forked (``os.fork``, multiprocessing's default on Linux): when the
    parent ran fastgraph's kernels, GNU OpenMP, on which Numba's ``prange`` loops and MKL
    run, cannot serve the child (Numba stops a forked child at its first parallel region,
    and MKL waits forever for threads that fork did not copy). The child then runs on one
    thread, its ``prange`` kernels as plain loops and its graphs' passes recorded again on
    them (``engines.compiled.forked_child``), as PyTorch runs a forked child on one
    thread. A child of a parent that computed nothing yet is left as it is."""
    from . import kernels

    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if not (kernels.ran() or getattr(parallel, "_is_initialized", False)):
        return
    parts = threads.most
    threads.limit(1)
    threads._parts = parts
    from .engines import compiled

    compiled.forked_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


#: What runs before the first step of a trial of more than one thread is timed, each called
#: with no arguments: the optimizer updates' parallel forms, which the steps on one thread
#: did not need, are compiled or loaded there (``kernels.optimizers.compile_parallel_forms``),
#: so that the time it takes is no step's (a lost trial's cost sets how long the next waits).
#: One that returns False says they are still being compiled elsewhere (by the compile
#: worker, on an empty cache): the trial waits, on the current count, 8 steps at a time.
before_more_threads = []


class Chooser:
    """A choice of thread count, from the times of the steps it makes.

    An optimizer calls ``starting()`` as an accumulation's first ``one_step()`` begins and
    ``tick()`` at the end of every ``update()``: a step is the time between them, the
    article's one-sample ``one_step()`` calls and the feeding between them included (two
    clock reads a step). What the program does between an update and the next batch's first
    ``one_step()`` (feeding that batch, an evaluation, a checkpoint, another model's
    training) is no step's time: timed from one update to the next, an evaluation between
    epochs that fell in a trial of more threads ended it as far slower, and what it "lost"
    kept one thread for 20 times that. ``begin()`` and ``end(started)`` time a call
    instead (see :func:`chosen`).
    """

    def __init__(self, clock=perf_counter):
        self.clock = clock
        self.fixed = threads.fixed is not None or threads.most == 1
        self.counts = (threads.fixed or 1, threads.most)
        self.home = 0  # index into counts of the count in use between trials
        self.trying = 0  # the count being timed now
        self.medians = [None, None]
        self.times = []
        self.waking = None  # the time of a trial's first step, kept apart (see _decide)
        self.last = None  # the clock at the last tick
        self.rival = None  # (a trial's count that won, what its trial lost) until confirmed
        self.interval = _FIRST_INTERVAL // 2  # doubled by a losing first trial
        self.until_trial = 0  # steps until the other count is tried: the first at once
        self.ran = getattr(self, "ran", None) or {}  # steps ended on each count (kept)
        threads.use(self.counts[0])

    def tick(self):
        """A step ended: time it, count it in ``ran`` (by the count it ran on), and set the
        count of the next."""
        now = self.clock()
        ran = threads.current
        self.ran[ran] = self.ran.get(ran, 0) + 1
        if self.last is not None:
            self.record(now - self.last)
        self.last = now
        count = self.counts[self.trying]
        if self.waking is False and count > 1:  # a trial of more threads would begin
            if not all([prepare() for prepare in before_more_threads]):
                # What they run is still being compiled elsewhere: one thread meanwhile.
                self.trying, self.waking, self.until_trial = self.home, None, _TRIAL_STEPS
                count = self.counts[self.trying]
            self.last = self.clock()  # (what was compiled here is no step's time)
        threads.use(count)

    def starting(self):
        """An accumulation's first ``one_step()`` begins: its step is timed from here."""
        if self.last is not None and not self.fixed:
            self.last = self.clock()

    def begin(self):
        threads.use(self.counts[self.trying])
        return self.clock()

    def end(self, started):
        self.record(self.clock() - started)

    def record(self, seconds):
        """One step took ``seconds`` on the current count."""
        if self.fixed:
            return
        if threads.most != self.counts[1]:  # limit() was called: start over
            self.__init__(self.clock)
            return
        if self.waking is False:  # a trial's first step: counted as lost, not judged
            self.waking = seconds
            return
        self.times.append(seconds)
        home = self.medians[self.home]
        if self.trying != self.home and seconds > _ABORT * home:
            self._decide(seconds)  # far slower already: no need for the other steps
        elif self.rival is not None and seconds > _ABORT * self.medians[self.rival[0]]:
            self._decide(seconds)  # still far slower than the trial that beat it
        elif len(self.times) == _TRIAL_STEPS:
            self._decide(sorted(self.times)[_TRIAL_STEPS // 2])

    def _decide(self, median):
        steps, waking = len(self.times) + (self.waking is not None), self.waking or 0.0
        lost = sum(self.times) + waking - steps * (self.medians[self.home] or 0.0)
        self.times, self.waking = [], None
        if self.rival is not None:  # the current count again, after a trial that beat it
            (rival, lost), self.rival = self.rival, None
            self.medians[self.home] = median
            if self.medians[rival] < _WIN * median:
                self._switch(rival)
            else:  # it had beaten steps slowed by a passing burst: lost after all
                self._lost(lost)
            return
        if self.trying == self.home:
            last, self.medians[self.home] = self.medians[self.home], median
            self.until_trial -= _TRIAL_STEPS
            # Many threads slow down most when the load changes: check them at once then.
            slower = self.home == 1 and median > _WORSE * last
            if self.until_trial <= 0 or slower:
                self.trying, self.waking = 1 - self.home, False
            return
        self.medians[self.trying] = median
        if median < _WIN * self.medians[self.home]:
            if self.counts[self.trying] < self.counts[self.home]:
                # Fewer threads won: the current count's next steps confirm it first (the
                # first not judged: it wakes the threads that slept through the trial).
                self.rival, self.trying, self.waking = (self.trying, lost), self.home, False
                return
            self._switch(self.trying)
        else:
            self._lost(lost)

    def _switch(self, index):
        """Keep the count ``index`` from now on; the other is tried after 64 steps."""
        self.home = self.trying = index
        self.interval = self.until_trial = _FIRST_INTERVAL

    def _lost(self, lost):
        """A trial lost, costing ``lost`` seconds: wait longer before the next, and long
        enough that trials cost a few percent at most."""
        self.interval = max(min(2 * self.interval, _LONGEST_INTERVAL),
                            int(_BUDGET * lost / self.medians[self.home]))
        self.trying = self.home
        self.until_trial = self.interval

    @property
    def count(self):
        """The thread count the steps use now."""
        return min(self.counts[self.trying], threads.most)


def chosen(function):
    """``function`` run on the thread count that its own calls have measured faster, for
    entry points that run whole passes outside an optimizer, such as ``fastgraph.jacobian``.
    One :class:`Chooser` per node passed first (the result whose derivatives are taken):
    calls on one node time one workload, where the Jacobian of a LeNet-5 and that of an MLP
    in the same process would mix times 20x apart (and the MLP's then stayed on one
    thread, 1.5 ms against 0.7)."""
    choosers = weakref.WeakKeyDictionary()
    first = next(iter(inspect.signature(function).parameters))

    @functools.wraps(function)
    def run(*args, **kwargs):
        result = args[0] if args else kwargs.get(first)
        try:
            chooser = choosers.get(result)
            if chooser is None:
                chooser = choosers[result] = Chooser()
        except TypeError:  # not a node (no weak reference): the function itself says so
            chooser = Chooser()
        started = chooser.begin()
        try:
            return function(*args, **kwargs)
        finally:
            chooser.end(started)

    run.choosers = choosers
    return run
