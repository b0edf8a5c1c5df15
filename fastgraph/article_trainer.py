"""The article's trainer and saver (``ms.trainer.SimpleTrainer``, ``ms.trainer.Saver``).

``SimpleTrainer(input_x, input_y, loss_op, optimizer, epoches, batch_size=8,
eval_on_train=False, metrics_ops=None)`` takes data as the article does, ``{input name:
array}`` (``x.name``, not the node ``x``) with one sample per row, and each sample in the
shape the article gives a node (``np.mat(sample).T``: a row of n numbers is a column
(n, 1), a matrix is transposed). ``metrics_ops`` is a list of metric nodes (or one). It
feeds whole batches instead of one sample per ``one_step()``: one batch of ``batch_size``
samples then ``update()`` gives what the article's ``batch_size`` single-sample steps give,
through the batched engine. A last partial batch is accumulated into the next epoch's
first update, as in the article (fewer training samples than ``batch_size`` are refused:
no ``update()`` would ever run). Metric nodes (``ops.metrics``) are fed batch by batch too.
An input that the trainer is not given and that holds one sample (a constant of the
program, such as the ``ones`` that the article's convolution layer sets once) keeps that
sample for every sample of a batch, as it does for every ``one_step()`` of the article's
loop; it holds its one sample again when ``train`` or ``eval`` returns.
The nodes are checked when it is built: ``input_x`` (a list) and ``input_y`` input nodes
of the optimizer's graph that its target (the loss) reads, ``loss_op`` a node that the
optimizer's ``one_step()`` computes (its target); the data when given: arrays of finite
numbers, finite in the graph's dtype too (float64 data for a float32 graph).

``Saver(root_dir).save(...)`` writes the article's two files, the graph as JSON and the
parameters as ``.npz``; ``load(...)`` restores them into a graph, creating the nodes it
lacks. It is ``fastgraph.saver.Saver`` (see there: both files written before either is
replaced, a pair from two saves refused, nothing in the graph changed by a load it refuses).
"""

import contextlib
import difflib
import math
import time
import warnings

import numpy as np

from . import checks
from .node import Node, Variable
from .saver import Saver as Saver  # the article's Saver, re-exported (fastgraph.trainer)

#: The options the article's trainer reads, and those of its signature.
_READ_OPTIONS = ("print_iteration_interval", "eval_batch_size")
_SIGNATURE = ("input_x", "input_y", "loss_op", "optimizer", "epoches", "batch_size",
              "eval_on_train", "metrics_ops")


def _warn_ignored(args, kargs):
    """The article's trainer takes any further arguments and reads none of them; a
    misspelt option (the article's own ``batch=16``, ``metric_ops=``) then trained with the
    default in silence. They are still taken, as the article's programs pass them, with a
    warning that names each and the option it may have meant."""
    ignored = [f"{len(args)} more positional argument{'s' * (len(args) > 1)}"] if args else []
    for name in kargs:
        if name not in _READ_OPTIONS:
            near = difflib.get_close_matches(name, _SIGNATURE + _READ_OPTIONS, n=1)
            ignored.append(f"{name!r}" + (f" (did you mean {near[0]}?)" if near else ""))
    if ignored:
        warnings.warn(f"SimpleTrainer: the article's trainer ignores {', '.join(ignored)}; "
                      f"it takes {', '.join(_SIGNATURE)} and the options "
                      f"{', '.join(_READ_OPTIONS)}", stacklevel=4)


def _described(argument):
    """A node by its name, a list of nodes by theirs, an optimizer by its class."""
    if isinstance(argument, (list, tuple)):
        return "[" + ", ".join(map(_described, argument)) + "]"
    if isinstance(argument, Node):
        return argument.name
    if hasattr(argument, "one_step"):
        return f"the optimizer {type(argument).__name__}"
    return f"{argument!r:.40}"


