"""The article's SimpleTrainer (fastgraph.article_trainer) refuses, by name and when it is
built or given data, what ended in an AttributeError, a ZeroDivisionError, NumPy's words or a
misleading "has no value" / "try a lower learning rate" (a bad-input sweep)."""

import contextlib
import io

import numpy as np
import pytest

import fastgraph as ms
from fastgraph.trainer import SimpleTrainer


def _problem(n=60):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n, 4))
    return features, np.where(features[:, 0] + features[:, 1] > 0, 1, -1)


def _graph(dtype=np.float64, constant=False):
    graph = ms.Graph(dtype=dtype, seed=0)
    with graph:
        x = ms.core.Variable(dim=(4, 1), init=False, trainable=False, name="x")
        label = ms.core.Variable(dim=(1, 1), init=False, trainable=False, name="label")
        output = ms.layer.fc(x, 4, 1, None)
        if constant:  # the bias as the article's convolution layer makes it
            ones = ms.core.Variable(dim=(1, 1), init=False, trainable=False, name="ones")
            ones.set_value(np.asmatrix(np.ones((1, 1))))
            bias = ms.core.Variable(dim=(1, 1), init=True, trainable=True)
            output = ms.ops.Add(output, ms.ops.ScalarMultiply(bias, ones))
        predict = ms.ops.Logistic(output, name="predict")
        product = ms.ops.Multiply(label, output, name="product")
        loss = ms.ops.loss.LogLoss(product, name="loss")
        optimizer = ms.optimizer.Adam(graph, loss, 0.05)
    return dict(graph=graph, x=x, label=label, output=output, predict=predict,
                product=product, loss=loss, optimizer=optimizer)


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


# 1. loss_op and the nodes: of the optimizer's graph, what its one_step computes

def test_loss_op_must_be_computed_by_the_optimizer():
    """predict (not on the loss's tape) gave "'NoneType' object has no attribute 'sum'"."""
    g = _graph()
    with pytest.raises(ValueError, match=r"loss_op: predict is not computed by the "
                                         r"optimizer's one_step\(\), which computes loss"):
        SimpleTrainer([g["x"]], g["label"], g["predict"], g["optimizer"], epoches=1)
    with pytest.raises(TypeError, match="loss_op must be a node, got 'loss'"):
        SimpleTrainer([g["x"]], g["label"], "loss", g["optimizer"], epoches=1)


def test_loss_op_of_another_graph_is_refused():
    """It gave "'NoneType' object has no attribute 'sum'" at the first batch."""
    g, other = _graph(), _graph()
    with pytest.raises(ValueError, match="loss_op: loss is a node of another graph than the "
                                         "optimizer's"):
        SimpleTrainer([g["x"]], g["label"], other["loss"], g["optimizer"], epoches=1)


def test_a_node_on_the_optimizers_tape_is_a_loss_op_it_takes():
    features, labels = _problem()
    g = _graph()
    trainer = SimpleTrainer([g["x"]], g["label"], g["product"], g["optimizer"], epoches=1,
                            batch_size=8, print_iteration_interval=7)
    with _quiet() as out:
        trainer.train({"x": features}, labels)
    assert "iteration [6] finished" in out.getvalue()


@pytest.mark.parametrize("role", ["input_x", "input_y"])
def test_inputs_of_another_graph_are_refused(role):
    """An input x of another graph gave "x has no value: call x.set_value() before
    computing" the loss."""
    g, other = _graph(), _graph()
    nodes = {"input_x": [g["x"]], "input_y": g["label"]}
    nodes[role] = [other["x"]] if role == "input_x" else other["label"]
    name = "x" if role == "input_x" else "label"
    with pytest.raises(ValueError, match=f"{role}: {name} is a node of another graph than the "
                                         "optimizer's"):
        SimpleTrainer(nodes["input_x"], nodes["input_y"], g["loss"], g["optimizer"],
                      epoches=1)


def test_inputs_must_be_input_nodes():
    g = _graph()
    parameter = g["optimizer"].params[0]
    with pytest.raises(TypeError, match=f"input_x: the parameter {parameter.name} is not an "
                                        r"input node \(a Variable with trainable=False\)"):
        SimpleTrainer([g["x"], parameter], g["label"], g["loss"], g["optimizer"], epoches=1)
    with pytest.raises(TypeError, match=r"input_y: product \(Multiply\) is not an input node"):
        SimpleTrainer([g["x"]], g["product"], g["loss"], g["optimizer"], epoches=1)
    with pytest.raises(TypeError, match="input_x must be a list of input nodes, got Variable"):
        ms.trainer.ArticleSimpleTrainer(g["x"], g["label"], g["loss"], g["optimizer"],
                                        epoches=1)


