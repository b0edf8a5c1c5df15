"""Layers: functions that build the article's subgraphs from operators."""

import numpy as np

from . import checks
from .graph import refuse_removed
from .node import Node, Variable
from .ops import (
    Add,
    AddScalar,
    Conv2D,
    Convolve,
    LeakyReLU,
    Logistic,
    MatMul,
    MaxPool2D,
    MaxPooling,
    ReLU,
    Tanh,
)
from .ops.convolution import _pair

ACTIVATIONS = {"ReLU": ReLU, "Logistic": Logistic, "Tanh": Tanh, None: None}

#: The article's ReLU lets 0.1 of a negative input through (its ``ops.ReLU``).
ARTICLE_RELU_SLOPE = 0.1


def _activation_node(kind, node):
    """``kind(node)``; "ReLU" on a graph that follows the article's conventions (see
    ``fastgraph.Graph``) is the article's, leaky: its programs' deep layers (chapter 10's
    CNN under RMSProp) die without it."""
    if kind is ReLU and node.graph.conventions == "article":
        return LeakyReLU(node, ARTICLE_RELU_SLOPE)
    return kind(node)


def fc(input, input_size, size, activation):
    """A fully connected layer: ``activation(W @ input + b)``.

    ``W`` is ``(size, input_size)``, drawn as He-normal for ReLU and Glorot-uniform
    otherwise, from the graph's generator; ``b`` is ``(size, 1)`` zeros. ``activation`` is
    ``"ReLU"``, ``"Logistic"`` or ``"Tanh"``; anything else (None, the article's ``"None"``)
    means the affine map alone, as in the article, except a near miss such as ``"relu"``,
    which raises rather than silently dropping the activation. On a graph that follows the
    article's conventions, ``"ReLU"`` is the article's leaky one (slope 0.1).
    """
    kind = fc_activation(activation)
    _check_node(input, "input", "fc")
    input_size = checks.positive_integer("fc: input_size", input_size)
    size = checks.positive_integer("fc: size", size)
    if _unshaped_welding(input):
        input.adopt_dim((input_size, 1))  # a Welding point without a parent yet
    if input.dim != (input_size, 1):
        raise ValueError(
            f"fc: {input.name} has shape {input.dim}, expected a column of ({input_size}, 1)"
        )
    graph = input.graph
    weights = Variable((size, input_size), trainable=True, graph=graph)
    if activation == "ReLU":
        weights.set_value(graph.rng.normal(0.0, np.sqrt(2.0 / input_size), weights.dim))
    else:
        limit = np.sqrt(6.0 / (input_size + size))
        weights.set_value(graph.rng.uniform(-limit, limit, weights.dim))
    bias = Variable((size, 1), trainable=True, graph=graph)
    bias.set_value(np.zeros(bias.dim))
    affine = Add(MatMul(weights, input), bias)
    return affine if kind is None else _activation_node(kind, affine)


def fc_activation(activation):
    """The operator class for an activation name; None for no activation (see ``fc``)."""
    if _is_activation(activation):
        return ACTIVATIONS[activation]
    near = isinstance(activation, str) and activation.lower() in {
        key.lower() for key in ACTIVATIONS if key}
    if near or not isinstance(activation, (str, type(None))):
        choices = ", ".join(repr(key) for key in ACTIVATIONS)
        raise ValueError(f"unknown activation {activation!r}: choose one of {choices}")
    return None


# -- convolutional layers -------------------------------------------------------------------


def conv(feature_maps, input_shape, kernels, kernel_shape, activation):
    """The article's convolution layer: ``kernels`` output maps, each
    ``activation(sum over the input maps of Convolve(map, its kernel) + a scalar bias)``.

    ``feature_maps``: a list of nodes of one graph, of shape ``input_shape`` (a Welding
    point without a shape yet takes it, as in ``fc``); ``kernel_shape``:
    ``(kh, kw)`` (an int for either shape is a square).
    ``activation``: as in ``fc`` (``"ReLU"``, ``"Logistic"``, ``"Tanh"``; None or any
    other name none, as in the article, but a near miss such as ``"relu"`` raises;
    ``"ReLU"`` is leaky on a graph that follows the article's conventions).
    Kernels are He-normal for the ``len(feature_maps) * kh * kw`` inputs of each output,
    from the graph's generator; the biases start at 0. Returns the list of output maps.
    """
    kind = fc_activation(activation)
    kernels = checks.positive_integer("conv: kernels", kernels)
    kernel_shape = _pair(kernel_shape, "kernel_shape", "conv")
    if min(kernel_shape) < 1:
        raise ValueError(f"conv: kernel_shape must be positive, got {kernel_shape}")
    feature_maps = _feature_maps(feature_maps, "conv")
    input_shape = _pair(input_shape, "input_shape", "conv")  # an int: a square, as kernel_shape
    graph = feature_maps[0].graph
    for i, fm in enumerate(feature_maps):  # before any node is made: a refused call leaves
        if fm.graph is not graph:  # the graph as it was (the node's check named a kernel)
            refuse_removed(fm)
            raise ValueError(f"conv: feature_maps[{i}] {fm.name} belongs to another graph than "
                             f"feature_maps[0] {feature_maps[0].name}")
        if fm.dim != input_shape and not _unshaped_welding(fm):
            raise ValueError(f"conv: {fm.name} has shape {fm.dim}, expected {input_shape}")
    for fm in feature_maps:
        if _unshaped_welding(fm):
            fm.adopt_dim(input_shape)  # a Welding point without a parent yet, as fc does
    scale = np.sqrt(2.0 / (len(feature_maps) * kernel_shape[0] * kernel_shape[1]))
    outputs = []
    for _ in range(kernels):
        channels = []
        for fm in feature_maps:
            kernel = Variable(kernel_shape, trainable=True, graph=graph)
            kernel.set_value(graph.rng.normal(0.0, scale, kernel_shape))
            channels.append(Convolve(fm, kernel))
        bias = Variable((1, 1), trainable=True, graph=graph)
        bias.set_value(np.zeros((1, 1)))
        affine = AddScalar(Add(*channels), bias)
        outputs.append(affine if kind is None else _activation_node(kind, affine))
    return outputs


