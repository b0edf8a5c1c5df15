"""Tests for the survivors of a sixth mutation sweep (92 mutations of this session's code:
special files, per-graph deferred sums, per-thread counts, claims, flags, the convolution's
settings; 62 caught, 12 equivalent): an update right after one-sample steps applies every
staged sample, completing sums holds the graph, a refused special file leaks no descriptor,
a FIFO as weights.npz, a symlink to a model as --save, limit() and thread counts in new
threads, windows that fit only with both sides' padding, profile_steps' and dp_sgd's
checks, and the messages that name a block device, a bool seed or ragged input."""
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import fastgraph as fg
from fastgraph.graph import GraphInUse
from fastgraph.saver import ModelFileError
from fastgraph.threads import threads
from tests.helpers import Holder, in_a_thread, refused_without_waiting, small_network

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


# -- files.py -------------------------------------------------------------------------------
def _open_descriptors():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_special_file_refused_leaves_no_descriptor_open(tmp_path):
    """F6: open_regular closes the descriptor it opened when it refuses the file (a server
    that loads user-named models would run out of descriptors)."""
    os.mkfifo(tmp_path / "fifo")
    before = _open_descriptors()
    for _ in range(50):
        with pytest.raises(ModelFileError, match="it is a FIFO"):
            fg.saver.load(tmp_path / "fifo")
        with pytest.raises(fg.datasets.mnist.DatasetError, match="it is a FIFO"):
            fg.datasets.mnist.read_idx(tmp_path / "fifo")
    assert _open_descriptors() == before


def test_check_writable_accepts_a_symlink_to_a_regular_file(tmp_path):
    """F9: a --save path that is a symlink to a model file is replaced like the file (what
    _write_beside does); only what the link names is judged."""
    from fastgraph.files import check_writable

    target = tmp_path / "model.fgz"
    target.write_bytes(b"old")
    link = tmp_path / "latest.fgz"
    link.symlink_to(target)
    check_writable(link, "--save")  # no error
    fg.saver.save(link, small_network()[0])


def test_a_block_device_is_named_as_one(tmp_path):
    """F2: a block device (a disk: --save /dev/sda as root) is refused as "a block device",
    the words of its kind, not the catch-all "not a regular file"."""
    import stat

    from fastgraph.files import check_writable, not_regular

    assert not_regular(stat.S_IFBLK | 0o600) == "a block device"
    try:
        os.mknod(tmp_path / "disk", 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    except OSError:
        pytest.skip("cannot make a block device here (not root)")
    with pytest.raises(ValueError, match=r"--save .*disk: is a block device, expected a "):
        check_writable(tmp_path / "disk", "--save")


# -- saver.py ---------------------------------------------------------------------------------
def test_saver_load_refuses_a_weights_file_that_is_a_fifo_at_once(tmp_path):
    """S10: the article Saver's weights.npz read with open_regular: a FIFO there is refused,
    not waited on forever."""
    from fastgraph.saver import Saver

    graph = small_network()[0]
    Saver(str(tmp_path)).save(graph)
    weights = tmp_path / "weights.npz"
    weights.unlink()
    os.mkfifo(weights)
    error = refused_without_waiting(lambda: Saver(str(tmp_path)).load(small_network()[0]),
                                    weights)
    outcome = {"error": error}
    assert isinstance(outcome.get("error"), ModelFileError), outcome
    assert "it is a FIFO (named pipe), not a regular file" in str(outcome["error"])


# -- engines/compiled.py: completing sums is a use of the graph ---------------------------------
@pytest.mark.compiled  # (only the compiled engine defers)
def test_completing_deferred_sums_while_another_thread_holds_the_graph_is_refused(monkeypatch):
    """D6: the deferred additions are completed into buffers that another thread's pass of
    the same graph is reading and writing: refused, and the staged samples still wait."""
    from tests.helpers import mnist_network

    monkeypatch.setenv("FASTGRAPH_EXECUTOR", "compiled")
    graph, x, one_hot, _, _, loss = mnist_network(seed=3)
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.01)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x.set_value(rng.random((784, 1)))
        one_hot.set_value(np.eye(10)[[rng.integers(10)]].T)
        optimizer.one_step()
    assert any(found.sums is optimizer._sums for found in graph.deferred)  # the premise
    with Holder(graph), pytest.raises(GraphInUse, match="^completing the gradient sums: "):
        _ = optimizer.gradient_sums
    assert any(found.sums is optimizer._sums for found in graph.deferred)
    _ = optimizer.gradient_sums  # and completes once the graph is free
    assert not any(found.sums is optimizer._sums for found in graph.deferred)


