"""The article's trainer and saver on a multilayer perceptron of ``ms.model``.

Three classes of points in the plane (made here), ``model.multilayer_perception``,
``trainer.SimpleTrainer`` fed ``{input name: array}`` with metric nodes evaluated after
each epoch, then ``trainer.Saver``: the graph saved as JSON plus an ``.npz`` of weights,
loaded into a new graph, and checked to predict the same.

    python examples/article/trainer_and_saver.py [--quick] [--dir DIR]
"""

import argparse
import tempfile

import numpy as np

import fastgraph as ms


def blobs(rng, count):
    centres = np.array([[0.0, 2.0], [-2.0, -1.0], [2.0, -1.0]])
    classes = rng.integers(0, 3, count)
    return centres[classes] + rng.normal(0, 0.9, (count, 2)), classes


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dir", default=None, help="where to save (default: a temp folder)")
    args = parser.parse_args()
    rng = np.random.default_rng(5)
    features, classes = blobs(rng, 300 if args.quick else 3000)
    one_hot = np.eye(3)[classes]

    with ms.Graph(seed=5) as graph:
        x, logits = ms.model.multilayer_perception(2, 3, [16, 8], "ReLU")
        label = ms.core.Variable(dim=(3, 1), init=False, trainable=False, name="label")
        predict = ms.ops.SoftMax(logits, name="predict")
        loss = ms.ops.loss.CrossEntropyWithSoftMax(logits, label)
        optimizer = ms.optimizer.Adam(graph, loss, 0.01)
        accuracy = ms.ops.metrics.Accuracy(logits, label)

    trainer = ms.trainer.SimpleTrainer([x], label, loss, optimizer, epoches=2 if args.quick
                                       else 5, batch_size=32, eval_on_train=True,
                                       metrics_ops=[accuracy])
    trainer.train_and_eval({x.name: features}, one_hot, {x.name: features}, one_hot)
    x.set_value(features)
    predict.forward()
    expected = predict.value

    with tempfile.TemporaryDirectory() as scratch:
        saver = ms.trainer.Saver(args.dir or scratch)
        saver.save(graph=graph, meta={"classes": 3}, model_file_name="model.json",
                   weights_file_name="weights.npz")
        with ms.Graph() as restored:
            meta, _ = ms.trainer.Saver(args.dir or scratch).load(
                model_file_name="model.json", weights_file_name="weights.npz")
            x2 = ms.get_node_from_graph(x.name)
            predict2 = ms.get_node_from_graph("predict")
    x2.set_value(features)
    predict2.forward()
    same = np.array_equal(predict2.value, expected)
    print(f"restored {restored.node_count()} nodes, {meta['classes']} classes, "
          f"same predictions: {same}; accuracy {accuracy.value:.3f}")
    if not same:
        raise SystemExit("the restored model predicts differently")


if __name__ == "__main__":
    main()
