"""Data-parallel training over MPI: several processes train one model with one result.

Every process (a *rank*) holds the whole model. Each global batch is split between the
ranks; each feeds its share and calls ``one_step()`` as usual; then ``update()`` sums the
gradient sums and the sample counts of every rank with one MPI all-reduce over one
contiguous buffer, so every rank applies the same update to the same parameters. The
result is the single-process result up to the order of float additions.

    optimizer = DataParallel(fg.optimizer.Adam(graph, loss))   # broadcasts rank 0's values
    trainer = DistributedTrainer(x, one_hot, predict, optimizer, batch_size=64, seed=0)

run as ``mpiexec -n 2 python program.py``, or ``launch(2, [sys.executable, "program.py"])``.
Needs ``pip install 'fastgraph[mpi]'`` (mpi4py and MPICH's wheel, which brings mpiexec).

Faults: an exception that reaches the top of a rank aborts every rank (``MPI_Abort``) with
the rank's message, a rank whose program ends (``sys.exit`` too) while others wait for it in
``DataParallel()``, ``update()`` or ``agree()`` meets them there at exit and aborts them,
and mpiexec ends the job when a rank dies of a signal, so a job never hangs waiting for a
rank that is gone. A Ctrl-C reaches every rank (mpiexec forwards it); the ranks agree on
stopping inside the all-reduce, so they all stop after the same step.

Agreement: the ranks must make the same collective calls with the same sizes, so whatever
decides them (the model and optimizer; the data, epochs and batch size of a ``train()``)
is compared with one small ``allgather`` before it is used: ``DataParallel()`` compares the
optimizers and models, ``DistributedTrainer.train`` its arguments and options. When the
ranks were given different values, every rank raises the same :class:`RanksDisagree`,
naming what and each rank's value, instead of one of them waiting forever in an
all-reduce. Each update's all-reduce also carries a fingerprint of every rank's optimizer
settings, so a setting changed on some ranks only is found at the next update, before it is
applied.
"""

import atexit
import contextlib
import ctypes
import numbers
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
import zlib
from pathlib import Path

import numpy as np

from .datasets import Batches
from .node import Variable
from .optimizer import Optimizer
from .trainer import SimpleTrainer

INSTALL_HINT = ("data-parallel training needs MPI: pip install 'fastgraph[mpi]' "
                "(mpi4py and the mpich wheel, which installs mpiexec)")

# What MPI launchers tell the processes they start (MPICH/Intel MPI, Open MPI).
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
_THREAD_VARIABLES = ("MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS")


class MPIUnavailable(RuntimeError):
    """mpi4py or mpiexec is missing (or cannot load its MPI library)."""


class RanksDisagree(ValueError):
    """The ranks of a data-parallel job were given different values of something they must
    share (epochs, data, batch size, model, optimizer and its settings, number of updates),
    or another rank could not start. Raised on every rank at once, so that none is left
    waiting."""


def agree(comm, where, items=(), failure=None, hint="", root_value=None):
    """Check with one ``allgather`` that every rank of ``comm`` holds the same values.

    ``where`` is a string; ``items`` are ``(name, value)`` pairs, names strings, in the same
    order on every rank (anything else is a TypeError, told to the other ranks first); the
    values (numbers, strings, tuples, arrays, ...: what pickles) are compared with ``==``,
    NaN being equal to NaN.
    ``failure`` is the exception this rank raised instead of computing them: the other
    ranks then raise too, naming it, and this rank returns so that it can raise its own
    error. When the ranks disagree, every rank raises
    the same :class:`RanksDisagree`: ``"<where>: the ranks disagree on <name>: rank 0 has
    <value>, rank 1 has <value>"``, then ``hint``. Returns rank 0's ``root_value``.

    Every rank must call it at the same point (it is a collective call): put one before a
    loop whose collective calls depend on values the ranks were given separately.
    """
    if failure is None:
        try:
            items = _items(where, items)
        except (TypeError, ValueError) as error:  # told to the other ranks, then raised
            agree(comm, where, failure=error)
            raise
    mine = ("failed", f"{type(failure).__name__}: {failure}") if failure is not None else \
        ("ok", [(name, _plain(value)) for name, value in items], root_value)
    gathered = comm.allgather(mine)
    failed = [(rank, entry[1]) for rank, entry in enumerate(gathered) if entry[0] == "failed"]
    if failed:
        if failure is not None:
            return None  # this rank raises its own error
        raise RanksDisagree(f"{where}: " + "; ".join(
            f"rank {rank} could not start ({error})" for rank, error in failed) +
            ", so no rank starts")
    lists = [entry[1] for entry in gathered]
    for position in range(max(map(len, lists))):
        values = [entries[position][1] if position < len(entries) else "nothing"
                  for entries in lists]
        if not all(_same(value, values[0]) for value in values[1:]):
            name = next(entries[position][0] for entries in lists if position < len(entries))
            raise RanksDisagree(f"{where}: the ranks disagree on {name}: {_who_has(values)}"
                                + (f"; {hint}" if hint else ""))
    return gathered[0][2]