def test_update_right_after_one_sample_steps_applies_every_sample(monkeypatch):
    """O4: update() completes the deferred additions before it applies the sums. Without it,
    the article's loop (one_step per sample, then update, no read between) applied sums that
    lacked the staged samples: other parameters than the walker's."""
    from tests.helpers import mnist_network

    rng = np.random.default_rng(5)
    columns = rng.random((5, 784, 1))
    labels = np.eye(10)[rng.integers(0, 10, 5)][:, :, None]
    params = {}
    for how in ("compiled", "python"):
        monkeypatch.setenv("FASTGRAPH_EXECUTOR", how)
        graph, x, one_hot, _, _, loss = mnist_network(seed=3)
        optimizer = fg.optimizer.GradientDescent(graph, loss, 0.5)
        for column, label in zip(columns, labels):
            x.set_value(column)
            one_hot.set_value(label)
            optimizer.one_step()
        optimizer.update()  # no read of the sums before
        params[how] = [np.array(p.value) for p in optimizer.params]
    for got, want in zip(params["compiled"], params["python"]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


# -- threads.py -------------------------------------------------------------------------------
def test_limit_makes_every_thread_set_its_count_again():
    """T1: after limit() (distributed: cores / ranks), a count set before is no longer
    current, so the next use() sets MKL and Numba again even for the same number."""
    before = threads.current
    most = threads.most
    try:
        threads.use(1)
        assert threads.current == 1
        threads.limit(most)
        assert threads.current is None
    finally:
        threads.limit(most)
        threads.use(before or most)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two threads")
def test_a_limit_of_one_holds_in_a_thread_that_only_computes(monkeypatch):
    """T6: with one core (or limit(1)) and no FASTGRAPH_THREADS, a new Python thread's
    forward pass runs on one thread, not on Numba's default of every core."""
    monkeypatch.setattr(threads, "fixed", None)
    monkeypatch.setattr(threads, "most", 1)
    _, x, *_, logits, _ = small_network()
    x.set_value(np.ones((4, 3, 1)))

    def forward_then_count():
        logits.forward()
        return numba.get_num_threads()

    assert in_a_thread(forward_then_count) == 1


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two threads")
def test_a_fixed_count_of_two_holds_in_a_thread_that_only_computes(monkeypatch):
    """T8: FASTGRAPH_THREADS=2 means two threads in every thread that computes, not one."""
    monkeypatch.setattr(threads, "fixed", 2)
    monkeypatch.setattr(threads, "most", 2)
    _, x, *_, logits, _ = small_network()
    x.set_value(np.ones((4, 3, 1)))

    def forward_then_count():
        numba.set_num_threads(1)  # whatever the thread had: the fixed count is set
        logits.forward()
        return numba.get_num_threads()

    assert in_a_thread(forward_then_count) == 2


# -- graph.py, metrics.py ------------------------------------------------------------------------
def test_a_numpy_bool_seed_is_refused_as_a_bool():
    """G1: np.True_ is refused in fastgraph's words ("a bool"), like True, not in NumPy's."""
    with pytest.raises(ValueError, match=r"^Graph seed must be None or a non-negative integer, "
                                         r"got np\.True_ \(a bool\)$"):
        fg.Graph(seed=np.True_)


def test_roc_auc_names_ragged_labels():
    """ME3: ragged labels are refused in words that name them, as ragged scores are."""
    with pytest.raises(ValueError, match="^roc_auc: labels are not an array"):
        fg.metrics.roc_auc([[0, 1], [1]], [0.2, 0.7, 0.4])


def test_predicted_classes_names_ragged_predictions():
    """ME5: ragged predictions are refused in words that name them."""
    with pytest.raises(ValueError, match="^predictions are not an array"):
        fg.metrics.predicted_classes([[0.1, 0.9], [0.3]])


# -- convolution --------------------------------------------------------------------------------
def test_a_window_wider_than_the_padded_image_is_refused_before_any_parameter():
    """CV4: only the height was checked: a 3x3 window on 5x2 images made the weights and
    failed later in other words."""
    with fg.Graph() as graph:
        x = fg.Variable((10, 1), trainable=False, name="x")
    count = graph.node_count()
    with pytest.raises(ValueError, match="does not fit an image of 5x2"):
        fg.layer.conv2d(x, 4, 3, image_shape=(5, 2))
    assert graph.node_count() == count


def test_a_window_that_needs_the_padding_of_both_sides_fits():
    """CV5: padding counts on both sides: a 4x4 window fits a 2x2 image padded by 1."""
    with fg.Graph(seed=0):
        x = fg.Variable((4, 1), trainable=False, name="x")
        out = fg.layer.conv2d(x, 2, 4, image_shape=(2, 2), padding=1)
    assert out.dim == (1, 2)


# -- profiler -----------------------------------------------------------------------------------
def test_profile_steps_refuses_an_object_without_update_at_once():
    """P1: an object with one_step and a graph but no update ran the warm-up steps and then
    failed with an AttributeError."""
    graph = small_network()[0]

    class Stepper:
        def __init__(self):
            self.graph, self.steps = graph, 0

        def one_step(self):
            self.steps += 1

    stepper = Stepper()
    with pytest.raises(TypeError, match="optimizer must be a fastgraph optimizer"):
        fg.profiler.profile_steps(stepper, lambda step: None, steps=2, warmup=1)
    assert stepper.steps == 0


def test_profile_steps_refuses_an_object_without_a_graph_at_once():
    """P2: an object with one_step and update but no graph ran every step, then failed with
    an AttributeError reading its graph."""

    class Stepper:
        steps = 0

        def one_step(self):
            self.steps += 1

        def update(self):
            pass

    stepper = Stepper()
    with pytest.raises(TypeError, match="optimizer must be a fastgraph optimizer"):
        fg.profiler.profile_steps(stepper, lambda step: None, steps=2, warmup=1)
    assert stepper.steps == 0


# -- examples/dp_sgd.py -------------------------------------------------------------------------
def _dp_sgd(tmp_path, *options):
    example = Path(fg.__file__).resolve().parent.parent / "examples" / "dp_sgd.py"
    return subprocess.run([sys.executable, str(example), "--quick", *options],
                          capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
                          env={**os.environ, "FASTGRAPH_DATA": str(tmp_path)})  # no MNIST


def test_dp_sgd_refuses_a_clip_bound_of_zero(tmp_path):
    """DP1: C = 0 clips every gradient to nothing (the model never learns): refused."""
    result = _dp_sgd(tmp_path, "--clip", "0")
    assert result.returncode == 2
    assert result.stderr.endswith("error: argument --clip: '0': expected a finite number "
                                  "above 0\n"), result.stderr
