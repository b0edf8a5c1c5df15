"""The article's trainer and saver (``ms.trainer.SimpleTrainer``, ``ms.trainer.Saver``).

``SimpleTrainer(input_x, input_y, loss_op, optimizer, epoches, batch_size=8,
eval_on_train=False, metrics_ops=None)`` takes data as the article does, ``{input name:
array}`` with one sample per row, and each sample in the shape the article gives a node
(``np.mat(sample).T``: a row of n numbers is a column (n, 1), a matrix is transposed). It
feeds whole batches instead of one sample per ``one_step()``: one batch of ``batch_size``
samples then ``update()`` gives what the article's ``batch_size`` single-sample steps give,
through the batched engine. A last partial batch is accumulated into the next epoch's
first update, as in the article. Metric nodes (``ops.metrics``) are fed batch by batch too.

``Saver(root_dir).save(...)`` writes the article's two files, the graph as JSON and the
parameters as ``.npz``; ``load(...)`` restores them into a graph, creating the nodes it
lacks. The node types and their options are those of ``fastgraph.saver``, and the weights
are read by its ``read_npz`` (``.npy`` entries only, sizes bounded, nothing unpickled).
"""

import datetime
import io
import json
import math
import os
import time

import numpy as np

from . import checks
from . import saver as model_files
from .files import write_atomically
from .graph import get_default_graph
from .node import Variable


class Trainer:
    """The article's trainer; ``SimpleTrainer`` is the one to use (see the module doc)."""

    def __init__(self, input_x, input_y, loss_op, optimizer, epoches, batch_size=8,
                 eval_on_train=False, metrics_ops=None, *args, **kargs):
        self.inputs = list(input_x)
        self.input_y = input_y
        self.loss_op = loss_op
        self.optimizer = optimizer
        self.epoches = checks.positive_integer("epoches", epoches)  # -1 trained 0 silently
        self.epoch = 0
        self.batch_size = checks.positive_integer("batch_size", batch_size)  # 2.9 became 2
        self.eval_on_train = eval_on_train
        self.metrics_ops = list(metrics_ops or [])
        self.print_iteration_interval = kargs.get("print_iteration_interval", 100)
        self.eval_batch_size = kargs.get("eval_batch_size", 1024)

    def train_and_eval(self, train_x, train_y, test_x=None, test_y=None):
        """Train ``epoches`` epochs, evaluating the metrics on the test set after each one
        when ``eval_on_train``."""
        self._check_data(train_x, train_y, "train")
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
        size = self._check_data(train_x, train_y, "train")
        print(f"- Epoch [{self.epoch + 1}] train start, batch size: {self.batch_size}, "
              f"train data size: {size}")
        began = last_print = time.time()
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

            raise TrainingDiverged(
                f"training stopped: the loss of samples {start} to {stop - 1} of epoch "
                f"{self.epoch + 1} is {loss} (the model diverged: try a lower learning rate, "
                "or the data hold NaN or infinity)")

    def eval(self, test_x, test_y):
        """Reset the metric nodes, feed them the test set, print their values."""
        size = self._check_data(test_x, test_y, "test")
        for metrics_op in self.metrics_ops:
            metrics_op.reset()
        for start in range(0, size, self.eval_batch_size):
            self._feed(test_x, test_y, start, min(start + self.eval_batch_size, size))
            for metrics_op in self.metrics_ops:
                metrics_op.forward()
        line = f"Epoch [{self.epoch + 1}] evaluation metrics "
        print(line + "".join(metrics_op.value_str() for metrics_op in self.metrics_ops))

    def _check_data(self, data_x, data_y, kind):
        if not isinstance(data_x, dict):
            raise TypeError(f"{kind} data must be a dict {{input name: array}}, got "
                            f"{type(data_x).__name__}")
        names = sorted(node.name for node in self.inputs)
        if sorted(data_x) != names:
            raise ValueError(f"{kind} data has arrays for {sorted(data_x)}; the trainer's "
                             f"inputs are {names}")
        sizes = {name: len(array) for name, array in data_x.items()}
        sizes["labels"] = len(data_y)
        if len(set(sizes.values())) != 1:
            raise ValueError(f"{kind} data disagree on the number of samples: {sizes}")
        if sizes["labels"] == 0:
            raise ValueError(f"{kind} data hold no samples")
        for name, array in [*data_x.items(), ("labels", data_y)]:
            where = checks.first_non_finite(array)
            if where is not None:
                raise ValueError(f"{kind} data {name!r} hold {np.asarray(array)[where]} "
                                 f"(sample {where[0]}): training needs finite numbers")
        return sizes["labels"]

    def _feed(self, data_x, data_y, start, stop):
        for node in self.inputs:
            node.set_value(article_batch(data_x[node.name][start:stop]))
        self.input_y.set_value(article_batch(data_y[start:stop]))

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


