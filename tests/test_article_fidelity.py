"""What a MatrixSlow user brings along: the pair of files MatrixSlow's own Saver writes, an
operator written the book's way, the article's ``reset_value(recursive)``."""

import json

import numpy as np
import pytest

import fastgraph as ms

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")


def _matrixslow_pair(root, dim_of_x=(3, 1)):
    """model.json + weights.npz as MatrixSlow's Saver writes them: ``"kargs": {}`` (no
    trainable flag), the shape beside it as ``"dim"``, every Variable's value saved, the
    input's sample too (a logistic regression: x, w, b, MatMul, Add, Logistic)."""
    def variable(name, dim, children):
        return {"node_type": "Variable", "name": name, "parents": [], "children": children,
                "kargs": {}, "dim": None if dim is None else list(dim)}

    def operator(kind, name, parents, children):
        return {"node_type": kind, "name": name, "parents": parents, "children": children,
                "kargs": {}, "dim": [1, 1]}

    graph = [variable("Variable:0", dim_of_x, ["MatMul:3"]),
             variable("Variable:1", (1, 3), ["MatMul:3"]),
             variable("Variable:2", (1, 1), ["Add:4"]),
             operator("MatMul", "MatMul:3", ["Variable:1", "Variable:0"], ["Add:4"]),
             operator("Add", "Add:4", ["MatMul:3", "Variable:2"], ["Logistic:5"]),
             operator("Logistic", "Logistic:5", ["Add:4"], [])]
    (root / "model.json").write_text(json.dumps(
        {"meta": {"save_time": "2020-04-22 11:33:59", "weights_file_name": "weights.npz"},
         "service": {}, "graph": graph}))
    w, b, sample = np.array([[0.5, -1.0, 2.0]]), np.array([[0.25]]), np.full((3, 1), 7.0)
    np.savez(root / "weights.npz", **{"Variable:0": sample, "Variable:1": w, "Variable:2": b})
    return w, b, sample


def _logistic(w, b, column):
    return 1 / (1 + np.exp(-(w @ column + b)))


def test_a_pair_matrixslow_saved_loads_into_an_empty_graph(tmp_path):
    """The Variables are built as MatrixSlow builds them (parameters, of the saved shape),
    so its load_example's one-sample feed and forward work."""
    w, b, sample = _matrixslow_pair(tmp_path)
    with ms.Graph(dtype=np.float64, conventions="article"):
        ms.trainer.Saver(str(tmp_path)).load()
        x, predict = ms.get_node_from_graph("Variable:0"), ms.get_node_from_graph("Logistic:5")
        np.testing.assert_array_equal(x.value, sample)
        column = np.array([[4.0], [5.0], [6.0]])
        x.set_value(np.asmatrix(column))
        predict.forward()
        np.testing.assert_allclose(predict.value, _logistic(w, b, column), rtol=1e-15)


def test_a_pair_matrixslow_saved_loads_into_the_graph_rebuilt(tmp_path):
    """An input of the rebuilt graph takes its saved value as its sample (MatrixSlow sets
    it too); the parameters get theirs."""
    w, b, sample = _matrixslow_pair(tmp_path)
    with ms.Graph(dtype=np.float64, conventions="article"):
        x = ms.core.Variable(dim=(3, 1), init=False, trainable=False)
        w_node = ms.core.Variable(dim=(1, 3), init=True, trainable=True)
        b_node = ms.core.Variable(dim=(1, 1), init=True, trainable=True)
        predict = ms.ops.Logistic(ms.ops.Add(ms.ops.MatMul(w_node, x), b_node))
        ms.trainer.Saver(str(tmp_path)).load()
        np.testing.assert_array_equal(w_node.value, w)
        np.testing.assert_array_equal(b_node.value, b)
        predict.forward()
        np.testing.assert_allclose(predict.value, _logistic(w, b, sample), rtol=1e-15)
        x.set_value(np.ones((5, 3, 1)))  # an input still: it takes batches
        predict.forward()
        assert predict.value.shape == (5, 1, 1)


