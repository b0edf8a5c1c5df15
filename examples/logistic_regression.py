"""Logistic regression in the article's style: is this MNIST digit a 3 or a 5?

Labels are +1 (a 3) and -1 (a 5); the loss is LogLoss of the margin label * output, as the
article writes it. Prints accuracy and ROC AUC on the test set.
    python examples/logistic_regression.py [--quick]
"""

import argparse

import numpy as np

import fastgraph as fg
from fastgraph.datasets import mnist

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true", help="a few batches, for CI")
args = parser.parse_args()

x_train, y_train, x_test, y_test = mnist.load()


def threes_and_fives(images, digits):
    keep = (digits == 3) | (digits == 5)
    return mnist.features(images[keep]), np.where(digits[keep] == 3, 1.0, -1.0)


features, signs = threes_and_fives(x_train, y_train)
test_features, test_signs = threes_and_fives(x_test, y_test)
if args.quick:
    features, signs = features[:512], signs[:512]

with fg.Graph(seed=0) as graph:
    x = fg.Variable(dim=(784, 1), init=False, trainable=False)
    label = fg.Variable(dim=(1, 1), init=False, trainable=False)
    w = fg.Variable(dim=(1, 784), init=True, trainable=True)
    b = fg.Variable(dim=(1, 1), init=True, trainable=True)
    output = fg.ops.Add(fg.ops.MatMul(w, x), b)
    predict = fg.ops.Logistic(output)
    loss = fg.ops.loss.LogLoss(fg.ops.Multiply(label, output))
    optimizer = fg.optimizer.Adam(graph, loss, 0.01)

for epoch in range(1 if args.quick else 5):
    order = np.random.default_rng(epoch).permutation(len(features))
    for start in range(0, len(order), 64):
        batch = order[start : start + 64]
        x.set_value(features[batch])
        label.set_value(signs[batch].reshape(-1, 1, 1))
        optimizer.one_step()
        optimizer.update()
    x.set_value(test_features)
    predict.forward()
    probability_of_three = predict.value.ravel()
    accuracy = ((probability_of_three > 0.5) == (test_signs > 0)).mean()
    auc = fg.metrics.roc_auc(test_signs > 0, probability_of_three)
    print(f"epoch {epoch + 1}: test accuracy {accuracy:.4f}, ROC AUC {auc:.4f}")