def _items(where, items):
    """``agree()``'s ``items`` checked: ``(name, value)`` pairs (a TypeError naming what is
    wrong, not a failed unpacking), their names as strings."""
    where = str(where)
    expected = 'such as [("epochs", 3), ("batches", 100)]'
    if isinstance(items, (str, bytes, dict)) or not hasattr(items, "__iter__"):
        raise TypeError(f"{where}: agree's items must be (name, value) pairs, {expected}, got "
                        f"a {type(items).__name__}")
    items = list(items)
    for number, item in enumerate(items, 1):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(f"{where}: agree's items must be (name, value) pairs, {expected}; "
                            f"item {number} is {item!r:.60}")
    return [(str(name), value) for name, value in items]


def _same(a, b):
    """``a == b``, NaN being the same as NaN (every rank given NaN agrees), through tuples,
    lists and dicts (arrays arrive as lists)."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # values whose == is not one answer
        return False


def _plain(value):
    """``value`` without NumPy scalar types, so that it prints as it reads."""
    if isinstance(value, np.floating):
        return float(str(value))  # float32(0.01) as 0.01, not 0.009999999776482582
    if isinstance(value, (np.generic, np.ndarray)):
        return value.item() if isinstance(value, np.generic) else value.tolist()
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(item) for item in value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _who_has(values):
    """``"rank 0 has 2, rank 1 has 3"``; ranks with one value together (``"ranks 0-2,4
    have 2"``); values that print alike but differ (``3`` and ``'3'``) by their repr."""
    groups = []  # [value, ranks]
    for rank, value in enumerate(values):
        for group in groups:
            if _same(group[0], value):
                group[1].append(rank)
                break
        else:
            groups.append([value, [rank]])
    shown = [str(value) for value, _ in groups]
    if len(set(shown)) < len(shown):
        shown = [repr(value) for value, _ in groups]
    parts = []
    for text, (_, ranks) in zip(shown, groups):
        if len(ranks) == 1:
            parts.append(f"rank {ranks[0]} has {text}")
            continue
        spans, start = [], ranks[0]
        for before, rank in zip(ranks, [*ranks[1:], None]):
            if rank != before + 1:
                spans.append(str(start) if start == before else f"{start}-{before}")
                start = rank
        parts.append(f"ranks {','.join(spans)} have {text}")
    return ", ".join(parts)


def launched_size():
    """How many processes the MPI launcher that started this one started (1 without one)."""
    for name in _SIZE_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def _mpi():
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as error:
        raise MPIUnavailable(f"{INSTALL_HINT} ({error})") from error
    return MPI


def communicator():
    """``MPI.COMM_WORLD``, with an uncaught exception set to abort every rank."""
    comm = _mpi().COMM_WORLD
    _abort_on_uncaught_exception(comm)
    return comm


def abort(comm, message, status=1):
    """Print ``message`` for this rank, then end every rank of ``comm`` (MPI_Abort)."""
    print(f"fastgraph: rank {comm.Get_rank()} of {comm.Get_size()} failed: {message}; "
          "stopping every rank", file=sys.stderr, flush=True)
    sys.stdout.flush()
    # mpiexec relays each rank's output asynchronously; an abort at once could take the
    # message down with the job (seen in about one run in ten). A moment lets it through.
    time.sleep(0.25)
    comm.Abort(status)


def _abort_on_uncaught_exception(comm):
    # Without this a rank that raises would wait in MPI_Finalize at exit while the others
    # wait for it in the next all-reduce: the job would hang.
    aborts = getattr(sys.excepthook, "aborts", None)
    if aborts is comm:
        return
    previous = sys.excepthook.previous if aborts == "launcher" else sys.excepthook

    def hook(kind, error, trace):
        previous(kind, error, trace)
        abort(comm, f"{kind.__name__}: {error}")

    hook.aborts = comm
    sys.excepthook = hook


@contextlib.contextmanager
def abort_on_error(comm, expected=()):
    """Abort every rank when the block raises: ``expected`` errors by their message alone,
    others with their traceback; a Ctrl-C outside training stops every rank too."""
    try:
        yield
    except expected as error:
        abort(comm, str(error), 2)
    except KeyboardInterrupt:
        abort(comm, "interrupted", 130)
    except Exception as error:
        traceback.print_exc()
        abort(comm, f"{type(error).__name__}: {error}")


def _check_comm(comm, where):
    """``comm`` if it is an MPI communicator (of mpi4py), else a TypeError naming ``where``."""
    if not all(callable(getattr(comm, name, None)) for name in ("Get_rank", "Get_size")):
        raise TypeError(f"{where}: comm must be an MPI communicator (mpi4py's MPI.COMM_WORLD, "
                        f"or distributed.communicator()), got {type(comm).__name__} "
                        f"{comm!r:.60}")
    if type(comm).__module__.startswith("mpi4py") and comm == _mpi().COMM_NULL:
        raise ValueError(f"{where}: comm is MPI.COMM_NULL, which has no ranks")
    return comm


def _check_program(program, where, empty=False):
    """``program`` as a list of strings: an argv such as ``[sys.executable, "train.py"]``
    (a list or tuple of strings or paths; empty only with ``empty``), else a TypeError or
    ValueError naming ``where``. A string would be split into characters, one per word."""
    expected = (f"{where}: program must be a{'' if empty else ' non-empty'} list of strings "
                '(an argv, such as [sys.executable, "train.py"])')
    if not isinstance(program, (list, tuple)):
        raise TypeError(f"{expected}, got {type(program).__name__} {program!r:.60}")
    for number, word in enumerate(program, 1):
        if not isinstance(word, (str, os.PathLike)):
            raise TypeError(f"{expected}; word {number} is {type(word).__name__} {word!r:.60}")
    if not program and not empty:
        raise ValueError(f"{expected}, got an empty {type(program).__name__}")
    return [os.fspath(word) for word in program]


def _check_processes(processes, where):
    if isinstance(processes, bool) or not isinstance(processes, numbers.Integral) \
            or processes < 1:
        raise ValueError(f"{where}: processes must be a positive integer, got {processes!r}")
    return int(processes)


def share_cores(comm):
    """Give each rank its share of this machine's cores for BLAS and Numba threads.

    Two ranks on two cores with two threads each would fight over the cores. A thread count
    the user set in the environment is left alone.
    """
    _check_comm(comm, "share_cores")
    if any(os.environ.get(name) for name in _THREAD_VARIABLES):
        return None
    local = comm.Split_type(_mpi().COMM_TYPE_SHARED)
    threads = max(1, len(os.sched_getaffinity(0)) // local.Get_size())
    local.Free()
    from .threads import threads as kernel_threads

    kernel_threads.limit(threads)
    kernel_threads.use(threads)
    return threads


def gradient_buffer(optimizer):
    """The optimizer's gradient sums, contiguous, with two spare elements at the end."""
    return optimizer.gradient_buffer


class DataParallel:
    """``optimizer`` trained by every rank of ``comm`` (default ``MPI.COMM_WORLD``) together.

    ``optimizer`` is one of ``fastgraph.optimizer``'s, wrapped once: anything else, a
    ``DataParallel`` included (it would all-reduce each update twice), is a TypeError.

    ``one_step()`` is the wrapped optimizer's, on this rank's share of the batch; a rank
    with no share calls only ``update()``. ``update()`` adds up every rank's gradient sums
    and sample counts (one in-place all-reduce of one buffer) and applies the wrapped
    rule to the total, the same on every rank. At construction rank 0's parameter values
    are broadcast, so every rank starts from them.

    ``request_stop()`` asks every rank to stop: after the next ``update()``, ``stopping``
    is true on all of them.

    Every rank must wrap the same optimizer of the same model: the constructor compares
    (one ``allgather``) the optimizer's kind, settings (learning rate, betas, ...) and step
    count, the dtype and the number and shapes of the parameters, and the model (each node
    of the loss's tape: its kind, options, parents and shape), and when they differ every
    rank raises :class:`RanksDisagree` naming the first difference and each rank's value.
    Before that the ranks meet (one all-reduce of one number): a rank whose program ended
    instead (``sys.exit`` too) meets it at exit, and every rank stops. Every ``update()``
    compares the settings and step count again, at no extra call (a fingerprint in its
    all-reduce): changed on some ranks only, they make every rank raise
    :class:`RanksDisagree` naming the setting, and that update is not applied.

    Every rank must call ``update()`` the same number of times: each is one all-reduce, so
    a rank that calls it once more than the others waits for them. ``DistributedTrainer``
    sees to that (it compares its epochs, data and batch size before training); in a loop of
    your own, compare whatever decides the number of updates before it, with one call of
    ``optimizer.agree("my loop", [("epochs", epochs), ("batches", len(batches))])``. Checked
    at no cost per step: a rank whose program ends, or that calls ``agree()`` (a new
    ``train()``), while another still calls ``update()`` meets that update with an
    all-reduce of the same shape (on a duplicate of ``comm`` for each shape of update), so
    both raise :class:`RanksDisagree` (the rank that ended aborts the job) instead of
    waiting. The ranks' batch sizes need not agree: the update
    divides by all ranks' samples together, and a rank may feed none.
    """

    def __init__(self, optimizer, comm=None):
        self.optimizer = optimizer
        self.comm = communicator() if comm is None else _check_comm(comm, "DataParallel")
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        # First, meet the others (one number): a rank whose program has ended meets this
        # call at exit (see _ExitCheck), where the others would wait in the comparison.
        _, ended, wrapping = _meet(self.comm, np.zeros(1), _AGREEING)
        if wrapping < self.size:
            raise RanksDisagree(f"DataParallel: {_elsewhere(self.size, ended=ended)} while "
                                f"rank {self.rank} called DataParallel(); {_SAME_WRAPPING}")
        try:
            _check_optimizer(optimizer)
            self._params = optimizer.params
            settings = _optimizer_settings(optimizer, self.rank)
        except Exception as error:  # tell the other ranks before raising, or they would wait
            agree(self.comm, "DataParallel", failure=error)
            raise
        agree(self.comm, "DataParallel", settings,
              hint="every rank must build the same model and wrap the same optimizer")
        self._mpi = _mpi()
        self._count = sum(param.flat.size for param in optimizer.params)
        # Broadcast: every parameter the target reads, a frozen one too (trainable=False
        # set on it: the optimizer leaves it out, and each rank kept its own values).
        self._held = _parameters_read(optimizer)
        self._ends = np.cumsum([param.flat.size for param in self._held]).tolist()
        # For broadcasting parameters; the update all-reduces the optimizer's own buffer:
        # [gradient sums of every parameter..., samples, the settings' fingerprint (see
        # _fingerprint), what the rank does (see _meet)]
        self._buffer = np.empty(self._ends[-1], optimizer.graph.dtype)
        self._watched = _setting_names(optimizer)
        self._stop_requested = False
        self.stopping = False
        self._updates = 0
        self.broadcast_parameters()
        # A program that ends from now on meets the next DataParallel() on this communicator
        # at exit, and the updates' meetings, on a communicator of this shape's (see
        # _ExitCheck). (Made once the ranks agreed: a refused one raised on every rank.)
        _ExitCheck.of(self.comm)
        self._exit = _ExitCheck.of(self.comm, self._count + _EXTRA, optimizer.graph.dtype)

    def __getattr__(self, name):  # params, target, graph, steps, get_gradient, ...
        return getattr(self.optimizer, name)

    @property
    def learning_rate(self):
        return self.optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.optimizer.learning_rate = value

    @property
    def samples(self):
        """The samples this rank has fed since the last update."""
        return self.optimizer.samples

    def _pieces(self):
        starts = [0, *self._ends[:-1]]
        return [self._buffer[a:b] for a, b in zip(starts, self._ends)]

    def broadcast_parameters(self, root=0):
        """Give every rank the parameter values of ``root`` (one broadcast)."""
        if isinstance(root, bool) or not isinstance(root, numbers.Integral) \
                or not 0 <= root < self.size:
            raise ValueError(f"broadcast_parameters: root must be a rank in [0, {self.size}), "
                             f"got {root!r}")
        values = self._buffer
        if self.rank == root:
            np.concatenate([param.flat.ravel() for param in self._held], out=values)
        self.comm.Bcast(values, root=root)
        for param, piece in zip(self._held, self._pieces()):
            param.set_value(piece.reshape(param.dim))

    def one_step(self):
        self.optimizer.one_step()

    def agree(self, where, items=(), failure=None, hint="", root_value=None):
        """``agree(comm, ...)`` on this optimizer's communicator, after one all-reduce of the
        update's shape: a rank that is still calling ``update()`` (it has more batches or
        epochs), or whose program has ended, meets it there, and both ranks raise
        :class:`RanksDisagree` instead of waiting for each other. ``DistributedTrainer``
        calls it before the first step of every ``train()``; call it before a loop of your
        own. One all-reduce of the model's size and one small ``allgather``."""
        buffer = np.zeros(self._count + _EXTRA, self.optimizer.graph.dtype)
        _, ended, agreeing = _meet(self._exit.comm, buffer, _AGREEING)
        if agreeing < self.size:
            if failure is not None:
                return None  # this rank raises its own error
            updating = self.size - ended - agreeing
            raise RanksDisagree(f"{where}: {_elsewhere(self.size, updating, ended)} while rank "
                                f"{self.rank} called it; {_SAME_UPDATES}")
        return agree(self.comm, where, items, failure, hint, root_value)

    def request_stop(self, stop=True):
        self._stop_requested = bool(stop)
        if not stop:
            self.stopping = False

    def update(self):
        """Sum every rank's gradients and samples, then apply the rule to the total."""
        if self.optimizer.params != self._params:
            raise RuntimeError(
                "the optimizer's parameters changed after DataParallel wrapped it (a node was "
                "re-wired, or a parameter frozen or thawed with trainable=): wrap it once the "
                "graph is final, so that every rank starts from rank 0's values of all of "
                "them and all-reduces gradients of the same parameters")
        local = self.optimizer.samples
        buffer, count = gradient_buffer(self.optimizer), self._count
        if not local:  # the optimizer's sums are stale: this rank adds nothing
            buffer[:count] = 0
        buffer[count] = local
        buffer[count + 1:count + 5] = _fingerprint(self.optimizer, self._watched)
        self._updates += 1
        self._exit.updates += 1
        stops, ended, agreeing = _meet(self._exit.comm, buffer, _STOP, self._stop_requested)
        if ended or agreeing:  # the other ranks are elsewhere: this sum means nothing
            raise RanksDisagree(
                f"DataParallel.update: {_elsewhere(self.size, 0, ended, agreeing)} while rank "
                f"{self.rank} called update() for the {_nth(self._updates)} time; "
                f"{_SAME_UPDATES}")
        if not _alike(buffer[count + 1:count + 5], self.size):  # the same verdict on each
            agree(self.comm, "DataParallel.update", _rule_settings(self.optimizer),
                  hint=_SAME_SETTINGS)  # names the setting and raises, on every rank
            raise RanksDisagree(f"DataParallel.update: the ranks' optimizer settings differ; "
                                f"{_SAME_SETTINGS}")
        samples = int(round(float(buffer[count])))
        self.stopping = stops > 0
        if samples == 0:
            raise RuntimeError("update() needs a gradient: no rank called one_step() since "
                               "the last update")
        self.optimizer.samples = samples
        self.optimizer.update()


def _check_optimizer(optimizer):
    """A ``fastgraph.optimizer`` rule, not wrapped yet: a ``DataParallel`` of a
    ``DataParallel`` would all-reduce every update twice (and cannot set the samples)."""
    if isinstance(optimizer, DataParallel):
        raise TypeError("DataParallel: the optimizer is a DataParallel already: wrap the "
                        "optimizer once (DataParallel(fg.optimizer.Adam(graph, loss)))")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"DataParallel: expected an optimizer of fastgraph.optimizer (such as "
                        f"fg.optimizer.Adam(graph, loss)), got {type(optimizer).__name__}")


def _optimizer_settings(optimizer, rank=0):
    """What the ranks' optimizers must agree on, as ``(name, value)`` pairs: the rule, the
    parameters, the model (``_tape_items``), then the rule's settings."""
    params = optimizer.params
    frozen = tuple(param.name for param in _parameters_read(optimizer) if not param.trainable)
    settings = [("the optimizer", type(optimizer).__name__),
                ("the parameters' dtype", np.dtype(optimizer.graph.dtype).name),
                ("the frozen parameters", frozen),  # (before their count, which they change)
                ("the number of parameters", len(params))]
    settings += [(f"the shape of parameter {number} ({param.name})",
                  tuple(int(size) for size in param.dim))
                 for number, param in enumerate(params, 1)]
    return settings + _tape_items(optimizer, rank) + _rule_settings(optimizer)


def _tape_items(optimizer, rank=0):
    """The model the optimizer trains, one ``(name, value)`` pair a node of its target's
    tape: ``("node 7 of loss's tape (ReLU:6 on rank 0)", "ReLU(#6) 16x1")``, the value the
    node's kind, its parents by their position on the tape, its options (``config()``) and
    its shape. Positions, not names or ids: a rank that numbered its nodes differently
    (another node built first) or hashes differently (``PYTHONHASHSEED``) builds the same
    values for the same model, since the tape follows the parents in their order."""
    target = optimizer.target
    nodes = optimizer.graph.tape(target).nodes
    position = {node: number for number, node in enumerate(nodes, 1)}
    items = []
    for number, node in enumerate(nodes, 1):
        options = [f"#{position[parent]}" for parent in node.parents]
        options += [f"{key}={_compact(value)}" for key, value in node.config().items()
                    if key != "dim"]  # the shape follows
        shape = "x".join(str(int(size)) for size in node.dim)
        items.append((f"node {number} of {target.name}'s tape ({node.name} on rank {rank})",
                      f"{type(node).__name__}({' '.join(options)}) {shape}"))
    return items


def _compact(value):
    """``value`` as one word: ``[2,8]``, ``0.01``, ``'same'``, ``True``."""
    return repr(_plain(value)).replace(", ", ",").replace(": ", ":")


def _parameters_read(optimizer):
    """Every parameter the optimizer's target reads: its own, and those frozen."""
    return tuple(node for node in optimizer.graph.tape(optimizer.target).nodes
                 if isinstance(node, Variable) and not node.is_input)


def _setting_names(optimizer):
    """The learning rate, the rule's settings (momentum, beta_1, eps, conventions, ...) and
    its step count (Adam's bias correction uses it); not the engine, which changes no
    update."""
    return ["learning_rate", *sorted((*type(optimizer).settings, "steps"))]


def _rule_settings(optimizer):
    return [(f"the optimizer's {name}", getattr(optimizer, name))
            for name in _setting_names(optimizer)]


def _fingerprint(optimizer, names):
    """Two 8-bit pieces of a CRC-32 of the settings ``names`` and their squares: summed
    over the ranks (exact in float32 up to 258 ranks), they tell every rank alike whether
    all had the same pieces (see ``_alike``)."""
    values = [getattr(optimizer, name) for name in names]
    text = repr([value.item() if isinstance(value, np.generic) else value  # one text for
                 for value in values]).encode()  # every NumPy version's repr of its scalars
    crc = zlib.crc32(text)
    low, high = crc & 0xFF, (crc >> 8) & 0xFF
    return low, low * low, high, high * high


def _alike(sums, size):
    """Whether ``size`` ranks' pieces, summed with their squares, were all equal: n sum(p^2)
    equals sum(p)^2 only then (Cauchy-Schwarz), and every rank reads the same sums."""
    low, low_squares, high, high_squares = (round(float(value)) for value in sums)
    return size * low_squares == low * low and size * high_squares == high * high


_SAME_SETTINGS = ("a setting changed on some ranks only; change the optimizer's settings "
                  "on every rank alike (they are compared at every update, and this update "
                  "was not applied)")


# The update's buffer: [gradient sums..., samples, the settings' fingerprint (4), what].
_EXTRA = 6

# What a rank is doing when it joins a *meeting*: an all-reduce whose last element says it,
# as a count in a digit of its own, so that the sum counts the ranks doing each and a rank
# that meets another kind of call learns it. update() meets on its updates' communicator,
# DataParallel.agree there too, DataParallel() on its communicator (one number), and
# _ExitCheck on each of those when the program ends. Each digit's unit is more than twice
# what all the digits below it can add up to, so the digits are read by rounding from the
# top: exact while the sums are (160 ranks in float32); past that only the count of stop
# requests blurs, which matters in an update alone, where it is exact. Meetings are
# non-blocking all-reduces (MPI matches a non-blocking collective call only with another).
_STOP, _ENDED, _AGREEING = 0, 1, 2
_SAME_UPDATES = ("every rank must call update() the same number of times (the same number "
                 "of batches, epochs and train() calls on every rank)")
_SAME_WRAPPING = ("every rank must wrap its optimizer in DataParallel() at the same point; "
                  "a rank that cannot go on must raise (which stops every rank), not end")


def _units(size):
    return 1, 2 * (size + 1), 4 * (size + 1) ** 2


def _post(comm, buffer, digit, count=1):
    """Start a meeting: all-reduce ``buffer`` (``[gradient sums..., samples, what]``, in
    place) with ``count`` ranks in ``digit`` of its last element from this one."""
    MPI = _mpi()
    buffer[-1] = count * _units(comm.Get_size())[digit]
    return comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)


