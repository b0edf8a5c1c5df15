"""ADALINE in the article's style, one sample at a time, with its own data: apples and
pears told apart by weight (g) and diameter (cm). Each step asks the weights for their
Jacobian (``w.backward(loss)``) and updates them by hand, as the article's chapter 2 does;
``np.asmatrix`` samples make every value the article's ``np.matrix``.

    python examples/article/adaline.py [--quick]
"""

import argparse

import numpy as np

import fastgraph as ms


def fruit(rng, count):
    apples = np.column_stack([rng.normal(150, 20, count), rng.normal(7.5, 0.6, count)])
    pears = np.column_stack([rng.normal(180, 25, count), rng.normal(6.2, 0.5, count)])
    features = np.concatenate([apples, pears])
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    labels = np.concatenate([np.ones(count), -np.ones(count)])
    order = rng.permutation(2 * count)
    return features[order], labels[order]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    features, labels = fruit(rng, 50 if args.quick else 400)

    with ms.Graph(seed=7) as graph:
        x = ms.core.Variable(dim=(2, 1), init=False, trainable=False)
        label = ms.core.Variable(dim=(1, 1), init=False, trainable=False)
        w = ms.core.Variable(dim=(1, 2), init=True, trainable=True)
        b = ms.core.Variable(dim=(1, 1), init=True, trainable=True)
        output = ms.ops.Add(ms.ops.MatMul(w, x), b)
        predict = ms.ops.Step(output)
        loss = ms.ops.loss.PerceptionLoss(ms.ops.MatMul(label, output))

    learning_rate = 0.01
    for epoch in range(2 if args.quick else 10):
        for sample, target in zip(features, labels):
            x.set_value(np.asmatrix(sample).T)
            label.set_value(np.asmatrix(target))
            loss.forward()
            w.backward(loss)
            b.backward(loss)
            w.set_value(w.value - learning_rate * w.jacobi.T.reshape(w.shape()))
            b.set_value(b.value - learning_rate * b.jacobi.T.reshape(b.shape()))
            graph.clear_jacobi()
        predicted = []
        for sample in features:
            x.set_value(np.asmatrix(sample).T)
            predict.forward()
            predicted.append(predict.value[0, 0] * 2 - 1)  # Step gives 1 or 0
        accuracy = float((np.array(predicted) == labels).mean())
        print(f"epoch {epoch + 1}: accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
