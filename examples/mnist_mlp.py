"""The article's MNIST program, ported: the same graph and loop, fed a batch at a time.

The article feeds one sample per one_step() and calls update() every 64 samples; here each
one_step() takes the whole batch of 64, which gives the same gradients.
    python examples/mnist_mlp.py [--quick]
"""

import argparse

import numpy as np

import fastgraph as fg
from fastgraph.datasets import mnist

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true", help="a few batches, for CI")
args = parser.parse_args()

x_train, y_train, _, _ = mnist.load()
samples = 640 if args.quick else 60000
X, y = mnist.features(x_train[:samples]), y_train[:samples].astype(int)
one_hot_label = mnist.one_hot(y)

x = fg.Variable(dim=(784, 1), init=False, trainable=False)
one_hot = fg.Variable(dim=(10, 1), init=False, trainable=False)
hidden_1 = fg.layer.fc(x, 784, 100, "ReLU")
hidden_2 = fg.layer.fc(hidden_1, 100, 20, "ReLU")
output = fg.layer.fc(hidden_2, 20, 10, None)
predict = fg.ops.SoftMax(output)
loss = fg.ops.loss.CrossEntropyWithSoftMax(output, one_hot)

learning_rate = 0.001
optimizer = fg.optimizer.Adam(fg.default_graph, loss, learning_rate)

batch_size = 64
for epoch in range(1 if args.quick else 5):
    order = np.random.permutation(len(X))
    for i in range(0, len(X), batch_size):
        batch = order[i : i + batch_size]
        x.set_value(X[batch])
        one_hot.set_value(one_hot_label[batch])
        optimizer.one_step()
        if (i // batch_size + 1) % 100 == 0 or args.quick:
            print(f"epoch: {epoch + 1}, iteration: {i + len(batch)}, loss: {loss.value.mean():.3f}")
        optimizer.update()

    x.set_value(X)
    predict.forward()
    pred = predict.value.argmax(axis=1).ravel()
    accuracy = (y == pred).astype(int).sum() / len(X)
    print(f"epoch: {epoch + 1}, accuracy: {accuracy:.3f}")