def _counts(buffer, size):
    """The number of ranks that asked to stop (in an update), whose program ended and that
    are agreeing, read from the last element of a meeting's buffer."""
    stop, ended, agreeing = _units(size)
    rest = float(buffer[-1])
    counts = []
    for unit in (agreeing, ended, stop):
        counts.append(max(0, round(rest / unit)))
        rest -= counts[-1] * unit
    return tuple(reversed(counts))


def _meet(comm, buffer, digit, count=1):
    """A meeting (see ``_post``), waited for; returns ``_counts``."""
    _post(comm, buffer, digit, count).Wait()
    return _counts(buffer, comm.Get_size())


def _elsewhere(size, updating=0, ended=0, agreeing=0, wrapping=0):
    """``"1 of the 2 ranks ended their program"``: what the other ranks were doing."""
    doing = [(updating, "called update()"), (ended, "ended their program"),
             (agreeing, "called train() or agree()"), (wrapping, "called DataParallel()")]
    return " and ".join(f"{count} of the {size} ranks {what}" for count, what in doing if count)


def _nth(number):
    if number % 100 in (11, 12, 13):
        return f"{number}th"
    return f"{number}{({1: 'st', 2: 'nd', 3: 'rd'}).get(number % 10, 'th')}"


class _ExitCheck:
    """At exit, one last meeting wherever another rank could be waiting for this one: on
    every communicator of a ``DataParallel()`` (and on ``MPI.COMM_WORLD`` under a launcher,
    before any), whose constructor meets there first, and on each communicator of updates,
    one per communicator and shape of update (a duplicate: meetings of two shapes on one
    communicator would not match), where ``update()`` and ``agree()`` meet. A rank whose
    program ends (returning, or ``sys.exit`` with any status) while another waits in one of
    those calls meets it there, so both learn it (the waiting rank raises, this one aborts
    the job) instead of the other waiting forever. It cannot know where the others wait, so
    it joins every meeting at once; when every rank ends, they all meet everywhere and the
    check passes, whatever their exit status."""

    _all = []  # in the order of registration, the same on every rank

    def __init__(self, parent, shape=None):
        # parent: the communicator given to DataParallel (None: MPI.COMM_WORLD, which this
        # process may not have started yet); shape: None for DataParallel()'s meetings on
        # it, else (length, dtype) of the updates, which meet on a duplicate of it.
        self.parent, self.shape, self.updates = parent, shape, 0
        self.comm = None if parent is None or shape is None else parent.Dup()
        if not self._all:
            atexit.register(self.run_all)
        self._all.append(self)

    @classmethod
    def of(cls, comm, length=None, dtype=None):
        """The check of ``DataParallel()`` on ``comm`` or, given the update's length and
        dtype, of the updates of that shape on ``comm`` (the first time, every rank makes
        it at once: a collective call on ``comm``)."""
        shape = None if length is None else (int(length), np.dtype(dtype).name)
        for check in cls._all:
            if check.shape == shape and check.communicator(parent=True) == comm:
                return check
        return cls(comm, shape)

    def communicator(self, parent=False):
        """Where this check meets (or, with ``parent``, the communicator it checks)."""
        if self.parent is None:
            return _mpi().COMM_WORLD
        return self.parent if parent or self.shape is None else self.comm

    @classmethod
    def run_all(cls):
        try:
            MPI = _mpi()  # under a launcher, this may start MPI: the others may wait for it
        except MPIUnavailable:
            return
        if MPI.Is_finalized():
            return
        meetings = []
        for check in cls._all:
            comm = check.communicator()
            if comm == MPI.COMM_NULL:  # freed by the program
                continue
            buffer = np.zeros(check.shape[0] if check.shape else 1,
                              check.shape[1] if check.shape else np.float64)
            meetings.append((check, buffer, _post(comm, buffer, _ENDED)))
        requests = [request for _, _, request in meetings]
        for _ in meetings:
            check, buffer, _ = meetings[MPI.Request.Waitany(requests)]
            comm = check.communicator(parent=True)  # the program's, unless it freed it
            comm = check.communicator() if comm == MPI.COMM_NULL else comm
            failure = check.failure(buffer, comm.Get_size(), comm.Get_rank())
            if failure:
                abort(comm, failure)
                return

    def failure(self, buffer, size, rank):
        """Why the job must end, from this check's meeting at exit (``buffer``); None when
        every rank ended its program."""
        _, ended, agreeing = _counts(buffer, size)
        if ended == size:
            return None
        if self.shape is None:
            return (f"RanksDisagree: DataParallel: the program of rank {rank} ended while "
                    f"{_elsewhere(size, wrapping=size - ended)}; {_SAME_WRAPPING}")
        elsewhere = _elsewhere(size, size - ended - agreeing, 0, agreeing)
        return (f"RanksDisagree: DataParallel: the program of rank {rank} ended after "
                f"{self.updates} update() calls while {elsewhere}; {_SAME_UPDATES}")