class Trainer:
    """The article's trainer; ``SimpleTrainer`` is the one to use (see the module doc)."""

    def __new__(cls, *args, **kargs):
        # An argument given by place and by name ended in Python's "got multiple values for
        # argument 'epoches'" (the article's chapter 9 deepfm_titanic passes its output node
        # before the loss: each argument then lands one place late). A subclass with its own
        # __init__ has its own signature: Python's error is its.
        for name in kargs if cls.__init__ is Trainer.__init__ else ():
            if name in _SIGNATURE[:len(args)]:
                place = _SIGNATURE.index(name)
                given = ", ".join(f"{_SIGNATURE[k]}={_described(a)}"
                                  for k, a in enumerate(args[:place + 1]))
                raise TypeError(
                    f"SimpleTrainer: {name} is given by name and as argument {place + 1}; the "
                    f"article's trainer takes ({', '.join(_SIGNATURE)}), so the arguments "
                    f"given by place read {given}: is one of them one too many?")
        return super().__new__(cls)

    def __init__(self, input_x, input_y, loss_op, optimizer, epoches, batch_size=8,
                 eval_on_train=False, metrics_ops=None, *args, **kargs):
        graph = self._check_nodes(input_x, input_y, loss_op, optimizer)
        self.inputs = list(input_x)
        self._constants = {}  # while training or evaluating: see _constants_held
        self.input_y = input_y
        self.loss_op = loss_op
        self.optimizer = optimizer
        self._dtype = graph.dtype  # the data must be finite in it (_check_data)
        self.epoches = checks.positive_integer("epoches", epoches)  # -1 trained 0 silently
        self.epoch = 0
        self.batch_size = checks.positive_integer("batch_size", batch_size)  # 2.9 became 2
        self.eval_on_train = checks.flag("eval_on_train", eval_on_train)  # "no" was true
        if isinstance(metrics_ops, Node):  # one metric: "'Accuracy' object is not iterable"
            metrics_ops = [metrics_ops]
        self.metrics_ops = list(metrics_ops or [])
        for op in self.metrics_ops:  # found only after a whole epoch otherwise
            if not all(callable(getattr(op, name, None)) for name in ("reset", "value_str")):
                raise TypeError(f"metrics_ops: {getattr(op, 'name', op)!s:.60} is not a metric "
                                "node (fastgraph.ops.metrics: Accuracy, Precision, ...)")
            if getattr(op, "graph", graph) is not graph:  # "x has no value" in eval()
                raise ValueError(f"metrics_ops: {op.name} is a node of another graph than the "
                                 "optimizer's")
        if type(self).__init__ is Trainer.__init__:  # (a subclass may read more options)
            _warn_ignored(args, kargs)
        self.print_iteration_interval = checks.positive_integer(  # 0: ZeroDivisionError
            "print_iteration_interval", kargs.get("print_iteration_interval", 100))
        self.eval_batch_size = checks.positive_integer(  # -1 evaluated nothing, silently
            "eval_batch_size", kargs.get("eval_batch_size", 1024))

    @staticmethod
    def _check_nodes(input_x, input_y, loss_op, optimizer):
        """The optimizer's graph, once every node given is of it: the inputs input nodes
        (Variables with trainable=False), loss_op a node the optimizer's ``one_step()``
        computes. A node of another graph gave "x has no value" or an AttributeError at the
        first batch, a loss_op that one_step does not compute an AttributeError."""
        target = getattr(optimizer, "target", None)
        if not isinstance(target, Node):
            raise TypeError(f"optimizer: {optimizer!r:.60} is not an optimizer "
                            "(fastgraph.optimizer: GradientDescent, Adam, ...)")
        graph = target.graph
        if not isinstance(input_x, (list, tuple)):
            raise TypeError(f"input_x must be a list of input nodes, got "
                            f"{type(input_x).__name__}")
        for role, node in [*(("input_x", node) for node in input_x), ("input_y", input_y)]:
            if not (isinstance(node, Variable) and node.is_input):
                what = (f"the parameter {node.name}" if isinstance(node, Variable) else
                        f"{node.name} ({type(node).__name__})" if isinstance(node, Node)
                        else f"{node!r:.60}")
                raise TypeError(f"{role}: {what} is not an input node (a Variable with "
                                "trainable=False)")
            if node.graph is not graph:
                raise ValueError(f"{role}: {node.name} is a node of another graph than the "
                                 "optimizer's")
        names = [node.name for node in input_x]
        for name in names:
            if names.count(name) > 1:  # the data's dict holds one array for both
                raise ValueError(f"input_x: two inputs are named {name!r}")
        if any(node is input_y for node in input_x):  # its data were overwritten by the labels
            raise ValueError(f"input_y: {input_y.name} is in input_x too")
        if not isinstance(loss_op, Node):
            raise TypeError(f"loss_op must be a node, got {loss_op!r:.60}")
        if loss_op.graph is not graph:
            raise ValueError(f"loss_op: {loss_op.name} is a node of another graph than the "
                             "optimizer's")
        tape = graph.tape(target)
        if not any(node is loss_op for node in tape.nodes):
            raise ValueError(f"loss_op: {loss_op.name} is not computed by the optimizer's "
                             f"one_step(), which computes {target.name} (give the optimizer's "
                             "target)")
        for role, node in [*(("input_x", node) for node in input_x), ("input_y", input_y)]:
            if not any(read is node for read in tape.inputs):  # its data would go nowhere
                reads = ", ".join(read.name for read in tape.inputs) or "no input"
                raise ValueError(f"{role}: {node.name} is not read by the loss {target.name} "
                                 f"(it reads {reads}): the data fed to {node.name} would go "
                                 "nowhere")
        return graph

    def train_and_eval(self, train_x, train_y, test_x=None, test_y=None):
        """Train ``epoches`` epochs, evaluating the metrics on the test set after each one
        when ``eval_on_train``."""
        self._check_train_data(train_x, train_y)
        if test_x is not None and test_y is not None:
            self._check_data(test_x, test_y, "test")
        self._variable_weights_init()
        print("[INIT] Variable weights init finished")
        self.main_loop(train_x, train_y, test_x, test_y)

    def main_loop(self, train_x, train_y, test_x, test_y):
        for epoch in range(self.epoches):
            self.epoch = epoch
            self.train(train_x, train_y)
            if self.eval_on_train and test_x is not None and test_y is not None:
                self.eval(test_x, test_y)

    def train(self, train_x, train_y):
        """One epoch over ``train_x`` (``{input name: samples}``) and ``train_y``."""
        size = self._check_train_data(train_x, train_y)
        print(f"- Epoch [{self.epoch + 1}] train start, batch size: {self.batch_size}, "
              f"train data size: {size}")
        began = time.time()
        with self._constants_held([self.optimizer.target]):  # what one_step computes
            self._train_batches(train_x, train_y, size, began)

    def _train_batches(self, train_x, train_y, size, began):
        last_print = began
        for start in range(0, size, self.batch_size):
            stop = min(start + self.batch_size, size)
            self._feed(train_x, train_y, start, stop)
            self.optimizer.one_step()
            self._check_loss(start, stop)
            for i in range(start, stop):
                if (i + 1) % self.print_iteration_interval == 0:
                    loss = float(self.loss_op.flat[i - start].sum())  # sample i's own loss
                    print(f"-- iteration [{i}] finished, time cost: "
                          f"{time.time() - last_print:.2f}  and loss value: {loss:4f}")
                    last_print = time.time()
            if stop - start == self.batch_size:
                self._optimizer_update()
        print(f"- Epoch [{self.epoch + 1}] train finished, time cost: "
              f"{time.time() - began:.2f}")

    def _check_loss(self, start, stop):
        """Stop as ``fastgraph.trainer.SimpleTrainer`` does when a batch's loss is NaN or
        infinite, before ``update()`` applies anything: a diverged model computes nothing
        that means anything (it went on, and ended with NaN weights, without a word)."""
        loss = float(self.loss_op.flat.sum())
        if not math.isfinite(loss):
            from .trainer import TrainingDiverged  # (trainer imports this module)

            self.optimizer.discard()  # nothing applied, nor left for a training started again
            raise TrainingDiverged(
                f"training stopped: the loss of samples {start} to {stop - 1} of epoch "
                f"{self.epoch + 1} is {loss} (the model diverged: try a lower learning rate, "
                "or the data hold NaN or infinity)")

    def eval(self, test_x, test_y):
        """Reset the metric nodes, feed them the test set, print their values."""
        size = self._check_data(test_x, test_y, "test")
        for metrics_op in self.metrics_ops:
            metrics_op.reset()
        with self._constants_held(self.metrics_ops):
            for start in range(0, size, self.eval_batch_size):
                self._feed(test_x, test_y, start, min(start + self.eval_batch_size, size))
                for metrics_op in self.metrics_ops:
                    metrics_op.forward()
        line = f"Epoch [{self.epoch + 1}] evaluation metrics "
        print(line + "".join(metrics_op.value_str() for metrics_op in self.metrics_ops))

    def _check_train_data(self, train_x, train_y):
        """The number of training samples, once the data are checked and hold a whole batch
        at least: ``update()`` follows only a whole batch, so with fewer samples than
        ``batch_size`` it never ran, and every epoch ended untrained without a word."""
        size = self._check_data(train_x, train_y, "train")
        if size < self.batch_size:
            raise ValueError(f"batch_size {self.batch_size} is more than the {size} training "
                             f"samples: no update() would run (it follows each whole batch); "
                             f"give a batch_size of {size} or less")
        return size

    def _check_data(self, data_x, data_y, kind):
        if not isinstance(data_x, dict):
            raise TypeError(f"{kind} data must be a dict {{input name: array}}, got "
                            f"{type(data_x).__name__}")
        for key in data_x:  # a node: "'<' not supported between 'Variable' and 'Variable'"
            if not isinstance(key, str):
                got = (f"the node {key.name}" if isinstance(key, Node)
                       else f"{type(key).__name__} {key!r:.60}")
                raise TypeError(f"{kind} data: the keys must be the input nodes' names "
                                f"({{x.name: array}}), got {got}")
        names = sorted(node.name for node in self.inputs)
        if sorted(data_x) != names:
            raise ValueError(f"{kind} data has arrays for {sorted(data_x)}; the trainer's "
                             f"inputs are {names}")
        arrays = {name: checks.as_array(array, f"{kind} data {name!r}")  # ragged: NumPy's words
                  for name, array in [*data_x.items(), ("labels", data_y)]}
        for name, array in arrays.items():
            if array.ndim == 0:
                raise ValueError(f"{kind} data {name!r} hold one number, not samples (one "
                                 "per row)")
        sizes = {name: len(array) for name, array in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"{kind} data disagree on the number of samples: {sizes}")
        if sizes["labels"] == 0:
            raise ValueError(f"{kind} data hold no samples")
        for name, array in arrays.items():
            where = checks.first_non_finite(array)
            if where is not None:
                raise ValueError(f"{kind} data {name!r} hold {array[where]} "
                                 f"(sample {where[0]}): training needs finite numbers")
            where = checks.first_beyond(array, self._dtype)
            if where is not None:  # finite here, infinite once fed: the loss was NaN
                raise ValueError(f"{kind} data {name!r} hold {array[where]} (sample "
                                 f"{where[0]}), which is infinite in {self._dtype.name}: "
                                 "training needs finite numbers")
        return sizes["labels"]

    def _feed(self, data_x, data_y, start, stop):
        for node in self.inputs:
            node.set_value(article_batch(data_x[node.name][start:stop]))
        self.input_y.set_value(article_batch(data_y[start:stop]))
        for node, sample in self._constants.items():  # one sample for every sample
            if node.batch_size != stop - start:
                node.set_value(np.repeat(sample, stop - start, axis=0))

    @contextlib.contextmanager
    def _constants_held(self, targets):
        """While training or evaluating ``targets``: the inputs they read that the trainer
        does not feed and that hold one sample, each with that sample (``_feed`` repeats it
        for a batch), given their one sample back at the end."""
        fed = {id(node) for node in [*self.inputs, self.input_y]}
        constants = {}
        for target in targets:
            for node in target.graph.tape(target).inputs:
                if id(node) not in fed and node.batch_size == 1 and node not in constants:
                    constants[node] = node.flat.reshape(1, *node.dim).copy()  # a batch of 1
        self._constants = constants
        try:
            yield
        finally:
            self._constants = {}
            for node, sample in constants.items():  # one sample, as the article sets it
                node.set_value(np.asmatrix(sample[0]) if sample.ndim == 3 else sample[0])

    def _variable_weights_init(self):
        raise NotImplementedError

    def _optimizer_update(self):
        raise NotImplementedError


class ArticleSimpleTrainer(Trainer):
    """The article's ``SimpleTrainer``: the parameters keep their own initial values, and
    ``update()`` follows each batch."""

    def _variable_weights_init(self):
        pass

    def _optimizer_update(self):
        self.optimizer.update()


def article_batch(samples):
    """Samples stacked as the article shapes each one (``np.mat(sample).T``): a batch
    ``(B, rows, cols)``. Scalars become (1, 1), rows of n numbers (n, 1), matrices their
    transpose."""
    array = np.asarray(samples)
    if array.ndim == 1:
        return array.reshape(-1, 1, 1)
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim == 3:
        return array.transpose(0, 2, 1)
    raise ValueError(f"samples must be numbers, rows or matrices; got shape {array.shape}")