def _matrixslow_relu_pair(root, rng):
    """A 4-5-3 network with a "ReLU" between, as MatrixSlow's Saver writes it (its ReLU
    lets 0.1 of a negative through: ``nslope``), and the function MatrixSlow computes."""
    w1, b1, w2, b2 = (rng.normal(size=shape) for shape in ((5, 4), (5, 1), (3, 5), (3, 1)))

    def node(kind, name, parents, dim):
        return {"node_type": kind, "name": name, "parents": parents, "children": [],
                "kargs": {}, "dim": list(dim)}

    graph = [node("Variable", "Variable:0", [], (4, 1)),
             node("Variable", "Variable:1", [], (5, 4)),
             node("Variable", "Variable:2", [], (5, 1)),
             node("MatMul", "MatMul:3", ["Variable:1", "Variable:0"], (5, 1)),
             node("Add", "Add:4", ["MatMul:3", "Variable:2"], (5, 1)),
             node("ReLU", "ReLU:5", ["Add:4"], (5, 1)),
             node("Variable", "Variable:6", [], (3, 5)),
             node("Variable", "Variable:7", [], (3, 1)),
             node("MatMul", "MatMul:8", ["Variable:6", "ReLU:5"], (3, 1)),
             node("Add", "Add:9", ["MatMul:8", "Variable:7"], (3, 1))]
    (root / "model.json").write_text(json.dumps(
        {"meta": {"save_time": "2020-04-30 00:00:00", "weights_file_name": "weights.npz"},
         "service": {"inputs": {"name": "Variable:0"}, "outputs": {"name": "Add:9"}},
         "graph": graph}))
    np.savez(root / "weights.npz", **{"Variable:0": np.zeros((4, 1)), "Variable:1": w1,
                                      "Variable:2": b1, "Variable:6": w2, "Variable:7": b2})

    def matrixslow(column):
        a = w1 @ column + b1
        return w2 @ np.where(a > 0, a, 0.1 * a) + b2

    return matrixslow


@pytest.mark.parametrize("conventions", ["article", "torch"])
def test_a_relu_matrixslow_saved_computes_what_matrixslow_computes(tmp_path, conventions):
    """MatrixSlow's ReLU is leaky (0.1): loaded as fastgraph's plain ReLU, the model gave
    other outputs than the one saved (up to 1.27 here; 1.2% of an MNIST MLP's predictions
    changed), whatever the graph's conventions (helper hF)."""
    rng = np.random.default_rng(11)
    matrixslow = _matrixslow_relu_pair(tmp_path, rng)
    graph = ms.Graph(dtype=np.float64, conventions=conventions)
    _, service = ms.trainer.Saver(str(tmp_path)).load(to_graph=graph)
    x, out = graph.get_node("Variable:0"), graph.get_node(service["outputs"]["name"])
    assert type(graph.get_node("ReLU:5")) is ms.ops.LeakyReLU
    for column in rng.normal(size=(20, 4, 1)) * 3:  # one at a time, as load_example feeds
        x.set_value(np.asmatrix(column))
        out.forward()
        np.testing.assert_allclose(np.asarray(out.value), matrixslow(column), rtol=1e-12)


def test_a_matrixslow_relu_loaded_onto_a_plain_relu_of_the_graph_is_warned_of(tmp_path):
    """Loaded into a graph that has the node already, as fastgraph's plain ReLU (the
    article's code with ``ops.ReLU``), the saved weights fed another function, silently
    (helper hH: up to 0.39 from MatrixSlow's outputs)."""
    rng = np.random.default_rng(11)
    _matrixslow_relu_pair(tmp_path, rng)
    graph = ms.Graph(dtype=np.float64, conventions="article")
    with graph:
        x = ms.Variable((4, 1), name="Variable:0")
        w1, b1 = ms.Variable((5, 4), name="Variable:1"), ms.Variable((5, 1), name="Variable:2")
        hidden = ms.ops.ReLU(ms.ops.Add(ms.ops.MatMul(w1, x, name="MatMul:3"), b1,
                                        name="Add:4"), name="ReLU:5")
        w2, b2 = ms.Variable((3, 5), name="Variable:6"), ms.Variable((3, 1), name="Variable:7")
        ms.ops.Add(ms.ops.MatMul(w2, hidden, name="MatMul:8"), b2, name="Add:9")
    with pytest.warns(UserWarning, match=r"ReLU:5 is fastgraph's ReLU in this graph, where "
                                         r"MatrixSlow's file saved its own"):
        ms.trainer.Saver(str(tmp_path)).load(to_graph=graph)


def test_a_relu_fastgraph_saved_stays_fastgraphs(tmp_path):
    """Only MatrixSlow's files (no "dtype") take its ReLU: a plain ReLU that fastgraph's
    Saver wrote loads as a plain ReLU."""
    with ms.Graph(dtype=np.float64) as graph:
        x = ms.Variable((2, 1), trainable=False, name="x")
        w = ms.Variable((2, 2), name="w")
        ms.ops.ReLU(ms.ops.MatMul(w, x), name="relu")
    w.set_value(np.array([[1.0, -2.0], [-3.0, 4.0]]))
    ms.trainer.Saver(str(tmp_path)).save(graph)
    loaded = ms.Graph(dtype=np.float64)
    ms.trainer.Saver(str(tmp_path)).load(to_graph=loaded)
    relu = loaded.get_node("relu")
    assert type(relu) is ms.ops.ReLU
    loaded.get_node("x").set_value(np.array([[1.0], [1.0]]))
    relu.forward()
    np.testing.assert_array_equal(np.asarray(relu.value), [[0.0], [1.0]])