class ShardedBatches(Batches):
    """``Batches`` split between ranks: of each global batch of ``b`` rows (the same rows on
    every rank, shuffled from the same seed), rank ``r`` of ``n`` takes rows
    ``[r * b // n, (r + 1) * b // n)``. The shares are disjoint and cover every epoch once;
    a share may be empty (``(0, features)`` arrays) when ``b < n``."""

    def __init__(self, features, labels, batch_size, rank, size, **options):
        super().__init__(features, labels, batch_size, **options)
        size = _check_processes(size, "ShardedBatches: size")
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) \
                or not 0 <= rank < size:
            raise ValueError(f"ShardedBatches: rank must be an integer in [0, {size}), got "
                             f"{rank!r}")
        rank = int(rank)
        self.rank, self.size = rank, size

    def _batches(self, order):
        for rows in super()._batches(order):
            yield rows[self.rank * len(rows) // self.size : (self.rank + 1) * len(rows) //
                       self.size]


class DistributedTrainer(SimpleTrainer):
    """``SimpleTrainer`` for a ``DataParallel`` optimizer: every rank trains on its share of
    each batch; rank 0 alone logs, shows progress and evaluates on the test set; the epoch's
    loss, accuracy and samples are those of all ranks together.

    Every rank must call ``train()`` with the same training data (the whole set: each rank
    takes its share of every batch), ``epochs`` and options (``batch_size``, ``seed``,
    ``scale``, ``lr_decay``, learning rate). Before the first step the ranks compare them
    with ``DataParallel.agree`` (the data by the number of samples, their dtype and checksums
    of the labels and of 256 samples spread over the features): when they differ, or one rank
    could not start (its arguments were refused), every rank raises :class:`RanksDisagree`
    naming the option and each rank's value. With ``seed=None`` the ranks shuffle from one
    seed that rank 0 draws, so that their shares stay disjoint.
    """

    #: How many samples spread over the training features the ranks compare.
    COMPARED_SAMPLES = 256

    def __init__(self, x, labels, predict, optimizer, **options):
        if not isinstance(optimizer, DataParallel):
            raise TypeError(f"DistributedTrainer needs a DataParallel optimizer, got "
                            f"{type(optimizer).__name__}")
        self.rank, self.size = optimizer.rank, optimizer.size
        if self.rank != 0:
            options.update(progress=False, log=lambda line: None)
        super().__init__(x, labels, predict, optimizer, **options)
        self._agreed = True  # nothing to compare until train() is called

    # A Ctrl-C sets ``interrupted`` on the rank that gets it; the ranks must stop after the
    # same step (else one would wait forever in the next all-reduce), so the trainer reads
    # what the all-reduce agreed.
    @property
    def interrupted(self):
        return self.optimizer.stopping

    @interrupted.setter
    def interrupted(self, value):
        self.optimizer.request_stop(value)

    def batches(self, features, labels):
        return ShardedBatches(features, labels, self.batch_size, self.rank, self.size,
                              classes=self.labels.dimension(), scale=self.scale,
                              dtype=self.x.graph.dtype, seed=self.seed)

    def train(self, features, labels, test_features=None, test_labels=None, epochs=1):
        if self.rank != 0:
            test_features = test_labels = None
        # The ranks compare what they were given at the first epoch, once everything has
        # been checked; a rank that fails before then tells the others (they would wait).
        self._agreed = False
        try:
            return super().train(features, labels, test_features, test_labels, epochs)
        except Exception as error:
            if not self._agreed:
                self._agreed = True
                self.optimizer.agree("DistributedTrainer.train", failure=error)
            raise

    def _agree(self, batches, epochs):
        """Before the first step of a ``train()`` (``DataParallel.agree``: an all-reduce of
        the update's shape, then one small ``allgather``): every rank must make the same
        number of updates (epochs times batches) and train on the same data."""
        features, labels = batches.features, batches.labels
        spread = np.linspace(0, len(labels) - 1, min(len(labels), self.COMPARED_SAMPLES))
        sample = np.ascontiguousarray(features[spread.round().astype(np.int64)])
        items = [("epochs", epochs),
                 ("the number of training samples", len(labels)),
                 ("batch_size", self.batch_size),
                 ("seed", self.seed),
                 ("scale", self.scale),
                 ("lr_decay", self.lr_decay),
                 ("learning_rate", self.optimizer.learning_rate),
                 ("the training features' dtype", features.dtype.name),
                 ("the training labels (CRC-32)", f"{zlib.crc32(labels):08x}"),
                 (f"the training features (CRC-32 of {len(sample)} samples spread over them)",
                  f"{zlib.crc32(sample):08x}")]
        drawn = np.random.SeedSequence().entropy if self.seed is None else None
        self._agreed = True  # from here on, an error is the same on every rank
        seed = self.optimizer.agree(
            "DistributedTrainer.train", items, root_value=drawn,
            hint="every rank must call train() with the same training data (all of it: each "
            "rank takes its share of every batch), epochs and options")
        if self.seed is None:  # rank 0's: the ranks must shuffle alike
            batches.rng = np.random.default_rng(seed)

    def _epoch(self, batches, epoch, epochs):
        if not self._agreed:
            self._agree(batches, epochs)
        record = super()._epoch(batches, epoch, epochs)
        totals = np.array([record["loss"] * record["samples"],
                           record["train_accuracy"] * record["samples"], record["samples"]])
        self.optimizer.comm.Allreduce(self.optimizer._mpi.IN_PLACE, totals)
        # Rank 0's clock: the others start an epoch while rank 0 still evaluates the last.
        seconds = self.optimizer.comm.bcast(record["seconds"], root=0)
        samples = int(round(totals[2]))
        record.update(loss=totals[0] / max(samples, 1), train_accuracy=totals[1] / max(samples, 1),
                      samples=samples, seconds=seconds, samples_per_second=samples / seconds)
        return record


