"""Tests for the survivors of an eighth mutation sweep, of the code that freezes, renames,
clears and re-sizes (1f38098..ae498d3): frozen parameters kept as parameters everywhere,
batches one row longer than their buffers, every option fixed. Each passes on the code as
it is and fails under the mutation named in its docstring."""

import copy

import numpy as np
import pytest

import fastgraph as fg
from tests.test_reliability_sweep7 import _one_sample_relu


def test_a_nodes_parents_copied_are_a_plain_list():
    """copy.copy of a read-only list rebuilt it item by item through append(), which
    refuses (GR4: ReadOnlyList.__reduce__ left to list's)."""
    graph, q, r = _one_sample_relu()
    for listed, items in ((r.parents, [q]), (q.children, [r]), (graph.nodes, [q, r])):
        copied = copy.copy(listed)
        assert type(copied) is list and copied == items
    assert copy.deepcopy([1, 2]) == [1, 2]


def test_a_frozen_parameter_is_still_refused_parents():
    """A parameter frozen with trainable=False is a parameter still: re-wiring it is
    refused as for one not frozen (GR18: the check read trainable)."""
    with fg.Graph() as graph:
        x = fg.Variable((2, 1), trainable=False)
        w = fg.Variable((2, 1), init=True)
        out = fg.ops.Add(x, w)
    w.trainable = False
    with pytest.raises(ValueError, match=r"^rewire: Variable:1 is a parameter and takes no "
                       r"parents; re-wire an operator or a Welding$"):
        graph.rewire(w, [x])
    assert w.parents == [] and out.parents == [x, w]


def _frozen_model(seed=0):
    with fg.Graph(seed=seed) as graph:
        x = fg.Variable((3, 1), trainable=False, name="x")
        w = fg.Variable((2, 3), init=True, name="w")
        v = fg.Variable((1, 2), init=True, name="v")
        loss = fg.ops.Dot(fg.ops.MatMul(v, fg.ops.MatMul(w, x)),
                          fg.ops.MatMul(v, fg.ops.MatMul(w, x)))
    return graph, x, w, v, loss


def test_a_thawed_parameters_value_follows_its_updates():
    """A frozen parameter is written in place again once thawed: its value is no cached
    snapshot (NO4: the snapshot kept when not trainable, read stale after the thaw)."""
    graph, x, w, v, loss = _frozen_model()
    optimizer = fg.optimizer.GradientDescent(graph, loss, 0.1)
    x.set_value(np.ones((4, 3, 1)))
    w.trainable = False
    np.testing.assert_array_equal(w.value, w.flat.reshape(2, 3))  # read while frozen
    w.trainable = True
    optimizer.one_step()
    optimizer.update()
    np.testing.assert_array_equal(w.value, w.flat.reshape(2, 3))


def test_a_frozen_parameter_is_saved_and_loaded_as_a_parameter(tmp_path):
    """Frozen is not an input: the saved graph makes it a parameter again, with its value
    (NO9: config() gave trainable=False, so it came back as an input)."""
    graph, x, w, v, loss = _frozen_model()
    w.trainable = False
    path = tmp_path / "model.fgz"
    fg.saver.save(path, graph)
    loaded, _ = fg.saver.load(path)
    twin = loaded.get_node("w")
    assert not twin.is_input
    np.testing.assert_array_equal(twin.value, w.value)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_a_frozen_parameter_takes_an_np_matrix_as_a_parameter_does():
    """The np.matrix rule (one sample, never a batch) is the inputs'; a frozen parameter
    says what shape it expects (NO10: it got the inputs' message)."""
    graph, x, w, v, loss = _frozen_model()
    w.trainable = False
    with pytest.raises(ValueError, match=r"expected a value of shape \(2, 3\)"):
        w.set_value(np.asmatrix(np.ones((3, 2))))
    w.set_value(np.asmatrix(np.full((2, 3), 2.0)))
    np.testing.assert_array_equal(w.value, np.full((2, 3), 2.0))


def test_every_parameter_frozen_is_said_at_every_step_not_only_the_first():
    """A second one_step() after the refusal must not step the frozen parameters with the
    plan of before (OP9: the structure was noted as looked at, so the next step skipped
    the check and trained the frozen w)."""
    with fg.Graph(seed=0) as graph:
        x = fg.Variable((3, 1), trainable=False)
        w = fg.Variable((1, 3), init=True)
        out = fg.ops.MatMul(w, x)
    optimizer = fg.optimizer.GradientDescent(graph, out, 0.1)
    x.set_value(np.ones((2, 3, 1)))
    optimizer.one_step()
    optimizer.update()
    w.trainable = False
    before = w.flat.copy()
    for _ in range(2):
        with pytest.raises(ValueError, match=r"^MatMul:2 depends on no trainable Variable "):
            optimizer.one_step()
    with pytest.raises(RuntimeError):
        optimizer.update()
    np.testing.assert_array_equal(w.flat, before)


