"""A recurrent network over sequences of varying length, with the article's ``Welding``.

The network is unrolled once for the longest sequence; for each sample, the input nodes of
its first steps are set and the welding point is welded to the hidden state of its last
step, so that the classifier on top reads the end of that sample's sequence. The task is
made here: does a noisy sequence trend up or down? One sample per ``one_step()``, an update
every 16, as in the article's chapter 7.

    python examples/article/rnn_welding.py [--quick]
"""

import argparse

import numpy as np

import fastgraph as ms


def sequences(rng, count, longest, width):
    lengths = rng.integers(longest // 3, longest + 1, count)
    slopes = rng.choice([-1.0, 1.0], count)
    data = []
    for length, slope in zip(lengths, slopes):
        ramp = slope * np.linspace(-1, 1, length)[:, None]
        data.append(ramp + rng.normal(0, 0.8, (length, width)))
    return data, (slopes > 0).astype(int)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(11)
    longest, width, state = 24, 3, 8
    train, train_labels = sequences(rng, 96 if args.quick else 800, longest, width)
    test, test_labels = sequences(rng, 50 if args.quick else 400, longest, width)

    with ms.Graph(seed=11) as graph:
        inputs = [ms.core.Variable(dim=(width, 1), init=False, trainable=False)
                  for _ in range(longest)]
        u = ms.core.Variable(dim=(state, width), init=True, trainable=True)
        w = ms.core.Variable(dim=(state, state), init=True, trainable=True)
        b = ms.core.Variable(dim=(state, 1), init=True, trainable=True)
        hiddens, last = [], None
        for x in inputs:
            h = ms.ops.Add(ms.ops.MatMul(u, x), b)
            if last is not None:
                h = ms.ops.Add(ms.ops.MatMul(w, last), h)
            last = ms.ops.Tanh(h)
            hiddens.append(last)
        end = ms.ops.Welding()
        output = ms.layer.fc(ms.layer.fc(end, state, 8, "ReLU"), 8, 2, "None")
        predict = ms.ops.SoftMax(output)
        label = ms.core.Variable(dim=(2, 1), trainable=False)
        loss = ms.ops.CrossEntropyWithSoftMax(output, label)
        optimizer = ms.optimizer.Adam(graph, loss, 0.01)

    def feed(sequence):
        for step, values in enumerate(sequence):
            inputs[step].set_value(np.asmatrix(values).T)
        end.weld(hiddens[len(sequence) - 1])

    for epoch in range(2 if args.quick else 6):
        for i, (sequence, target) in enumerate(zip(train, train_labels)):
            feed(sequence)
            label.set_value(np.asmatrix(np.eye(2)[target]).T)
            optimizer.one_step()
            if (i + 1) % 16 == 0:
                optimizer.update()
        predicted = []
        for sequence in test:
            feed(sequence)
            predict.forward()
            predicted.append(predict.value.A1.argmax())
        accuracy = float((np.array(predicted) == test_labels).mean())
        print(f"epoch {epoch + 1}: test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
