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
the rank's message, and mpiexec ends the job when a rank dies of a signal, so a job never
hangs waiting for a rank that is gone. A Ctrl-C reaches every rank (mpiexec forwards it);
the ranks agree on stopping inside the all-reduce, so they all stop after the same step.
"""

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from .datasets import Batches
from .trainer import SimpleTrainer

INSTALL_HINT = ("data-parallel training needs MPI: pip install 'fastgraph[mpi]' "
                "(mpi4py and the mpich wheel, which installs mpiexec)")

# What MPI launchers tell the processes they start (MPICH/Intel MPI, Open MPI).
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
_THREAD_VARIABLES = ("MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS")


class MPIUnavailable(RuntimeError):
    """mpi4py or mpiexec is missing (or cannot load its MPI library)."""


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
    if getattr(sys.excepthook, "aborts", None) is comm:
        return
    previous = sys.excepthook

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


def share_cores(comm):
    """Give each rank its share of this machine's cores for BLAS and Numba threads.

    Two ranks on two cores with two threads each would fight over the cores. A thread count
    the user set in the environment is left alone.
    """
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

    ``one_step()`` is the wrapped optimizer's, on this rank's share of the batch; a rank
    with no share calls only ``update()``. ``update()`` adds up every rank's gradient sums
    and sample counts (one in-place ``Allreduce`` of one buffer) and applies the wrapped
    rule to the total, the same on every rank. At construction rank 0's parameter values
    are broadcast, so every rank starts from them.

    ``request_stop()`` asks every rank to stop: after the next ``update()``, ``stopping``
    is true on all of them.
    """

    def __init__(self, optimizer, comm=None):
        self.optimizer = optimizer
        self.comm = communicator() if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self._mpi = _mpi()
        self._params = optimizer.params
        sizes = [param.flat.size for param in optimizer.params]
        self._ends = np.cumsum(sizes).tolist()
        self._count = self._ends[-1]
        # For broadcasting parameters; the update all-reduces the optimizer's own buffer:
        # [gradient sums of every parameter..., samples, stop requests]
        self._buffer = np.empty(self._count, optimizer.graph.dtype)
        self._stop_requested = False
        self.stopping = False
        self.broadcast_parameters()

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
        values = self._buffer[: self._count]
        if self.rank == root:
            np.concatenate([param.flat.ravel() for param in self.params], out=values)
        self.comm.Bcast(values, root=root)
        for param, piece in zip(self.params, self._pieces()):
            param.set_value(piece.reshape(param.dim))

    def one_step(self):
        self.optimizer.one_step()

    def request_stop(self, stop=True):
        self._stop_requested = bool(stop)
        if not stop:
            self.stopping = False

    def update(self):
        """Sum every rank's gradients and samples, then apply the rule to the total."""
        if self.optimizer.params != self._params:
            raise RuntimeError(
                "the optimizer's parameters changed after DataParallel wrapped it (a node was "
                "re-wired): wrap it once the graph is final, so that every rank starts from "
                "rank 0's values of all of them")
        local = self.optimizer.samples
        buffer, count = gradient_buffer(self.optimizer), self._count
        if not local:  # the optimizer's sums are stale: this rank adds nothing
            buffer[:count] = 0
        buffer[count] = local
        buffer[count + 1] = self._stop_requested
        self.comm.Allreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.SUM)  # sums in place
        samples = int(round(float(buffer[count])))
        self.stopping = bool(buffer[count + 1] > 0)
        if samples == 0:
            raise RuntimeError("update() needs a gradient: no rank called one_step() since "
                               "the last update")
        self.optimizer.samples = samples
        self.optimizer.update()


class ShardedBatches(Batches):
    """``Batches`` split between ranks: of each global batch of ``b`` rows (the same rows on
    every rank, shuffled from the same seed), rank ``r`` of ``n`` takes rows
    ``[r * b // n, (r + 1) * b // n)``. The shares are disjoint and cover every epoch once;
    a share may be empty (``(0, features)`` arrays) when ``b < n``."""

    def __init__(self, features, labels, batch_size, rank, size, **options):
        super().__init__(features, labels, batch_size, **options)
        if not 0 <= rank < size:
            raise ValueError(f"rank must be in [0, {size}), got {rank}")
        self.rank, self.size = rank, size

    def _batches(self, order):
        for rows in super()._batches(order):
            yield rows[self.rank * len(rows) // self.size : (self.rank + 1) * len(rows) //
                       self.size]


class DistributedTrainer(SimpleTrainer):
    """``SimpleTrainer`` for a ``DataParallel`` optimizer: every rank trains on its share of
    each batch; rank 0 alone logs, shows progress and evaluates on the test set; the epoch's
    loss, accuracy and samples are those of all ranks together."""

    def __init__(self, x, labels, predict, optimizer, **options):
        if not isinstance(optimizer, DataParallel):
            raise TypeError(f"DistributedTrainer needs a DataParallel optimizer, got "
                            f"{type(optimizer).__name__}")
        self.rank, self.size = optimizer.rank, optimizer.size
        if self.rank != 0:
            options.update(progress=False, log=lambda line: None)
        super().__init__(x, labels, predict, optimizer, **options)

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
        return super().train(features, labels, test_features, test_labels, epochs)

    def _epoch(self, batches, epoch, epochs):
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
    """``(argv, env)`` that run ``program`` (an argv list) in ``processes`` MPI processes."""
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
    """Run ``program`` (an argv list) in ``processes`` MPI processes; return the exit status.

    mpiexec runs in its own session, so a Ctrl-C in the terminal reaches this launcher
    alone, which passes each SIGINT or SIGTERM on once (mpiexec forwards it to every rank).
    A failed job ends with a line on stderr that says so.
    """
    argv, env = mpiexec_command(processes, program)
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

