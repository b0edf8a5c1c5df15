"""Data-parallel training over MPI: two processes on loopback train the one-process model.

The MPI runs are subprocesses (mpiexec, with timeouts); this process never starts MPI. The
tests that need MPI skip, saying why, when mpi4py or mpiexec is missing (``fastgraph[mpi]``,
which the ``dev`` extra installs).
"""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastgraph as fg
from fastgraph import distributed
from fastgraph.cli import main
from fastgraph.datasets import Batches
from fastgraph.models import mlp
from tests.mpi_worker import RULES, train_model
from tests.test_cli import train_command

WORKER = str(Path(__file__).with_name("mpi_worker.py"))


@pytest.fixture(scope="module")
def mpi():
    try:
        distributed.mpiexec_command(2, [])
    except distributed.MPIUnavailable as error:
        pytest.skip(str(error))


def run(argv, timeout=60, env=None):
    """``subprocess.run`` whose timeout ends the MPI job too: SIGTERM makes mpiexec (or the
    launcher, which passes it on) end every rank, where SIGKILL would leave them running."""
    began = time.monotonic()
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            out, err = process.communicate(timeout=30)
            pytest.fail(f"{' '.join(map(str, argv))} still ran after {timeout} s:\n{out}{err}")
    return subprocess.CompletedProcess(argv, process.returncode, out, err), \
        time.monotonic() - began


def run_mpi(processes, program, timeout=60):
    argv, env = distributed.mpiexec_command(processes, program)
    return run(argv, timeout, env)


def params_of(path):
    graph, meta = fg.saver.load(path)
    return [node.value for node in graph.nodes if getattr(node, "trainable", False)], meta


# -- sharding (no MPI) --------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [197, 65, 3])
def test_shards_split_each_global_batch_and_cover_the_epoch(size, count):
    features = np.arange(count, dtype=np.float32)[:, None]  # a sample's feature: its index
    labels = np.zeros(count, np.int64)
    whole = Batches(features, labels, 64, classes=2, seed=5)
    shards = [distributed.ShardedBatches(features, labels, 64, rank, size, classes=2, seed=5)
              for rank in range(size)]
    for _ in range(2):  # a new shuffle each epoch, the same on every rank
        globals_ = [x[:, 0].copy() for x, _ in whole]
        shares = [[x[:, 0].copy() for x, _ in shard] for shard in shards]
        assert all(len(share) == len(globals_) == len(whole) for share in shares)
        for step, batch in enumerate(globals_):
            parts = [share[step] for share in shares]
            np.testing.assert_array_equal(np.concatenate(parts), batch)
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
            if len(batch) < size:
                assert min(map(len, parts)) == 0
        covered = np.concatenate([part for share in shares for part in share])
        assert sorted(covered.tolist()) == list(range(count))


def test_sharded_batches_check_the_rank():
    with pytest.raises(ValueError, match=r"rank must be an integer in \[0, 2\), got 2"):
        distributed.ShardedBatches(np.zeros((4, 1)), np.zeros(4, np.int64), 2, 2, 2)