def test_a_frozen_parameter_is_no_input_of_set_values_or_batches_or_the_article_trainer():
    """Frozen (trainable=False set later) is still a parameter: no batch is fed into it
    (FE3: set_values took it as an input; BA9: Batches.feed did; AT3: the article trainer
    took it as input_x, then refused it for another reason)."""
    from fastgraph.datasets import Batches
    from fastgraph.trainer import SimpleTrainer

    with fg.Graph(dtype=np.float64, seed=0) as graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        label = fg.Variable((2, 1), trainable=False, name="label")
        w = fg.Variable((2, 1), init=True, name="w")
        b = fg.Variable((2, 1), init=True, name="b")
        loss = fg.ops.loss.CrossEntropyWithSoftMax(fg.ops.Add(fg.ops.Add(x, w), b), label,
                                                   name="loss")
    w.trainable = False
    before = w.flat.copy()
    with pytest.raises(ValueError, match=r"^set_values: 'w' is not an input"):
        fg.set_values([w], np.ones((1, 3, 2, 1)))
    features = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match=r"^Batches\.feed: 'w' is not an input"):
        next(Batches(features, np.zeros(4, np.int64), 2, classes=2).feed(w, label))
    np.testing.assert_array_equal(w.flat, before)
    optimizer = fg.optimizer.Adam(graph, loss, 0.05)
    with pytest.raises(TypeError, match=r"^input_x: the parameter w is not an input node"):
        SimpleTrainer([w], label, loss, optimizer, epoches=1)


def test_a_batch_size_beyond_the_data_set_later_takes_no_memory_for_it():
    """The setter, as the constructor, lays out buffers of no more rows than the data (BA5:
    rows of batch_size: a MemoryError for 10**12)."""
    from fastgraph.datasets import Batches

    features = np.arange(30, dtype=np.float32).reshape(10, 3)
    batches = Batches(features, np.arange(10) % 3, 4, classes=3, shuffle=False)
    batches.batch_size = 10**12
    (x, _), = list(batches)
    np.testing.assert_array_equal(x, features)


def test_a_batch_one_row_longer_than_the_buffers_gets_all_its_rows():
    """An order one sample longer than the data, in one batch: the buffers grow to hold it
    (BA7: grown only when two rows longer; the kernel wrote past the buffer, and the batch
    came back a row short)."""
    from fastgraph.datasets import Batches

    features = np.arange(30, dtype=np.float32).reshape(10, 3)
    labels = np.arange(10) % 3
    batches = Batches(features, labels, 11, classes=3, shuffle=False)
    order = np.array([*range(10), 0])
    (x, y), = list(batches.iterate(order))
    np.testing.assert_array_equal(x, features[order])
    np.testing.assert_array_equal(y, np.eye(3, dtype=np.float32)[labels[order]])


def _quiet():
    import contextlib
    import io

    return contextlib.redirect_stdout(io.StringIO())


def test_the_article_trainer_refuses_one_sample_fewer_than_a_batch():
    """batch_size - 1 samples: still no update() (AT5: refused only below batch_size - 1)."""
    from fastgraph.trainer import SimpleTrainer

    with fg.Graph(dtype=np.float64, seed=0) as graph:
        x = fg.Variable((2, 1), trainable=False, name="x")
        label = fg.Variable((2, 1), trainable=False, name="label")
        loss = fg.ops.loss.CrossEntropyWithSoftMax(fg.layer.fc(x, 2, 2, None), label)
    optimizer = fg.optimizer.Adam(graph, loss, 0.05)
    features = np.random.default_rng(0).normal(size=(7, 2))
    labels = np.eye(2)[(features[:, 0] > 0).astype(int)]
    trainer = SimpleTrainer([x], label, loss, optimizer, epoches=1, batch_size=8)
    with _quiet(), pytest.raises(ValueError, match=r"^batch_size 8 is more than the 7 "):
        trainer.train({"x": features}, labels)
    assert optimizer.steps == 0


def test_the_article_saver_writes_an_unshaped_weldings_dim_as_null(tmp_path):
    """The file says the Welding has no shape yet (SA3: dim [] written, a shape of no
    axes)."""
    import json

    from fastgraph.trainer import Saver

    with fg.Graph(dtype=np.float64, seed=0) as graph:
        fg.Variable((1, 2), init=True, name="w")
        fg.ops.Welding(name="free")
    with _quiet():
        Saver(tmp_path).save(graph)
    nodes = json.loads((tmp_path / "model.json").read_text())["graph"]
    assert [node["dim"] for node in nodes if node["name"] == "free"] == [None]