def test_inputs_are_not_given_twice():
    """The label in input_x too trained on the labels, its data ignored, without a word."""
    g = _graph()
    with pytest.raises(ValueError, match="input_y: label is in input_x too"):
        SimpleTrainer([g["x"], g["label"]], g["label"], g["loss"], g["optimizer"], epoches=1)
    with pytest.raises(ValueError, match="input_x: two inputs are named 'x'"):
        SimpleTrainer([g["x"], g["x"]], g["label"], g["loss"], g["optimizer"], epoches=1)


def test_optimizer_and_metrics_must_be_of_the_graph():
    g, other = _graph(), _graph()
    with pytest.raises(TypeError, match=r"optimizer: 'adam' is not an optimizer "
                                        r"\(fastgraph.optimizer"):
        SimpleTrainer([g["x"]], g["label"], g["loss"], "adam", epoches=1)
    accuracy = ms.ops.metrics.Accuracy(other["output"], other["label"], name="accuracy")
    with pytest.raises(ValueError, match="metrics_ops: accuracy is a node of another graph "
                                         "than the optimizer's"):
        SimpleTrainer([g["x"]], g["label"], g["loss"], g["optimizer"], epoches=1,
                      metrics_ops=[accuracy])


# 2. the keyword options

@pytest.mark.parametrize("option", ["print_iteration_interval", "eval_batch_size"])
@pytest.mark.parametrize("value, message", [
    (0, "must be at least 1, got 0"),  # ZeroDivisionError; range() arg 3 must not be zero
    (-1, "must be at least 1, got -1"),  # eval_batch_size: Accuracy: n/a, silently
    (2.5, "must be a positive integer, got 2.5"),  # a TypeError from range()
    (None, "must be a positive integer, got None"),
])
def test_keyword_options_are_checked(option, value, message):
    g = _graph()
    with pytest.raises(ValueError, match=f"{option} {message}"):
        SimpleTrainer([g["x"]], g["label"], g["loss"], g["optimizer"], epoches=1,
                      **{option: value})


def test_keyword_options_take_integral_numbers():
    features, labels = _problem()
    g = _graph()
    accuracy = ms.ops.metrics.Accuracy(g["output"], g["label"])
    trainer = SimpleTrainer([g["x"]], g["label"], g["loss"], g["optimizer"], epoches=1,
                            metrics_ops=[accuracy], eval_batch_size=7.0)
    assert trainer.eval_batch_size == 7 and trainer.print_iteration_interval == 100
    with _quiet() as out:
        trainer.eval({"x": features}, labels)
    assert "Accuracy: 0." in out.getvalue() or "Accuracy: 1." in out.getvalue()


# 3. the data

def test_ragged_data_are_refused_by_name():
    """NumPy's "setting an array element with a sequence" came out of the finite check."""
    features, labels = _problem()
    g = _graph()
    trainer = SimpleTrainer([g["x"]], g["label"], g["loss"], g["optimizer"], epoches=1)
    rows = [list(row) for row in features]
    rows[3] = rows[3][:2]
    with pytest.raises(ValueError, match="train data 'x' are not an array: their samples "
                                         "differ in shape"):
        trainer.train({"x": rows}, labels)
    with pytest.raises(ValueError, match="test data 'labels' are not an array"):
        trainer.eval({"x": features}, [[1], [1, 2], *labels[2:, None].tolist()])
    with pytest.raises(ValueError, match="train data 'labels' hold one number, not samples"):
        trainer.train({"x": features}, 1)


def test_data_infinite_in_the_graphs_dtype_are_refused_before_training():
    """float64 data finite but infinite in a float32 graph ended in TrainingDiverged, "try a
    lower learning rate"; the README says the article trainer refuses them up front."""
    features, labels = _problem()
    g = _graph(dtype=np.float32)
    before = [param.value.copy() for param in g["optimizer"].params]
    trainer = SimpleTrainer([g["x"]], g["label"], g["loss"], g["optimizer"], epoches=1)
    big = features.copy()
    big[5, 2] = -1e300
    with pytest.raises(ValueError, match=r"train data 'x' hold -1e\+300 \(sample 5\), which is "
                                         r"infinite in float32: training needs finite numbers"):
        with _quiet():
            trainer.train_and_eval({"x": big}, labels)
    with pytest.raises(ValueError, match=r"train data 'labels' hold 1e\+39 \(sample 0\), which "
                                         r"is infinite in float32"):
        trainer.train({"x": features}, np.r_[1e39, labels[1:]])
    for param, value in zip(g["optimizer"].params, before):
        np.testing.assert_array_equal(param.value, value)
    # the largest float32 is taken; in a float64 graph 1e300 is a number like another
    edge = features.astype(np.float32).astype(np.float64)
    edge[0, 0] = float(np.finfo(np.float32).max)
    trainer._check_data({"x": edge}, labels, "train")
    g = _graph()
    SimpleTrainer([g["x"]], g["label"], g["loss"], g["optimizer"], epoches=1)._check_data(
        {"x": features * 1e300}, labels, "train")