class Saver:
    """The article's saver: ``root_dir/model.json`` (graph, meta, service) and
    ``root_dir/weights.npz`` (each parameter under its node's name)."""

    def __init__(self, root_dir=""):
        self.root_dir = root_dir
        if root_dir:
            os.makedirs(root_dir, exist_ok=True)

    def save(self, graph=None, meta=None, service_signature=None,
             model_file_name="model.json", weights_file_name="weights.npz"):
        graph = graph or get_default_graph()
        meta = dict(meta or {})
        meta["save_time"] = str(datetime.datetime.now())
        meta["weights_file_name"] = weights_file_name
        nodes, weights = [], {}
        for node in graph.nodes:
            if not getattr(node, "need_save", True):  # metric nodes, as in the article
                continue
            kind = type(node).__name__
            if model_files.NODE_TYPES.get(kind) is not type(node):
                raise TypeError(f"{node.name}: cannot save a node of type {kind}")
            nodes.append({"node_type": kind, "name": node.name,
                          "parents": [parent.name for parent in node.parents],
                          "children": [child.name for child in node.children],
                          "kargs": node.config(), "dim": list(node.dim)})
            if isinstance(node, Variable) and node.trainable:
                if node.flat is None:
                    raise ValueError(f"cannot save the graph: parameter {node.name} has no "
                                     "value (give it one with set_value() or init=True)")
                weights[node.name] = np.asarray(node.value)
        model = {"meta": meta, "service": service_signature or {}, "graph": nodes,
                 "dtype": graph.dtype.name}
        model_path = os.path.join(self.root_dir, model_file_name)
        write_atomically(model_path, json.dumps(model, indent=4).encode())
        print(f"Save model into file: {model_path}")
        weights_path = os.path.join(self.root_dir, weights_file_name)
        buffer = io.BytesIO()
        np.savez(buffer, **weights)
        write_atomically(weights_path, buffer.getvalue())
        print(f"Save weights to file: {weights_path}")

    def load(self, to_graph=None, model_file_name="model.json",
             weights_file_name="weights.npz"):
        """Restore the saved graph into ``to_graph`` (default: the default graph): nodes it
        has by name get the saved parameters, missing ones are built. Returns ``(meta,
        service)``."""
        graph = to_graph or get_default_graph()
        model_path = os.path.join(self.root_dir, model_file_name)
        weights_path = os.path.join(self.root_dir, weights_file_name)
        try:
            with open(model_path) as file:
                model = json.load(file)
            specs = model["graph"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise model_files.ModelFileError(
                f"{model_path}: not a model saved by Saver ({error})") from error
        weights = model_files.read_npz(weights_path)  # .npy entries only, sizes bounded
        try:
            for spec in specs:
                try:
                    node = graph.get_node(spec["name"])
                except KeyError:
                    node = self._build(graph, spec)
                if spec["name"] in weights:
                    node.set_value(weights[spec["name"]])
        except (KeyError, TypeError, ValueError) as error:
            raise model_files.ModelFileError(
                f"{model_path}: the model does not rebuild ({error!s})") from error
        print(f"Load and restore model from {model_path} and {weights_path}")
        self.meta, self.service = model.get("meta"), model.get("service")
        return self.meta, self.service

    @staticmethod
    def _build(graph, spec):
        cls = model_files.NODE_TYPES[spec["node_type"]]
        parents = [graph.get_node(name) for name in spec["parents"]]
        return cls(*parents, graph=graph, name=spec["name"], **spec.get("kargs", {}))
