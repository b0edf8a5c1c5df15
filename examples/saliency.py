"""Saliency maps: which pixels move the predicted class score, per image.

The Jacobian of the logits with respect to the input, for a whole batch at once
(``fg.jacobian``), gives for each image the gradient of its predicted class's score with
respect to its 784 pixels. Trains a model first, or loads one saved by
``fastgraph train mnist --save``.
The network may be convolutional (``--network lenet5``): the Jacobian passes back through
its convolutions and poolings like through any other operator.
    python examples/saliency.py [--model model.fgz | --network lenet5] [--out saliency.png]
                                [--quick]
"""
import argparse

import numpy as np

import fastgraph as fg
from fastgraph.datasets import mnist

parser = argparse.ArgumentParser()
parser.add_argument("--model", help="a model saved by 'fastgraph train mnist --save'")
parser.add_argument("--out", default="saliency.png")
parser.add_argument("--network", choices=["mlp", "lenet5"], default="mlp",
                    help="the network to train when no --model is given")
parser.add_argument("--quick", action="store_true", help="a small model, for CI")
args = parser.parse_args()

x_train, y_train, x_test, y_test = mnist.load()
if args.model:
    graph, meta = fg.saver.load(args.model)
    x, predict = graph.get_node(meta["input"]), graph.get_node(meta["output"])
    logits = predict.parents[0]
else:
    model = fg.models.lenet5(seed=0) if args.network == "lenet5" else fg.models.mlp(seed=0)
    optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.002)
    trainer = fg.trainer.SimpleTrainer(model.x, model.one_hot, model.predict, optimizer,
                                       progress=False, scale=1 / 255, seed=0)
    samples = 2000 if args.quick else 60000
    trainer.train(x_train[:samples], y_train[:samples], epochs=1 if args.quick else 3)
    x, predict, logits = model.x, model.predict, model.logits

images = x_test[:8]
x.set_value(mnist.features(images))
jacobian = fg.jacobian(logits, x)  # (8, 10, 784): every image, every class, every pixel
predict.forward()
predicted = predict.value[:, :, 0].argmax(axis=1)
saliency = jacobian[np.arange(len(images)), predicted].reshape(-1, 28, 28)
accuracy = (predicted == y_test[:8]).mean()
print(f"predicted {predicted.tolist()} for digits {y_test[:8].tolist()} (accuracy {accuracy:.3f})")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

figure, axes = plt.subplots(2, len(images), figsize=(2 * len(images), 4.4))
for k in range(len(images)):
    axes[0, k].imshow(images[k], cmap="gray")
    axes[0, k].set_title(f"predicted {predicted[k]}")
    limit = np.abs(saliency[k]).max()
    axes[1, k].imshow(saliency[k], cmap="coolwarm", vmin=-limit, vmax=limit)
    axes[1, k].set_title("d score / d pixel", fontsize=9)
for ax in axes.ravel():
    ax.axis("off")
figure.tight_layout()
figure.savefig(args.out, dpi=80)
print(f"wrote {args.out}")
