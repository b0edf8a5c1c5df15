"""The README's network, the article's, trained a batch at a time (the README feeds it with
``Batches``; here the batches are made by hand with NumPy)."""

import sys

import numpy as np

import fastgraph as fg
from fastgraph.datasets import mnist

x_train, y_train, x_test, y_test = mnist.load()  # $FASTGRAPH_DATA, the cache, or a download
with fg.Graph() as graph:
    x = fg.Variable(dim=(784, 1), init=False, trainable=False)
    one_hot = fg.Variable(dim=(10, 1), init=False, trainable=False)
    hidden_1 = fg.layer.fc(x, 784, 100, "ReLU")
    hidden_2 = fg.layer.fc(hidden_1, 100, 20, "ReLU")
    output = fg.layer.fc(hidden_2, 20, 10, None)
    predict = fg.ops.SoftMax(output)
    loss = fg.ops.loss.CrossEntropyWithSoftMax(output, one_hot)
    optimizer = fg.optimizer.Adam(graph, loss, 0.001)

quick = "--quick" in sys.argv  # a few batches, for CI
samples = 640 if quick else len(x_train)
features, labels = mnist.features(x_train[:samples]), mnist.one_hot(y_train[:samples])
for epoch in range(1 if quick else 3):
    for batch in np.array_split(np.random.permutation(len(features)), len(features) // 64):
        x.set_value(features[batch])  # (64, 784): the whole batch at once
        one_hot.set_value(labels[batch])
        optimizer.one_step()  # forward, and backward by batched VJPs
        optimizer.update()  # one Adam kernel call for every parameter
    train_loss = loss.value.mean()  # the last batch's loss, before the update
    x.set_value(mnist.features(x_test))
    predict.forward()
    accuracy = (predict.value.argmax(axis=1).ravel() == y_test).mean()
    print(f"epoch {epoch + 1}: loss {train_loss:.4f}, test accuracy {accuracy:.4f}")