def test_the_article_saver_names_its_folder_become_a_file_since_it_was_made(tmp_path):
    """root_dir checked by the constructor, made by save(): a file put there since is named
    by save() as the constructor names it (SA4: an OSError of the folder's mkdir)."""
    from fastgraph.trainer import Saver

    with fg.Graph(seed=0) as graph:
        fg.Variable((1, 2), init=True, name="w")
    saver = Saver(tmp_path / "models")
    (tmp_path / "models").write_text("not a folder")
    with _quiet(), pytest.raises(ValueError, match=r"^Saver: root_dir .*models: is a file; "
                                 r"expected a folder"):
        saver.save(graph)


def test_the_article_saver_loads_into_a_frozen_parameter(tmp_path):
    """A frozen parameter is a parameter: its saved value is restored into it (SA7: refused
    as 'a Variable, not a parameter')."""
    from fastgraph.trainer import Saver

    with fg.Graph(dtype=np.float64, seed=0) as graph:
        w = fg.Variable((1, 2), init=True, name="w")
    with _quiet():
        Saver(tmp_path).save(graph)
    with fg.Graph(dtype=np.float64, seed=1) as other:
        twin = fg.Variable((1, 2), init=True, name="w")
    twin.trainable = False
    with _quiet():
        Saver(tmp_path).load(other)
    np.testing.assert_array_equal(twin.value, w.value)


def test_every_option_of_the_convolution_operators_is_fixed():
    """Each option the compiled passes were recorded with is fixed, not MaxPool2D's stride
    alone (CV1: Conv2D.padding, CV3: Conv2D.stride, CV2: MaxPooling.size assignable)."""
    with fg.Graph(dtype=np.float64):
        image = fg.Variable((16, 1), trainable=False)
        kernel = fg.Variable((1, 4), init=True)
        conv = fg.ops.Conv2D(image, kernel, image_shape=(4, 4), kernel_size=(2, 2))
        pooled = fg.ops.MaxPooling(fg.Variable((4, 4), trainable=False), size=(2, 2),
                                   stride=(2, 2))
    for node, name, value in ((conv, "padding", 1), (conv, "stride", 2),
                              (conv, "kernel_size", (1, 1)), (conv, "image_shape", (2, 8)),
                              (pooled, "size", (1, 1)), (pooled, "stride", (1, 1))):
        before = getattr(node, name)
        with pytest.raises(AttributeError, match=rf"^{name} of {node.name} is fixed when the "
                           r"node is made"):
            setattr(node, name, value)
        assert getattr(node, name) == before


def test_a_feed_of_an_order_longer_than_the_data_fills_whole_batches():
    """Batches.feed gathers a batch larger than its buffers into larger ones, as iterate
    does (BA13: sliced to the buffers' rows, the kernel wrote past them)."""
    from fastgraph.datasets import Batches

    features = np.arange(30, dtype=np.float32).reshape(10, 3)
    labels = np.arange(10) % 3
    with fg.Graph() as graph:
        x = fg.Variable((3, 1), trainable=False)
        one_hot = fg.Variable((3, 1), trainable=False)
    order = np.array([*range(10), 9, 8])
    feed = Batches(features, labels, 12, classes=3, shuffle=False).feed(x, one_hot, order)
    assert next(feed) == 12
    np.testing.assert_array_equal(x.value.reshape(12, 3), features[order])
    np.testing.assert_array_equal(one_hot.value.reshape(12, 3),
                                  np.eye(3, dtype=np.float32)[labels[order]])
    assert graph.node_count() == 2


def test_graph_nodes_assigned_an_empty_tuple_clears_as_an_empty_list_does():
    """graph.nodes = () is graph.nodes = [] (GR25: a TypeError for the tuple)."""
    graph, q, r = _one_sample_relu()
    graph.nodes = ()
    assert graph.nodes == [] and graph.node_count() == 0


def test_viz_draws_a_frozen_parameter_as_a_parameter():
    """Frozen is still a parameter: drawn in the parameters' colour (VI1: the inputs')."""
    from fastgraph import viz

    graph, x, w, v, loss = _frozen_model()
    w.trainable = False
    lines = viz.to_dot(graph).splitlines()
    drawn = {name: next(line for line in lines if f'label="{name}\\n' in line)
             for name in ("x", "w", "v")}
    assert '#cfe2f3' in drawn["w"] and '#cfe2f3' in drawn["v"] and '#d9ead3' in drawn["x"]