# -- two ranks against one process ----------------------------------------------------------
@pytest.fixture(scope="module")
def trained(mpi, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mpi")
    result, _ = run_mpi(2, [sys.executable, WORKER, "train", str(folder)])
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


@pytest.mark.parametrize("rule", list(RULES))
def test_two_ranks_train_the_one_process_model(trained, rule):
    ranks = [np.load(trained / f"{rule}-rank{rank}.npz") for rank in (0, 1)]
    ranks = [[archive[name] for name in archive.files] for archive in ranks]
    for mine, other in zip(*ranks):  # rank 1 began elsewhere: broadcast, then same updates
        np.testing.assert_array_equal(mine, other)
    reference, history = train_model(rule)
    initial = mlp(12, (16,), 4, seed=11)
    for mine, expected in zip(ranks[0], reference):
        np.testing.assert_allclose(mine, expected, rtol=2e-5, atol=2e-6)
    start = [param.value for param in fg.optimizer.Adam(initial.graph, initial.loss).params]
    assert max(np.abs(a - b).max() for a, b in zip(reference, start)) > 1e-3  # it trained
    combined = json.loads((trained / f"{rule}-history.json").read_text())
    assert [record["samples"] for record in combined] == [197, 197, 65]
    for record, single in zip(combined, history):
        assert record["loss"] == pytest.approx(single["loss"], rel=1e-5)
        assert record["train_accuracy"] == pytest.approx(single["train_accuracy"], abs=1e-9)


# -- faults ---------------------------------------------------------------------------------
def test_a_rank_that_raises_stops_every_rank(mpi):
    result, seconds = run_mpi(2, [sys.executable, WORKER, "raise"], timeout=60)
    assert result.returncode != 0
    assert ("fastgraph: rank 1 of 2 failed: RuntimeError: simulated failure on rank 1; "
            "stopping every rank") in result.stderr
    assert seconds < 20, f"the job took {seconds:.1f} s to stop"


def test_a_rank_that_raises_before_any_communicator_stops_every_rank(mpi):
    """Rank 1 failed loading its data, before DataParallel or communicator() installed the
    hook that aborts every rank: rank 0 waited in DataParallel's comparison forever."""
    result, seconds = run_mpi(2, [sys.executable, WORKER, "raise-before"], timeout=60)
    assert result.returncode != 0
    assert ("fastgraph: rank 1 of 2 failed: RuntimeError: rank 1 could not read its data; "
            "stopping every rank") in result.stderr
    assert seconds < 20, f"the job took {seconds:.1f} s to stop"


def test_a_killed_rank_stops_every_rank(mpi):
    result, seconds = run([sys.executable, WORKER, "--launch", "2", "kill"])
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Killed (signal 9)" in output, output
    assert "fastgraph: error: the 2-process MPI job failed (mpiexec exited with status" in output
    assert seconds < 20, f"the job took {seconds:.1f} s to stop"


# -- ranks that disagree -----------------------------------------------------------------
class Gathering:
    """A communicator's ``allgather`` for ``agree()`` without MPI: this rank's entry among
    what the others sent (``sent``, one entry per rank)."""

    def __init__(self, rank, sent):
        self.rank, self.sent = rank, sent

    def allgather(self, mine):
        return [mine if rank == self.rank else entry for rank, entry in enumerate(self.sent)]


class Recorder(Gathering):
    def allgather(self, mine):
        self.sent = [mine]
        return [mine]


def entry(items=(), failure=None, root_value=None):
    """What a rank with these values sends in ``agree()``."""
    recorder = Recorder(0, [])
    distributed.agree(recorder, "f", items, failure, root_value=root_value)
    return recorder.sent[0]


def test_agree_returns_rank_0s_value_when_the_ranks_agree():
    items = [("epochs", 2), ("scale", np.float32(1 / 255)), ("shape", (np.int64(4), 16))]
    others = [entry(items, root_value=rank + 10) for rank in range(3)]
    for rank in range(3):
        assert distributed.agree(Gathering(rank, others), "f", items, root_value=rank + 10) == 10


def test_agree_names_the_option_and_every_ranks_value():
    mine = [("epochs", 2), ("batch_size", 64)]
    others = [entry(mine), entry([("epochs", 3), ("batch_size", 32)])]
    for rank in (0, 1):
        with pytest.raises(distributed.RanksDisagree) as raised:
            distributed.agree(Gathering(rank, others), "T.train", others[rank][1], hint="same!")
        assert str(raised.value) == ("T.train: the ranks disagree on epochs: rank 0 has 2, "
                                     "rank 1 has 3; same!")
    values = [64, 64, 64, 32, 64]
    others = [entry([("batch_size", value)]) for value in values]
    with pytest.raises(distributed.RanksDisagree, match=r"^f: the ranks disagree on "
                       r"batch_size: ranks 0-2,4 have 64, rank 3 has 32$"):
        distributed.agree(Gathering(0, others), "f", [("batch_size", 64)])
    others = [entry([("lr", np.float32(0.01))]), entry([("lr", 0.02)])]
    with pytest.raises(distributed.RanksDisagree, match=r"rank 0 has 0\.01, rank 1 has 0\.02$"):
        distributed.agree(Gathering(1, others), "f", [("lr", 0.02)])
    others = [entry([("seed", 3)]), entry([("seed", "3")])]  # alike in print: by repr
    with pytest.raises(distributed.RanksDisagree, match=r"rank 0 has 3, rank 1 has '3'$"):
        distributed.agree(Gathering(0, others), "f", [("seed", 3)])


def test_agree_tells_every_rank_that_one_could_not_start():
    error = ValueError("epochs must be at least 1, got 0")
    others = [entry([("epochs", 2)]), entry(failure=error)]
    with pytest.raises(distributed.RanksDisagree, match=r"^f: rank 1 could not start "
                       r"\(ValueError: epochs must be at least 1, got 0\), so no rank starts$"):
        distributed.agree(Gathering(0, others), "f", [("epochs", 2)])
    assert distributed.agree(Gathering(1, others), "f", failure=error) is None  # raises its own


DISAGREE = {  # rank 1's other value: what both ranks raise
    "epochs": "RanksDisagree: DistributedTrainer.train: the ranks disagree on epochs: rank 0 "
              "has 2, rank 1 has 3; every rank must call train() with the same training data",
    "samples": "RanksDisagree: DistributedTrainer.train: the ranks disagree on the number of "
               "training samples: rank 0 has 197, rank 1 has 150; every rank must call train()",
    "batch_size": "RanksDisagree: DistributedTrainer.train: the ranks disagree on batch_size: "
                  "rank 0 has 64, rank 1 has 32; every rank must call train()",
    "optimizer": "RanksDisagree: DataParallel: the ranks disagree on the optimizer: rank 0 has "
                 "Adam, rank 1 has Momentum; every rank must build the same model",
    "hidden": "RanksDisagree: DataParallel: the ranks disagree on the shape of parameter 1 ",
    "learning_rate": "RanksDisagree: DataParallel.update: the ranks disagree on the "
                     "optimizer's learning_rate: rank 0 has 0.01, rank 1 has 0.02; a setting "
                     "changed on some ranks only; change the optimizer's settings on every "
                     "rank alike (they are compared at every update, and this update was not "
                     "applied)",
}


@pytest.mark.parametrize("what", list(DISAGREE))
def test_ranks_that_disagree_all_raise_the_same_error_and_the_job_ends(mpi, what):
    result, seconds = run_mpi(2, [sys.executable, WORKER, "disagree", what], timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 3, output  # the worker's status once both have raised
    for rank in (0, 1):
        assert f"rank {rank}: {DISAGREE[what]}" in result.stdout, output
    if what == "hidden":
        assert "rank 0 has (4, 16), rank 1 has (4, 17)" in result.stdout, output
    if what == "learning_rate":  # the update of the third step was applied on neither rank
        sums = re.findall(r"<rank \d parameters: ([^>]*)>", result.stdout)
        assert len(sums) == 2 and sums[0] == sums[1], output
    assert "Message truncated" not in output
    assert seconds < 20, f"the job took {seconds:.1f} s to stop"


def test_a_rank_that_refuses_its_arguments_stops_the_others(mpi):
    result, seconds = run_mpi(2, [sys.executable, WORKER, "disagree", "refused"], timeout=60)
    assert result.returncode == 3, result.stdout + result.stderr
    assert ("rank 0: RanksDisagree: DistributedTrainer.train: rank 1 could not start "
            "(ValueError: epochs must be at least 1, got 0), so no rank starts"
            in result.stdout)
    assert "rank 1: ValueError: epochs must be at least 1, got 0" in result.stdout
    assert seconds < 20, f"the job took {seconds:.1f} s to stop"


UNCAUGHT = {  # what each rank says (either may be cut short when the other aborts first)
    "epochs": ["fastgraph: rank 0 of 2 failed: RanksDisagree: DistributedTrainer.train: the "
               "ranks disagree on epochs: rank 0 has 2, rank 1 has 3",
               "fastgraph: rank 1 of 2 failed: RanksDisagree: DistributedTrainer.train: the "
               "ranks disagree on epochs: rank 0 has 2, rank 1 has 3"],
    "train_calls": ["fastgraph: rank 0 of 2 failed: RanksDisagree: DataParallel: the program of "
                    "rank 0 ended after 8 update() calls while 1 of the 2 ranks called train() "
                    "or agree(); every rank must call update() the same number of times",
                    "fastgraph: rank 1 of 2 failed: RanksDisagree: DistributedTrainer.train: 1 "
                    "of the 2 ranks ended their program while rank 1 called it"],
    "updates": ["fastgraph: rank 0 of 2 failed: RanksDisagree: DataParallel: the program of "
                "rank 0 ended after 4 update() calls while 1 of the 2 ranks called update(); "
                "every rank must call update() the same number of times",
                "fastgraph: rank 1 of 2 failed: RanksDisagree: DataParallel.update: 1 of the 2 "
                "ranks ended their program while rank 1 called update() for the 5th time"],
}


@pytest.mark.parametrize("what", list(UNCAUGHT))
def test_a_disagreement_left_uncaught_ends_the_job_with_its_message(mpi, what):
    """The reported case (rank 1 given 3 epochs, rank 0 2, as a program would be written);
    a rank that calls train() once more than the other, whose program then ends; and a loop
    of one_step()/update() without a trainer that makes one more update on rank 1."""
    result, seconds = run_mpi(2, [sys.executable, WORKER, "uncaught", what], timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert any(line in result.stderr for line in UNCAUGHT[what]), output
    assert "Message truncated" not in output
    assert seconds < 20, f"the job took {seconds:.1f} s to stop"


def test_without_a_seed_the_ranks_shuffle_alike(mpi):
    result, _ = run_mpi(2, [sys.executable, WORKER, "seed-none"], timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "covered", result.stdout


def running(pid):
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status  # a zombie has ended


@pytest.mark.skipif(sys.platform != "linux", reason="the launcher's guard uses Linux's prctl")
def test_a_killed_launcher_takes_the_ranks_with_it(mpi, tmp_path):
    launcher = subprocess.Popen([sys.executable, WORKER, "--launch", "2", "hang", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("*.pid"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [int(path.read_text()) for path in tmp_path.glob("*.pid")]
        assert len(pids) == 2 and all(map(running, pids))
        launcher.kill()  # SIGKILL: it cannot pass anything on
        deadline = time.monotonic() + 15
        while any(map(running, pids)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(running, pids)), "ranks still run after their launcher was killed"
    finally:
        launcher.kill()
        launcher.wait()


# -- the command line -------------------------------------------------------------------------
CLI_OPTIONS = ("--train-samples", 1000, "--test-samples", 200, "--epochs", 2, "--hidden", 16,
               "--seed", 4, "--no-progress")


@pytest.fixture(scope="module")
def cli_runs(mpi, mnist_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-mpi")
    under_mpiexec, _ = run_mpi(2, train_command(mnist_dir, *CLI_OPTIONS, "--save",
                                                folder / "mpiexec.fgz"), timeout=120)
    launched, _ = run(train_command(mnist_dir, *CLI_OPTIONS, "--processes", 2, "--save",
                                    folder / "processes.fgz"), timeout=120)
    return folder, under_mpiexec, launched


def test_cli_under_mpiexec_prints_and_saves_on_rank_0_only(cli_runs):
    folder, result, _ = cli_runs
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("training 784-16-10 (ReLU) on 1,000 MNIST images: adam, batch 64, "
                        "float32, engine vjp, 2 processes")
    assert [line.split(":")[0] for line in lines[1:]] == [
        "epoch 1/2", "epoch 2/2", "test accuracy", "saved the model to " + str(folder /
                                                                        "mpiexec.fgz")]
    _, meta = params_of(folder / "mpiexec.fgz")
    assert [record["samples"] for record in meta["history"]] == [1000, 1000]
    assert sorted(path.name for path in folder.iterdir()) == ["mpiexec.fgz", "processes.fgz"]


def test_cli_processes_starts_mpiexec_and_matches_one_process(cli_runs, mnist_dir, tmp_path,
                                                               capsys):
    folder, _, result = cli_runs
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("training 784-16-10") == 1 and "2 processes" in result.stdout
    launched, _ = params_of(folder / "processes.fgz")
    for mine, other in zip(launched, params_of(folder / "mpiexec.fgz")[0]):
        np.testing.assert_array_equal(mine, other)
    assert main(["train", "mnist", "--data", str(mnist_dir), *map(str, CLI_OPTIONS),
                 "--save", str(tmp_path / "one.fgz")]) == 0
    capsys.readouterr()
    for mine, single in zip(launched, params_of(tmp_path / "one.fgz")[0]):
        np.testing.assert_allclose(mine, single, rtol=1e-4, atol=1e-5)


def test_ctrl_c_on_the_launcher_stops_every_rank_and_saves(mpi, mnist_dir, tmp_path):
    model = tmp_path / "model.fgz"
    process = subprocess.Popen(
        train_command(mnist_dir, "--processes", 2, "--epochs", 1000, "--lr-decay", 1,
                      "--train-samples", 3000, "--test-samples", 100, "--hidden", 16,
                      "--no-progress", "--save", model),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("training")
        time.sleep(1)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.terminate()
            process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "interrupted: stopped after" in out and "test accuracy:" in out
    _, meta = params_of(model)
    assert 1 <= len(meta["history"]) < 1000
    assert "the 2-process MPI job failed" not in err


def test_processes_without_mpi_says_what_to_install(tmp_path, monkeypatch, capsys):
    (tmp_path / "mpi4py").mkdir()  # an mpi4py that cannot be imported, as when it is missing
    (tmp_path / "mpi4py" / "__init__.py").write_text("raise ImportError('No module named mpi4py')")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert main(["train", "mnist", "--processes", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastgraph: error: data-parallel training needs MPI: "
                          "pip install 'fastgraph[mpi]'")
    assert "No module named mpi4py" in err


def test_processes_must_agree_with_the_mpi_launcher(monkeypatch, capsys):
    monkeypatch.setenv("PMI_SIZE", "2")
    assert main(["train", "mnist", "--processes", "3"]) == 2
    assert ("--processes 3 under an MPI launcher that started 2 processes"
            in capsys.readouterr().err)


def test_the_public_functions_name_their_bad_arguments():
    """comm=object() gave "'object' object has no attribute 'Get_rank'", launch(0, ...) ran
    the program anyway, mpiexec_command(1.9) used -n 1, ShardedBatches took rank 0.5."""
    features, labels = np.zeros((8, 3)), np.arange(8) % 2
    cases = [
        (lambda: distributed.mpiexec_command(0, ["true"]), ValueError,
         r"^mpiexec_command: processes must be a positive integer, got 0$"),
        (lambda: distributed.mpiexec_command(1.9, ["true"]), ValueError,
         r"processes must be a positive integer, got 1.9"),
        (lambda: distributed.launch(-1, ["true"]), ValueError, r"got -1"),
        (lambda: distributed.launch("2", ["true"]), ValueError, r"got '2'"),
        (lambda: distributed.ShardedBatches(features, labels, 4, 0.5, 2, classes=2),
         ValueError, r"^ShardedBatches: rank must be an integer in \[0, 2\), got 0.5$"),
        (lambda: distributed.ShardedBatches(features, labels, 4, 0, 0, classes=2),
         ValueError, r"^ShardedBatches: size: processes must be a positive integer, got 0$"),
        (lambda: distributed.share_cores(None), TypeError,
         r"^share_cores: comm must be an MPI communicator .*got NoneType None$"),
        (lambda: distributed.DataParallel(fg.optimizer.Adam(*_tiny()), comm="world"),
         TypeError, r"^DataParallel: comm must be an MPI communicator .*got str 'world'$"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message):
            call()


def _tiny():
    with fg.Graph() as graph:
        x = fg.Variable((2, 1), trainable=False)
        w = fg.Variable((1, 2), init=True)
        loss = fg.ops.Dot(fg.ops.MatMul(w, x), fg.ops.MatMul(w, x))
    return graph, loss


def test_the_settings_fingerprint_tells_every_rank_whether_all_had_the_same():
    """``update()`` ships each rank's two 8-bit pieces of a CRC of its settings with their
    squares in the all-reduce; from the sums alone, every rank must reach the same verdict:
    alike exactly when every rank's pieces were equal (also when one rank's pieces are the
    mean of the others', which a comparison of the sum with size times one's own misses)."""
    rng = np.random.default_rng(0)
    cases = [[(1, 2), (2, 2), (3, 2)], [(7, 9)] * 5, [(0, 0), (0, 0)], [(255, 255), (255, 0)]]
    cases += [[tuple(rng.integers(0, 256, 2)) if rng.random() < 0.3 else (5, 6)
               for _ in range(rng.integers(2, 9))] for _ in range(300)]
    for pieces in cases:
        sums = np.zeros(4, np.float32)
        for low, high in pieces:
            sums += np.array([low, low * low, high, high * high], np.float32)
        assert distributed._alike(sums, len(pieces)) == (len(set(pieces)) == 1), pieces
    model = mlp(4, (3,), 2, seed=0)
    adam = fg.optimizer.Adam(model.graph, model.loss, 0.01)
    names = distributed._setting_names(adam)
    assert names == ["learning_rate", "beta_1", "beta_2", "conventions", "eps", "steps"]
    before = distributed._fingerprint(adam, names)
    assert before == distributed._fingerprint(adam, names)
    adam.learning_rate = 0.02
    assert distributed._fingerprint(adam, names) != before
    adam.learning_rate, adam.beta_1 = 0.01, np.float64(0.9)  # as NumPy scalar or float
    assert distributed._fingerprint(adam, names) == before


def test_a_frozen_parameter_is_broadcast_and_compared(mpi):
    """A parameter frozen (trainable=False) before wrapping is left out by the optimizer:
    it was not broadcast, so ranks built from their own seeds trained different models."""
    result, _ = run_mpi(2, [sys.executable, WORKER, "frozen", "both"], timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    sums = re.findall(r"<rank \d parameters: ([^>]*)>", result.stdout)
    assert len(sums) == 2 and sums[0] == sums[1], output
    result, _ = run_mpi(2, [sys.executable, WORKER, "frozen", "rank 1"], timeout=60)
    assert result.returncode == 3, result.stdout + result.stderr
    for rank in (0, 1):
        assert (f"rank {rank}: RanksDisagree: DataParallel: the ranks disagree on the frozen "
                "parameters: rank 0 has (), rank 1 has ('Variable:2',)") in result.stdout