def test_a_matrixslow_pair_of_the_wrong_shape_or_none_is_refused(tmp_path):
    _matrixslow_pair(tmp_path, dim_of_x=(4, 1))
    with ms.Graph(dtype=np.float64), pytest.raises(
            ms.saver.ModelFileError, match=r"model\.json: the model does not rebuild \(Variable:0: "
            r"expected a value of shape \(4, 1\), got \(3, 1\)\)"):  # (its weights' shape)
        ms.trainer.Saver(str(tmp_path)).load()
    _matrixslow_pair(tmp_path, dim_of_x=None)  # no shape saved (MatrixSlow's unfed node)
    with ms.Graph(dtype=np.float64) as graph, pytest.raises(
            ms.saver.ModelFileError, match=r"model\.json: the model does not rebuild"):
        ms.trainer.Saver(str(tmp_path)).load()
    assert graph.nodes == []


def test_an_input_value_in_a_fastgraph_file_is_still_refused(tmp_path):
    """Only a Variable without a trainable flag (MatrixSlow's form) may give an input its
    sample: a fastgraph file that says trainable=False and holds a value is two files
    that do not belong together."""
    _matrixslow_pair(tmp_path)
    model = json.loads((tmp_path / "model.json").read_text())
    model["graph"][0]["kargs"] = {"dim": [3, 1], "trainable": False}
    (tmp_path / "model.json").write_text(json.dumps(model))
    with ms.Graph(dtype=np.float64), pytest.raises(
            ms.saver.ModelFileError, match=r"weights\.npz holds values for Variable:0, not "
            r"parameters of model\.json"):
        ms.trainer.Saver(str(tmp_path)).load()


def test_an_operator_written_the_articles_way_is_refused_by_name():
    """The book's operators set self.value in compute() and give get_jacobi(): a fastgraph
    node computes into its buffer, so such a class is refused, naming it and what an
    operator defines (it was a bare NotImplementedError)."""
    class Square(ms.core.Node):
        def compute(self):
            self.value = np.multiply(self.parents[0].value, self.parents[0].value)

        def get_jacobi(self, parent):
            return np.diag(2 * self.parents[0].value.A1)

    class Unfinished(ms.ops.Operator):
        pass

    with ms.Graph() as graph:
        x = ms.core.Variable(dim=(2, 1), trainable=False)
        with pytest.raises(TypeError, match=r"^Square defines no infer_dim\(\): a fastgraph "
                           r"operator subclasses fastgraph\.ops\.Operator and defines "
                           r"infer_dim\(\) .*\(the article's compute\(\) setting self\.value "
                           r"and get_jacobi\(\) are not what it calls\)"):
            Square(x)
        with pytest.raises(TypeError, match=r"^Unfinished defines no infer_dim\(\): .*\(\); "
                           r"see fastgraph/ops for examples$"):
            Unfinished(x)
    assert graph.nodes == [x]


def test_reset_value_takes_the_articles_recursive_argument():
    with ms.Graph(dtype=np.float64):
        x = ms.core.Variable(dim=(2, 1), trainable=False)
        double = ms.ops.Add(x, x)
        total = ms.ops.Add(double, x)
        x.set_value(np.ones((2, 1)))
        total.forward()
        double.reset_value(False)  # the article's False cleared the node alone: here all
        assert double.value is None and total.value is None
        total.forward()
        double.reset_value(recursive=True)
        assert total.value is None
        with pytest.raises(ValueError, match=r"^reset_value: recursive must be True or False"):
            double.reset_value("no")


def test_numpys_seed_makes_the_default_graphs_weights_repeat():
    """The article draws init=True values with np.random.normal: a program that calls
    np.random.seed(0) first gets the same weights at every run. The module-level default
    graph draws from NumPy's global generator too (it had a generator of its own)."""
    default = ms.default_graph
    assert ms.get_default_graph() is default

    def build():
        before = len(default.nodes)
        np.random.seed(0)
        ms.core.Variable((2, 3), init=True)
        ms.layer.fc(ms.core.Variable((3, 1), trainable=False), 3, 2, "None")
        return [node.value for node in default.nodes[before:]
                if isinstance(node, ms.core.Variable) and node.trainable]

    try:
        first, second = build(), build()
        assert len(first) == 3  # the Variable, fc's weights and bias
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a, b)
        np.random.seed(1)
        assert not np.array_equal(ms.core.Variable((2, 3), init=True).value, first[0])
    finally:
        default.clear()
    with ms.Graph(seed=5) as graph:  # a graph of one's own keeps its own seeded generator
        ms.core.Variable((2, 3), init=True)
    assert isinstance(graph.rng, np.random.Generator)
