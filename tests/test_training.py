"""float32 is the default, and the article's network learns MNIST with it."""

import numpy as np

import fastgraph as fg
from fastgraph.datasets import mnist as dataset
from tests.helpers import mnist_network


def test_float32_default_trains_mnist(mnist):
    x_train, y_train, x_test, y_test = mnist
    assert fg.Graph().dtype == np.float32
    graph, x, one_hot, _, predict, loss = mnist_network(np.float32, seed=0)
    optimizer = fg.optimizer.Adam(graph, loss, 0.001)
    features, labels = dataset.features(x_train[:6000]), dataset.one_hot(y_train[:6000])
    order = np.random.default_rng(0).permutation(6000)
    losses = []
    for epoch in range(2):
        for start in range(0, 6000, 64):
            batch = order[start : start + 64]
            x.set_value(features[batch])
            one_hot.set_value(labels[batch])
            optimizer.one_step()
            optimizer.update()
            losses.append(float(loss.value.mean()))
        order = np.random.default_rng(epoch + 1).permutation(6000)
    assert all(p.value.dtype == np.float32 for p in optimizer.params)
    x.set_value(dataset.features(x_test[:2000]))
    predict.forward()
    accuracy = (predict.value[:, :, 0].argmax(axis=1) == y_test[:2000]).mean()
    assert np.mean(losses[:10]) > 1.5 and np.mean(losses[-10:]) < 0.5
    assert accuracy > 0.88, accuracy
