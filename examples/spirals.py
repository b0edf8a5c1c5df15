"""Two interleaved spirals, made here: a problem no straight line separates.

A 2-32-32-2 Tanh network learns it with softmax cross-entropy and Adam; with --plot it
draws the decision regions.
    python examples/spirals.py [--quick] [--plot spirals.png]
"""

import argparse

import numpy as np

import fastgraph as fg

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true", help="a few epochs, for CI")
parser.add_argument("--plot", help="write the decision regions to this PNG")
args = parser.parse_args()


def spirals(samples_per_class, noise, rng):
    angle = np.sqrt(rng.random(samples_per_class)) * 3 * np.pi
    arm = np.stack([angle * np.cos(angle), angle * np.sin(angle)], axis=1) / np.pi  # radius 3
    points = np.concatenate([arm, -arm]) + rng.normal(0, noise, (2 * samples_per_class, 2))
    classes = np.repeat([0, 1], samples_per_class)
    return points, classes


rng = np.random.default_rng(0)
points, classes = spirals(500, 0.05, rng)
test_points, test_classes = spirals(200, 0.05, rng)
targets = np.eye(2)[classes]

with fg.Graph(seed=1) as graph:
    x = fg.Variable(dim=(2, 1), init=False, trainable=False)
    one_hot = fg.Variable(dim=(2, 1), init=False, trainable=False)
    hidden = fg.layer.fc(fg.layer.fc(x, 2, 32, "Tanh"), 32, 32, "Tanh")
    logits = fg.layer.fc(hidden, 32, 2, None)
    predict = fg.ops.SoftMax(logits)
    loss = fg.ops.loss.CrossEntropyWithSoftMax(logits, one_hot)
    optimizer = fg.optimizer.Adam(graph, loss, 0.01)

epochs = 5 if args.quick else 200
for _epoch in range(epochs):
    order = rng.permutation(len(points))
    for start in range(0, len(order), 50):
        batch = order[start : start + 50]
        x.set_value(points[batch])
        one_hot.set_value(targets[batch])
        optimizer.one_step()
        optimizer.update()
x.set_value(test_points)
predict.forward()
accuracy = fg.metrics.accuracy(test_classes, predict.value)
print(f"after {epochs} epochs: test accuracy {accuracy:.4f}")

if args.plot:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.stack(np.meshgrid(np.linspace(-3.5, 3.5, 200), np.linspace(-3.5, 3.5, 200)), -1)
    x.set_value(grid.reshape(-1, 2))
    predict.forward()
    regions = predict.value[:, 1, 0].reshape(200, 200)
    plt.contourf(grid[..., 0], grid[..., 1], regions, levels=20, cmap="coolwarm", alpha=0.6)
    plt.scatter(
        *test_points.T, c=test_classes, cmap="coolwarm", s=14, edgecolors="white", linewidths=0.4
    )
    plt.title(f"two spirals: test accuracy {accuracy:.3f}")
    plt.savefig(args.plot, dpi=100)
    print(f"wrote {args.plot}")
