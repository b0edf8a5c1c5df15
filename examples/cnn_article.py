"""The article's "simple convolutional network", built from its per-channel operators.

MatrixSlow's chapter-8 network: the 28x28 image as one feature map, 3 kernels of 5x5
(``layer.conv``: a Convolve per input map and kernel, their sum, a scalar bias, ReLU),
max pooling 3x3 with stride 2 (``layer.pooling``), 3 kernels of 3x3, pooling again, the
three 7x7 maps concatenated into a column of 147 (``ops.Concat``), then fc 147-120 ReLU and
120-10. The article feeds one image per ``one_step()``; here every operator takes the whole
batch in one kernel call, so one ``one_step()`` is a batch of 32.
    python examples/cnn_article.py [--quick]
"""

import argparse
import time

import numpy as np

import fastgraph as fg
from fastgraph.datasets import mnist

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true", help="a few batches, for CI")
args = parser.parse_args()

x_train, y_train, x_test, y_test = mnist.load()
samples = 640 if args.quick else 20000
tests = 500 if args.quick else 10000
X = mnist.features(x_train[:samples]).reshape(-1, 28, 28)
one_hot_label = mnist.one_hot(y_train[:samples])

graph = fg.Graph(seed=0)
with graph:
    x = fg.Variable(dim=(28, 28), init=False, trainable=False)
    one_hot = fg.Variable(dim=(10, 1), init=False, trainable=False)
    conv1 = fg.layer.conv([x], (28, 28), 3, (5, 5), "ReLU")
    pooling1 = fg.layer.pooling(conv1, (3, 3), (2, 2))  # 3 maps of 14x14
    conv2 = fg.layer.conv(pooling1, (14, 14), 3, (3, 3), "ReLU")
    pooling2 = fg.layer.pooling(conv2, (3, 3), (2, 2))  # 3 maps of 7x7
    fc1 = fg.layer.fc(fg.ops.Concat(*pooling2), 147, 120, "ReLU")
    output = fg.layer.fc(fc1, 120, 10, None)
    predict = fg.ops.SoftMax(output)
    loss = fg.ops.loss.CrossEntropyWithSoftMax(output, one_hot)

optimizer = fg.optimizer.Adam(graph, loss, 0.005)
batch_size = 32
rng = np.random.default_rng(0)
for epoch in range(1 if args.quick else 2):
    began = time.perf_counter()
    order = rng.permutation(len(X))
    for i in range(0, len(X), batch_size):
        batch = order[i : i + batch_size]
        x.set_value(X[batch])
        one_hot.set_value(one_hot_label[batch])
        optimizer.one_step()
        optimizer.update()
    seconds = time.perf_counter() - began
    hits = 0
    for start in range(0, tests, 1000):  # 1,000 test images at a time: ~20 maps each
        stop = min(start + 1000, tests)
        x.set_value(mnist.features(x_test[start:stop]).reshape(-1, 28, 28))
        predict.forward()
        hits += (predict.value[:, :, 0].argmax(axis=1) == y_test[start:stop]).sum()
    accuracy = hits / tests
    print(f"epoch {epoch + 1}: test accuracy {accuracy:.3f}, {len(X) / seconds:,.0f} samples/s")