# -- starting the processes ----------------------------------------------------------------
def find_mpiexec():
    """The mpiexec beside this Python (a venv's bin), else the first on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.is_file() else shutil.which("mpiexec")
    if found is None:
        raise MPIUnavailable(f"{INSTALL_HINT}: no mpiexec found beside {sys.executable} or on "
                             "PATH")
    return found


def mpiexec_command(processes, program):
    """``(argv, env)`` that run ``program`` (an argv: a list of strings, such as
    ``[sys.executable, "train.py"]``) in ``processes`` MPI processes; with an empty
    ``program``, mpiexec's part of the command, to add one to."""
    processes = _check_processes(processes, "mpiexec_command")
    program = _check_program(program, "mpiexec_command", empty=True)
    _mpi_importable()
    mpiexec = find_mpiexec()
    env = dict(os.environ)
    options = []
    version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    if "Open MPI" in version or "prterun" in version or "PRRTE" in version:
        # Open MPI refuses root (containers, CI) and more processes than cores unless told.
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        options.append("--oversubscribe")
    return [mpiexec, "-n", str(int(processes)), *options, *program], env


def _mpi_importable():
    # In a fresh process: importing mpi4py.MPI here would make this launcher an MPI
    # process itself.
    check = subprocess.run([sys.executable, "-c", "import mpi4py.MPI"], capture_output=True,
                           text=True, timeout=60)
    if check.returncode != 0:
        reason = (check.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise MPIUnavailable(f"{INSTALL_HINT} ({reason})")


def _end_with_parent():
    # In mpiexec before it starts: if the launcher dies without passing a signal on (it was
    # killed), mpiexec gets SIGTERM and ends every rank instead of running on orphaned.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def launch(processes, program):
    """Run ``program`` (an argv: a non-empty list of strings, such as ``[sys.executable,
    "train.py"]``) in ``processes`` MPI processes; return the exit status.

    mpiexec runs in its own session, so a Ctrl-C in the terminal reaches this launcher
    alone, which passes each SIGINT or SIGTERM on once (mpiexec forwards it to every rank).
    A failed job ends with a line on stderr that says so.
    """
    processes = _check_processes(processes, "launch")
    argv, env = mpiexec_command(processes, _check_program(program, "launch"))
    cores = len(os.sched_getaffinity(0))
    if processes > cores:
        print(f"fastgraph: note: {processes} processes on {cores} cores: MPI processes wait "
              "for each other by polling, so more processes than cores run slowly",
              file=sys.stderr, flush=True)
    job = subprocess.Popen(argv, env=env, start_new_session=True,
                           preexec_fn=_end_with_parent if sys.platform == "linux" else None)
    forward = {sig: signal.signal(sig, lambda signum, frame: job.send_signal(signum))
               for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        status = job.wait()
    finally:
        for sig, previous in forward.items():
            signal.signal(sig, previous)
    if status not in (0, 130):
        print(f"fastgraph: error: the {processes}-process MPI job failed (mpiexec exited with "
              f"status {status}); see the messages above", file=sys.stderr, flush=True)
    return status


def _abort_on_uncaught_exception_under_a_launcher():
    """Under an MPI launcher of several ranks, an exception that reaches the top before the
    program made a communicator (loading its data, say) ends every rank too: the others
    would wait for it forever in their first collective call. MPI starts only then, in the
    hook, so importing this module starts nothing."""
    if launched_size() <= 1 or getattr(sys.excepthook, "aborts", None) is not None:
        return
    previous = sys.excepthook

    def hook(kind, error, trace):
        try:
            comm = _mpi().COMM_WORLD
        except MPIUnavailable:
            comm = None
        previous(kind, error, trace)
        if comm is not None:
            abort(comm, f"{kind.__name__}: {error}")

    hook.aborts, hook.previous = "launcher", previous
    sys.excepthook = hook


def _check_exit_under_a_launcher():
    """Under an MPI launcher of several ranks, a program that ends (``sys.exit`` too) before
    it wrapped its optimizer meets, at exit, the others' ``DataParallel()`` on
    ``MPI.COMM_WORLD`` (see ``_ExitCheck``): they would wait for it there forever. MPI starts
    at exit, in the check, when the program did not start it."""
    if launched_size() > 1 and not _ExitCheck._all:
        _ExitCheck(None)


_abort_on_uncaught_exception_under_a_launcher()
_check_exit_under_a_launcher()