def test_constant_inputs_still_repeated_with_the_checks():
    features, labels = _problem()
    g = _graph(constant=True)
    accuracy = ms.ops.metrics.Accuracy(g["output"], g["label"])
    trainer = SimpleTrainer([g["x"]], g["label"], g["loss"], g["optimizer"], epoches=2,
                            batch_size=16, eval_on_train=True, metrics_ops=[accuracy],
                            eval_batch_size=25)
    with _quiet() as out:
        trainer.train_and_eval({"x": features.tolist()}, labels.tolist(), {"x": features},
                               labels)
    assert "Epoch [2] evaluation metrics Accuracy: " in out.getvalue()


def test_options_the_article_trainer_ignores_are_named_in_a_warning():
    """The article's chapter 9 programs pass ``batch=16``: trained with batch 8, silently,
    and a misspelt ``metric_ops=`` turned evaluation off without a word (helper hF). They
    are still taken (the article's programs pass them), with a warning naming each."""
    g = _graph()
    with pytest.warns(UserWarning, match=r"ignores 'batch' \(did you mean batch_size\?\), "
                                         r"'metric_ops' \(did you mean metrics_ops\?\)"):
        trainer = SimpleTrainer([g["x"]], g["label"], g["loss"], g["optimizer"], epoches=1,
                                batch=16, metric_ops=[])
    assert trainer.batch_size == 8 and trainer.metrics_ops == []
    with pytest.warns(UserWarning, match=r"ignores 1 more positional argument;"):
        SimpleTrainer([g["x"]], g["label"], g["loss"], g["optimizer"], 1, 8, False, None,
                      "extra")


def test_the_options_the_article_trainer_reads_give_no_warning(recwarn):
    g = _graph()
    SimpleTrainer([g["x"]], g["label"], g["loss"], g["optimizer"], epoches=1, batch_size=4,
                  print_iteration_interval=10, eval_batch_size=16)
    assert not [w for w in recwarn if "SimpleTrainer" in str(w.message)]


def test_an_argument_given_by_place_and_by_name_is_named():
    """The article's chapter 9 deepfm_titanic passes its output node before the loss, so its
    ``epoches=`` met the optimizer in epoches' place: Python's "got multiple values for
    argument 'epoches'" (as in MatrixSlow) said nothing of which (helper hF)."""
    g = _graph()
    with pytest.raises(TypeError, match=r"epoches is given by name and as argument 5; .* read "
                                        r"input_x=\[x\], input_y=label, loss_op=predict, "
                                        r"optimizer=loss, epoches=the optimizer Adam:"):
        SimpleTrainer([g["x"]], g["label"], g["predict"], g["loss"], g["optimizer"],
                      epoches=1)


@pytest.mark.parametrize("name", ["DistTrainerParameterServer", "DistTrainerRingAllReduce"])
def test_the_articles_distributed_trainers_are_refused_naming_what_stands_in(name):
    """Chapter 11's programs import them: "cannot import name" said nothing of why
    (helper hF); other missing names still raise AttributeError."""
    with pytest.raises(ImportError, match=rf"fastgraph.trainer has no {name}: .* "
                                          r"fastgraph.distributed.DataParallel"):
        exec(f"from fastgraph.trainer import {name}", {})
    with pytest.raises(AttributeError, match="has no attribute 'DistTrainer'"):
        ms.trainer.DistTrainer  # noqa: B018


def test_a_subclass_with_its_own_signature_and_options_is_left_to_it(recwarn):
    """A trainer of the article's kind with its own first argument and options (as its
    chapter 11 trainers add ``cluster_conf``) was held to SimpleTrainer's signature and
    warned of options it reads (helper hH)."""
    from fastgraph.article_trainer import Trainer

    class Distributed(Trainer):
        def __init__(self, cluster, *args, cluster_conf=None, **kargs):
            self.cluster, self.cluster_conf = cluster, cluster_conf
            super().__init__(*args, **kargs)

    g = _graph()
    trainer = Distributed("ps", [g["x"]], g["label"], g["loss"], g["optimizer"], 1,
                          batch_size=4, cluster_conf={"workers": 2})
    assert trainer.batch_size == 4 and trainer.cluster_conf == {"workers": 2}
    assert not [w for w in recwarn if "SimpleTrainer" in str(w.message)]