def pooling(feature_maps, kernel_shape, stride):
    """The article's pooling layer: a ``MaxPooling`` of each map (a list of nodes, as
    ``conv`` returns)."""
    return [MaxPooling(fm, size=kernel_shape, stride=stride)
            for fm in _feature_maps(feature_maps, "pooling")]


def conv2d(input, out_channels, kernel_size, image_shape=None, stride=1, padding=0,
           activation=None, bias=True):
    """A multi-channel convolution ``activation(Conv2D(input) + bias)``.

    ``input`` is ``(H * W, C)`` per sample (a one-channel image may be MNIST's ``(784, 1)``
    column); ``image_shape`` ``(H, W)`` defaults to the ``output_image`` of the layer that
    made ``input``. Weights are He-normal for the ``kh * kw * C`` inputs of each output,
    biases 0. The returned node carries ``output_image``, so the next layer finds it.
    """
    _check_node(input, "input", "conv2d")
    image_shape = _image_shape(input, image_shape, "conv2d")
    _check_activation(activation, "conv2d")
    out_channels = checks.positive_integer("conv2d: out_channels", out_channels)
    graph = input.graph
    kh, kw = _pair(kernel_size, "kernel_size", "conv2d")
    if min(kh, kw) < 1:
        raise ValueError(f"conv2d: kernel_size must be positive, got {(kh, kw)}")
    Conv2D.settings(input, image_shape, (kh, kw), stride, padding)  # before any parameter
    bias = checks.flag("conv2d: bias", bias)
    if input.dim is None:  # an unwelded Welding: its channels, which the weights need, unknown
        raise ValueError(f"conv2d: {input.name} has no shape yet: give "
                         f"{type(input).__name__}(dim=...) or weld it first")
    fan_in = kh * kw * input.dim[1]
    weights = Variable((out_channels, fan_in), trainable=True, graph=graph)
    weights.set_value(graph.rng.normal(0.0, np.sqrt(2.0 / fan_in), weights.dim))
    parents = [input, weights]
    if bias:
        offsets = Variable((out_channels, 1), trainable=True, graph=graph)
        offsets.set_value(np.zeros(offsets.dim))
        parents.append(offsets)
    node = Conv2D(*parents, image_shape=image_shape, kernel_size=(kh, kw), stride=stride,
                  padding=padding)
    return _activate(node, activation)


def max_pool2d(input, kernel_size, stride=None, padding=0, image_shape=None):
    """``MaxPool2D`` of every channel; ``stride`` defaults to ``kernel_size``, ``image_shape``
    to the ``output_image`` of the layer that made ``input``."""
    _check_node(input, "input", "max_pool2d")
    image_shape = _image_shape(input, image_shape, "max_pool2d")
    return MaxPool2D(input, image_shape, kernel_size, stride, padding)


def _image_shape(input, image_shape, caller):
    if image_shape is None:
        image_shape = getattr(input, "output_image", None)
    if image_shape is None:
        raise ValueError(f"{caller}: give image_shape=(H, W) for {input.name}, which no "
                         "convolution or pooling layer made")
    return _pair(image_shape, "image_shape", caller)  # an int is a square, as ops take it


def _is_activation(activation):
    """Whether ``activation`` is a key of ``ACTIVATIONS`` (a list or an array is not: ``in``
    would raise a TypeError about hashing)."""
    return isinstance(activation, (str, type(None))) and activation in ACTIVATIONS


def _check_activation(activation, caller=None):
    """Refuse a name that is not a key of ``ACTIVATIONS`` (``conv2d``, ``models.mlp``: no
    article convention of "anything else means none" to keep)."""
    if not _is_activation(activation):
        choices = ", ".join(repr(key) for key in ACTIVATIONS)
        where = f"{caller}: " if caller else ""
        raise ValueError(f"{where}unknown activation {activation!r}: choose one of {choices}")


def _unshaped_welding(node):
    """Whether ``node`` is a Welding point without a parent or a shape yet: it takes the
    shape that the layer built on it expects."""
    return getattr(node, "dim", None) is None and hasattr(node, "adopt_dim")


def _check_node(value, what, caller):
    if not isinstance(value, Node):
        raise TypeError(f"{caller}: {what} must be a node, got {type(value).__name__}")


def _feature_maps(feature_maps, caller):
    """``feature_maps`` as a list of nodes: the article's layers take and give lists."""
    iterable = not isinstance(feature_maps, (Node, str, bytes)) and hasattr(
        feature_maps, "__iter__")  # a list, a tuple, a generator, as the article iterates
    maps = list(feature_maps) if iterable else None
    if maps and all(isinstance(fm, Node) for fm in maps):
        return maps
    if maps is None:
        got = f"a {type(feature_maps).__name__}"
        if isinstance(feature_maps, Node):
            got += f" (for one map, give [{feature_maps.name}])"
    elif not maps:
        got = "an empty list"
    else:
        odd = next(fm for fm in maps if not isinstance(fm, Node))
        got = f"a list holding a {type(odd).__name__}"
    raise ValueError(f"{caller}: feature_maps must be a non-empty list of nodes, got {got}")


def _activate(node, activation):
    if activation is None:
        return node
    out = ACTIVATIONS[activation](node)
    out.output_image = node.output_image
    return out
