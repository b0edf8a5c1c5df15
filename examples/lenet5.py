"""LeNet-5 on MNIST with the multi-channel operators: ``Conv2D``, ``MaxPool2D``.

Each convolution is one node for all its channels: the batch's image patches are one matrix
(im2col) and the convolution one GEMM with the weights. The same network trains from the
command line with ``fastgraph train mnist --model lenet5``.
    python examples/lenet5.py [--quick]
"""

import argparse

import fastgraph as fg
from fastgraph import metrics
from fastgraph.datasets import mnist

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true", help="a few batches, for CI")
args = parser.parse_args()

x_train, y_train, x_test, y_test = mnist.load()
samples, tests = (640, 500) if args.quick else (60000, 10000)

# conv 6@5x5 pad 2 -> ReLU -> pool 2 -> conv 16@5x5 -> ReLU -> pool 2 -> 400-120-84-10
model = fg.models.lenet5(seed=0)
for node in model.graph.nodes:
    if isinstance(node, (fg.ops.Conv2D, fg.ops.MaxPool2D)):
        print(f"{type(node).__name__:>9}: {node.parents[0].dim} -> {node.dim} "
              f"(images {node.output_image[0]}x{node.output_image[1]} x {node.dim[1]} channels)")

optimizer = fg.optimizer.Adam(model.graph, model.loss, 0.002)
trainer = fg.trainer.SimpleTrainer(model.x, model.one_hot, model.predict, optimizer,
                                   batch_size=64, seed=0, progress=False, lr_decay=0.8,
                                   scale=1 / 255)
trainer.train(x_train[:samples], y_train[:samples], x_test[:tests], y_test[:tests],
              epochs=1 if args.quick else 10)
accuracy = metrics.accuracy(y_test[:tests], trainer.scores(x_test[:tests]))
print(f"test accuracy: {accuracy:.4f}")
