"""Data-parallel training over MPI: a rank whose program ends early (``sys.exit`` too), models
that differ in more than their parameters' shapes, two DataParallels on one communicator,
and the program that ``launch`` and ``mpiexec_command`` run.

Four MPI runs (each about 2 s); the rest needs no MPI. The helpers are those of
``tests/test_distributed.py``; the MPI programs are scenarios of ``tests/mpi_worker.py``.
"""

import re
import sys
from pathlib import Path

import pytest

import fastgraph as fg
from fastgraph import distributed
from fastgraph.models import mlp
from tests.test_distributed import WORKER, Gathering, entry, mpi, run, run_mpi  # noqa: F401

BOUND = 10  # seconds a job that must stop may take (the jobs hung)


# -- the program to run (no MPI) -----------------------------------------------------------
def test_launch_and_mpiexec_command_take_an_argv_only():
    """A string was split into characters (Hydra: "execvp error on file t"), None gave
    "Value after * must be an iterable", and launch(2, []) started an empty job."""
    argv = r"\(an argv, such as \[sys.executable, \"train.py\"\]\)"
    cases = [
        (lambda: distributed.mpiexec_command(2, None), TypeError,
         rf"^mpiexec_command: program must be a list of strings {argv}, got NoneType None$"),
        (lambda: distributed.mpiexec_command(2, "python train.py"), TypeError,
         r"^mpiexec_command: program must be a list .*, got str 'python train.py'$"),
        (lambda: distributed.mpiexec_command(2, [sys.executable, 3]), TypeError,
         r"^mpiexec_command: program must be a list of strings .*; word 2 is int 3$"),
        (lambda: distributed.launch(2, "true"), TypeError,
         rf"^launch: program must be a non-empty list of strings {argv}, got str 'true'$"),
        (lambda: distributed.launch(2, []), ValueError,
         r"^launch: program must be a non-empty list of strings .*, got an empty list$"),
        (lambda: distributed.launch(2, None), TypeError, r"^launch: program must be"),
        (lambda: distributed.launch(0, [sys.executable]), ValueError,
         r"^launch: processes must be a positive integer, got 0$"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message):
            call()
    check = distributed._check_program
    assert check((sys.executable, Path("train.py")), "launch") == [sys.executable, "train.py"]
    assert check([], "mpiexec_command", empty=True) == []  # mpiexec's part, to add to


# -- models that differ (no MPI) -------------------------------------------------------------
def settings(model, rank):
    """What ``DataParallel()`` of rank ``rank`` compares for ``model`` (``(graph, loss)``)."""
    return distributed._optimizer_settings(fg.optimizer.Adam(*model, 0.01), rank)


def leaky(slope=0.01, shift=False):
    """A 4-3-2 network with LeakyReLU; with ``shift``, another node built first numbers its
    nodes differently."""
    with fg.Graph(seed=0) as graph:
        if shift:
            fg.Variable((5, 1), trainable=False)
        x = fg.Variable((4, 1), trainable=False)
        hidden = fg.ops.LeakyReLU(fg.ops.MatMul(fg.Variable((3, 4), init=True), x), slope)
        output = fg.ops.MatMul(fg.Variable((2, 3), init=True), hidden)
        loss = fg.ops.CrossEntropyWithSoftMax(output, fg.Variable((2, 1), trainable=False),
                                              name="loss")
    return graph, loss


def disagreement(models):
    """The message of the RanksDisagree that ``DataParallel()`` raises on every rank for
    ``models`` (one per rank), or None when the ranks agree."""
    sent = [entry(settings(model, rank)) for rank, model in enumerate(models)]
    raised = []
    for rank, model in enumerate(models):
        try:
            distributed.agree(Gathering(rank, sent), "DataParallel", settings(model, rank))
        except distributed.RanksDisagree as error:
            raised.append(str(error))
    assert not raised or (len(raised) == len(models) and len(set(raised)) == 1), raised
    return raised[0] if raised else None


def test_ranks_whose_models_differ_disagree_on_the_first_node_that_differs():
    """Rank 0 with ReLU and rank 1 with Tanh (the parameters alike) trained together."""
    relu, tanh = (mlp(12, (16,), 4, activation=kind, seed=1) for kind in ("ReLU", "Tanh"))
    assert disagreement([(relu.graph, relu.loss), (tanh.graph, tanh.loss)]) == (
        "DataParallel: the ranks disagree on node 7 of loss's tape (ReLU:6 on rank 0): rank 0 "
        "has ReLU(#6) 16x1, rank 1 has Tanh(#6) 16x1")
    assert disagreement([leaky(0.01), leaky(0.2)]) == (
        "DataParallel: the ranks disagree on node 5 of loss's tape (LeakyReLU:3 on rank 0): "
        "rank 0 has LeakyReLU(#4 slope=0.01) 3x1, rank 1 has LeakyReLU(#4 slope=0.2) 3x1")
    wired = []
    for swapped in (False, True):  # the same nodes and parameters, the Add's parents swapped
        with fg.Graph(seed=0) as graph:
            x = fg.Variable((3, 1), trainable=False)
            product = fg.ops.MatMul(fg.Variable((2, 3), init=True), x)
            parents = [fg.ops.ReLU(product), fg.ops.Tanh(product)]
            output = fg.ops.Add(*(parents[::-1] if swapped else parents))
            wired.append((graph, fg.ops.CrossEntropyWithSoftMax(
                output, fg.Variable((2, 1), trainable=False))))
    assert re.search(r"^DataParallel: the ranks disagree on node \d of .*'s tape \(",
                     disagreement(wired))


def test_ranks_with_the_same_model_agree_however_they_numbered_its_nodes():
    """The fingerprint holds positions on the tape, not names, ids or hashes: rank 1 built
    another node first (its nodes are named Variable:3, ... where rank 0's are Variable:2)."""
    models = [leaky(), leaky(shift=True)]
    names = [[node.name for node in graph.tape(loss).nodes] for graph, loss in models]
    assert names[0] != names[1]
    assert disagreement(models) is None
    relu = mlp(12, (16,), 4, seed=1)
    assert disagreement([(relu.graph, relu.loss)] * 3) is None


# -- under MPI --------------------------------------------------------------------------------
END_EARLY = {  # what each rank says (either may be cut short when the other aborts first)
    "before-mpi": [  # rank 1: sys.exit(1) before it started MPI; rank 0 waits in DataParallel
        "fastgraph: rank 0 of 2 failed: RanksDisagree: DataParallel: 1 of the 2 ranks ended "
        "their program while rank 0 called DataParallel(); every rank must wrap its optimizer",
        "fastgraph: rank 1 of 2 failed: RanksDisagree: DataParallel: the program of rank 1 "
        "ended while 1 of the 2 ranks called DataParallel(); every rank must wrap"],
    "unwrapped": [  # rank 0's program ends (status 0) without wrapping; rank 1 waits
        "fastgraph: rank 1 of 2 failed: RanksDisagree: DataParallel: 1 of the 2 ranks ended "
        "their program while rank 1 called DataParallel()",
        "fastgraph: rank 0 of 2 failed: RanksDisagree: DataParallel: the program of rank 0 "
        "ended while 1 of the 2 ranks called DataParallel()"],
}


@pytest.mark.parametrize("where", list(END_EARLY))
def test_a_rank_whose_program_ends_early_stops_every_rank(mpi, where):  # noqa: F811
    """sys.exit never reaches sys.excepthook: the other rank waited in DataParallel()'s
    comparison forever."""
    result, seconds = run_mpi(2, [sys.executable, WORKER, "end-early", where], timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert any(line in result.stderr for line in END_EARLY[where]), output
    assert seconds < BOUND, f"the job took {seconds:.1f} s to stop"


def test_two_dataparallels_a_rank_that_ends_early_stops_every_rank(mpi):  # noqa: F811
    """The exit check met the first DataParallel's update with the second's length: MPICH
    aborted with "Message truncated" (status 142)."""
    result, seconds = run_mpi(2, [sys.executable, WORKER, "two-models"], timeout=30)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert any(line in result.stderr for line in [
        "fastgraph: rank 0 of 2 failed: RanksDisagree: DataParallel.update: 1 of the 2 ranks "
        "ended their program while rank 0 called update() for the 3rd time",
        "fastgraph: rank 1 of 2 failed: RanksDisagree: DataParallel: the program of rank 1 "
        "ended after 2 update() calls while 1 of the 2 ranks called update()"]), output
    assert "Message truncated" not in output
    assert seconds < BOUND, f"the job took {seconds:.1f} s to stop"


def test_models_that_differ_are_refused_and_ranks_that_end_apart_are_not(mpi):  # noqa: F811
    """Rank 0 with ReLU and rank 1 with Tanh trained together (status 0). The same model
    numbered differently on rank 1 and hashing differently (PYTHONHASHSEED) must still
    train, with a second DataParallel of another shape; a rank that ends (status 3) when
    its collective calls are done waits for the others, and the job ends without an abort."""
    argv, env = distributed.mpiexec_command(2, [sys.executable, WORKER, "models"])
    env.pop("PYTHONHASHSEED", None)  # each rank draws its own
    result, seconds = run(argv, timeout=30, env=env)
    output = result.stdout + result.stderr
    for rank in (0, 1):
        assert (f"rank {rank}: RanksDisagree: DataParallel: the ranks disagree on node 7 of "
                "loss's tape (ReLU:6 on rank 0): rank 0 has ReLU(#6) 16x1, rank 1 has "
                "Tanh(#6) 16x1; every rank must build the same model") in result.stdout, output
    sums = re.findall(r"<rank \d parameters: ([^>]*)>", result.stdout)
    assert len(sums) == 2 and sums[0] == sums[1], output
    hashes = re.findall(r"<rank \d hash: ([^>]*)>", result.stdout)
    assert len(hashes) == 2 and hashes[0] != hashes[1], output
    assert result.returncode == 3, output  # rank 1's status: neither aborted
    assert "rank 0 ended last" in result.stdout and "failed" not in result.stderr, output
    assert seconds < BOUND, f"the job took {seconds:.1f} s"
