"""The ``fastgraph`` command: train, evaluate and use MNIST models.

    fastgraph train mnist [options]        train the article's network, print test accuracy
    fastgraph evaluate model.fgz           accuracy, per-class precision/recall/F1, confusion
    fastgraph predict model.fgz img.png    the digit in each 28x28 grey image
"""

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from . import checks, distributed, metrics, saver, viz
from . import optimizer as optimizers
from .datasets import mnist
from .datasets.mnist import DatasetError
from .files import check_writable, interrupts_deferred, open_regular
from .layer import ACTIVATIONS
from .models import lenet5, mlp
from .saver import ModelFileError
from .trainer import MOST_EPOCHS, SimpleTrainer, TrainingDiverged

OPTIMIZERS = {
    "adam": (optimizers.Adam, 0.002),
    "sgd": (optimizers.GradientDescent, 0.1),
    "momentum": (optimizers.Momentum, 0.01),
    "adagrad": (optimizers.AdaGrad, 0.01),
    "rmsprop": (optimizers.RMSProp, 0.001),
}


# A user's mistake, or a run that diverged: one line and status 2, no traceback.
ERRORS = (DatasetError, ModelFileError, ValueError, OSError, TrainingDiverged, MemoryError)


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if hasattr(args, "check"):  # what one option says of another: argparse's usage and line
        try:
            args.check(args)
        except ValueError as error:
            args.command_parser.error(str(error))
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --processes runs again
    try:
        return args.run(args)
    except (*ERRORS, distributed.MPIUnavailable) as error:
        print(f"fastgraph: error: {error}", file=sys.stderr)
        return 2


def _parser():
    parser = argparse.ArgumentParser(prog="fastgraph", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(required=True, metavar="command")

    train = commands.add_parser("train", help="train a network on a dataset")
    train.add_argument("dataset", choices=["mnist"])
    train.add_argument("--model", choices=["mlp", "lenet5"], default="mlp",
                       help="mlp: the article's fully connected network (--hidden, "
                            "--activation); lenet5: a convolutional network (default mlp)")
    # --hidden and --activation default to None, so that a model without them can refuse
    # them when they are given (_check_train); their defaults are MLP_DEFAULTS.
    train.add_argument("--hidden", type=_sizes,
                       help="hidden layer sizes, comma-separated (default 100,20; mlp only)")
    train.add_argument("--activation", choices=[a for a in ACTIVATIONS if a],
                       help="the hidden layers' activation (default ReLU; mlp only)")
    train.add_argument("--batch-size", type=_positive, default=64)
    train.add_argument("--epochs", type=_positive, default=15)
    train.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adam")
    train.add_argument("--lr", type=_positive_number,
                       help="learning rate (default: " + ", ".join(
                           f"{rate:g} for {name}" for name, (_, rate) in OPTIMIZERS.items()) + ")")
    train.add_argument("--lr-decay", type=_decay, default=0.8,
                       help="multiply the learning rate by this after each epoch (default 0.8)")
    train.add_argument("--engine", choices=["vjp", "jacobian"], default="vjp",
                       help="jacobian: the article's per-sample engine (slow; a reference)")
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    train.add_argument("--seed", type=_seed, default=0)
    train.add_argument("--data", help="directory of the MNIST files, which must hold them "
                                      "(without it: $FASTGRAPH_DATA, the cache, or a "
                                      "download)")
    train.add_argument("--save", metavar="MODEL.fgz", help="save the trained model")
    train.add_argument("--plot", metavar="CURVES.png", help="plot loss and accuracy per epoch")
    train.add_argument("--graph", metavar="GRAPH.svg", help="draw the graph (.dot/.svg/.png)")
    train.add_argument("--train-samples", type=_positive, help="use only the first N")
    train.add_argument("--test-samples", type=_positive, help="test on only the first N")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument("--processes", type=_positive, default=1,
                       help="data-parallel training in N MPI processes, started with mpiexec "
                            "(needs fastgraph[mpi]); `mpiexec -n N fastgraph train` does the same")
    train.set_defaults(run=_train, check=_check_train, command_parser=train)

    evaluate = commands.add_parser("evaluate", help="evaluate a saved model on MNIST's test set")
    evaluate.add_argument("model")
    evaluate.add_argument("--data", help="directory of the MNIST files, as for train")
    evaluate.set_defaults(run=_evaluate)

    predict = commands.add_parser("predict", help="classify 28x28 grey images")
    predict.add_argument("model")
    predict.add_argument("images", nargs="+")
    predict.set_defaults(run=_predict)
    return parser


#: ``fastgraph train --model mlp``'s --hidden and --activation when they are not given.
MLP_DEFAULTS = {"hidden": (100, 20), "activation": "ReLU"}


def _check_train(args):
    """What one option of ``train`` says of another, after parsing (argparse's ``type``
    sees one option at a time): options the chosen model does not take, given explicitly,
    are refused rather than ignored; ``--lr`` must be a number in ``--dtype``."""
    if args.model == "mlp":
        for name, value in MLP_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    else:
        given = [f"--{name}" for name in MLP_DEFAULTS if getattr(args, name) is not None]
        if given:
            options = "they are options" if len(given) > 1 else "it is an option"
            raise ValueError(f"--model {args.model} takes no {' or '.join(given)} (its layers "
                             f"are fixed): {options} of --model mlp")
    if args.lr is not None:  # 1e39 is inf in float32, 1e-50 is 0
        try:
            checks.positive_number("--lr", args.lr, args.dtype)
        except ValueError as error:
            raise ValueError(f"{error} (--dtype {args.dtype})") from None
    checks.positive_integer("--epochs", args.epochs, most=MOST_EPOCHS)  # (10**400 parses)
    start = OPTIMIZERS[args.optimizer][1] if args.lr is None else args.lr
    zero = checks.decayed_to_zero(start, args.lr_decay, args.epochs, args.dtype)
    if zero is not None:  # said by the trainer too, but only once the data are read
        raise ValueError(f"--lr-decay {args.lr_decay!r} takes the learning rate from {start:g} "
                         f"to {zero[1]:g} after epoch {zero[0]} of --epochs {args.epochs}, "
                         f"which is 0 in {args.dtype}: give a larger --lr-decay or fewer "
                         "--epochs")


def _sizes(text):
    try:
        parts = text.split(",")
        if len(parts) > 1 and not parts[-1].strip():  # "100,20," as "100,20"
            parts = parts[:-1]
        sizes = tuple(int(part) for part in parts)  # "5,,3": an empty size is a mistake
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 100,20, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes like 100,20, got {text!r}")
    return sizes


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _number(text, check, expected):
    try:
        return check(float(text))
    except ValueError:  # not a number, or not one the option takes
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def _positive_number(text):
    return _number(text, lambda value: checks.positive_number("value", value),
                   "a positive number")


def _decay(text):
    return _number(text, lambda value: checks.fraction("value", value, low_open=True,
                                                       high_closed=True), "a number in (0, 1]")


def _train(args):
    _check_data(args.data)
    _check_outputs(args)
    size = distributed.launched_size()
    if size == 1 and args.processes > 1:
        return distributed.launch(args.processes,
                                  [sys.executable, "-m", "fastgraph.cli", *args.argv])
    if size == 1:
        return _train_process(args)
    if args.processes not in (1, size):
        raise ValueError(f"--processes {args.processes} under an MPI launcher that started "
                         f"{size} processes: give one or the other")
    comm = distributed.communicator()
    with distributed.abort_on_error(comm, expected=ERRORS):
        return _train_process(args, comm)


def _train_process(args, comm=None):
    """Train in this process; with ``comm``, as one rank of a data-parallel job in which
    rank 0 alone prints, evaluates and writes files."""
    rank = 0 if comm is None else comm.Get_rank()
    x_train, y_train, x_test, y_test = _load_mnist(args.data, comm)
    x_train, y_train = x_train[: args.train_samples], y_train[: args.train_samples]
    x_test, y_test = x_test[: args.test_samples], y_test[: args.test_samples]
    for option, asked, have in (("--train-samples", args.train_samples, len(x_train)),
                                ("--test-samples", args.test_samples, len(x_test))):
        if asked is not None and asked > have and rank == 0:
            print(f"{option} {asked:,}: MNIST has {have:,}, all taken", flush=True)
    dtype = np.dtype(args.dtype)
    if args.model == "lenet5":
        model = lenet5(10, dtype=dtype, seed=args.seed)
        described = "LeNet-5 (conv 6@5x5, pool, conv 16@5x5, pool, 400-120-84-10, ReLU)"
    else:
        model = mlp(784, args.hidden, 10, args.activation, dtype=dtype, seed=args.seed)
        described = f"{'-'.join(map(str, (784, *args.hidden, 10)))} ({args.activation})"
    rule, default_lr = OPTIMIZERS[args.optimizer]
    learning_rate = default_lr if args.lr is None else args.lr  # --lr 0 is refused, not 0
    optimizer = rule(model.graph, model.loss, learning_rate, engine=args.engine)
    trainer_class = SimpleTrainer
    if comm is not None:
        optimizer = distributed.DataParallel(optimizer, comm)
        distributed.share_cores(comm)
        trainer_class = distributed.DistributedTrainer
    trainer = trainer_class(model.x, model.one_hot, model.predict, optimizer,
                            batch_size=args.batch_size, seed=args.seed,
                            progress=not args.no_progress, lr_decay=args.lr_decay,
                            scale=1 / 255,
                            eval_batch_size=1000 if args.model == "lenet5" else 10_000)
    if rank == 0:
        processes = "" if comm is None else f", {comm.Get_size()} processes"
        print(f"training {described} on "
              f"{len(x_train):,} MNIST images: {args.optimizer}, batch {args.batch_size}, "
              f"{args.dtype}, engine {args.engine}{processes}", flush=True)
    history = trainer.train(x_train, y_train, x_test, y_test, epochs=args.epochs)
    if rank != 0:
        return 130 if trainer.interrupted else 0
    # The last epoch's record holds the test accuracy of the final weights (train() measured
    # it, under its Ctrl-C handler); then what was asked is written, a Ctrl-C meanwhile
    # held until it is (a second Ctrl-C, after the first stopped training, lands here).
    accuracy = history[-1].get("test_accuracy") if history else None
    if accuracy is None:
        accuracy = metrics.accuracy(y_test, trainer.scores(x_test))
    print(f"test accuracy: {accuracy:.4f}")
    try:
        with interrupts_deferred():
            _write_results(args, model, history)
    except KeyboardInterrupt:
        print("interrupted: the model, curves and graph asked for were written first")
        return 130
    return 130 if trainer.interrupted else 0


def _write_results(args, model, history):
    if args.save:
        meta = {"dataset": "mnist", "input": model.x.name, "output": model.predict.name,
                "image_shape": [28, 28], "history": history}
        saver.save(args.save, model.graph, meta)
        print(f"saved the model to {args.save}")
    if args.plot and history:
        print(f"plotted the curves to {viz.plot_history(history, args.plot)}")
    if args.graph:
        written, note = viz.write_graph(model.graph, args.graph)
        print(note or f"drew the graph to {written}")


def _load_mnist(path, comm):
    if comm is not None:  # rank 0 alone downloads the files when they are missing
        if comm.Get_rank() == 0 and mnist.find(path) is None:
            mnist.load(path)
        comm.Barrier()
    return mnist.load(path)


def _check_data(path):
    """``--data``, when given, is where the files must be: never passed over for
    $FASTGRAPH_DATA or the cache (``mnist.load``'s search order) without a word."""
    if path is None:
        return
    if not Path(path).is_dir():
        what = "not a directory" if Path(path).exists() else "no such directory"
        raise DatasetError(f"--data {path}: {what}")
    absent = mnist.missing(path)
    if absent:
        raise DatasetError(f"--data {path}: the directory does not hold the MNIST file"
                           f"{'s' if len(absent) > 1 else ''} {', '.join(absent)} (gzipped or "
                           "not)")


def _check_outputs(args):
    """Refuse, before any training, files that could not be written after it."""
    for option, path in (("--save", args.save), ("--plot", args.plot), ("--graph", args.graph)):
        if path is not None:
            check_writable(path, option)
    if args.plot is not None:
        viz.check_plot_path(args.plot, "--plot")
    destinations = {}  # resolved file -> the option that writes it
    for option, path in (("--save", args.save), ("--plot", args.plot), ("--graph", args.graph)):
        if path is None:
            continue
        if option == "--graph":
            viz.check_graph_path(path, option)
            written = viz.graph_destination(path)  # .dot beside it without Graphviz
            if written != Path(path):
                check_writable(written, f"{option} (its DOT source, Graphviz being missing)")
                viz.check_fallback(written, path, option)
            path = written
        key = os.path.realpath(path)
        if key in destinations:  # the later file would overwrite the model or the plot
            raise ValueError(f"{destinations[key][0]} {destinations[key][1]} and {option} "
                             f"{path} would write the same file")
        destinations[key] = (option, path)


def _load_model(path, classes=10):
    """The input and output nodes a saved MNIST model names, checked, and its meta."""
    graph, meta = saver.load(path)
    names = {key: meta.get(key) for key in ("input", "output")}
    for key, name in names.items():
        if not isinstance(name, str):
            raise ModelFileError(f"{path}: the model's meta does not name its {key} node "
                                 f"(meta[{key!r}] is {name!r})")
    try:
        x, predict = (graph.get_node(name) for name in names.values())
    except KeyError as error:
        raise ModelFileError(f"{path}: the model names a node it does not hold "
                             f"({error.args[0]})") from None
    shape = meta.get("image_shape", [28, 28])
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(size, int) and size > 0 for size in shape)):
        raise ModelFileError(f"{path}: meta['image_shape'] is {shape!r}, expected [rows, cols]")
    # An image is fed as x takes it, its pixels row by row in x's shape: a column (MNIST's,
    # and a one-channel image of conv2d), a row, or the (rows, cols) image itself (_scores).
    if not x.is_input or x.dimension() != shape[0] * shape[1]:
        raise ModelFileError(f"{path}: the input node {x.name} {x.dim} does not take "
                             f"{shape[0]}x{shape[1]} images")
    inputs = graph.tape(predict).inputs
    if x not in inputs:
        raise ModelFileError(f"{path}: the output node {predict.name} does not depend on the "
                             f"input node {x.name}")
    others = [node.name for node in inputs if node is not x]
    if others:  # a saved model keeps no input's value: they would have none
        raise ModelFileError(f"{path}: the output node {predict.name} depends on the input "
                             f"node{'s' if len(others) > 1 else ''} {', '.join(others)} "
                             f"besides {x.name}, expected on {x.name} alone (the images are "
                             "all that evaluate and predict feed)")
    if predict.dimension() != classes:
        raise ModelFileError(f"{path}: the output node {predict.name} gives "
                             f"{predict.dimension()} numbers per image, expected one per digit "
                             f"({classes})")
    for node in graph.nodes:
        where = None if node.parents or node.is_input else checks.first_non_finite(node.flat)
        if where is not None:
            raise ModelFileError(f"{path}: parameter {node.name} holds {node.flat[where]}: the "
                                 "model diverged or the file is damaged, so its predictions "
                                 "would mean nothing")
    return x, predict, {**meta, "image_shape": tuple(shape)}


def _scores(x, predict, features, chunk=1000):
    """The output for ``features``, 1,000 images at a time: a convolution's patch matrix
    holds every pixel 25 times (LeNet-5's first layer: 78 MB for 1,000 images)."""
    features = features.reshape(len(features), *x.dim)  # x's own shape (_load_model)
    scores = []
    for start in range(0, len(features), chunk):
        x.set_value(features[start : start + chunk])
        predict.forward()
        scores.append(predict.flat.copy())
    return np.concatenate(scores)


def _evaluate(args):
    _check_data(args.data)
    x, predict, _ = _load_model(args.model)
    _, _, x_test, y_test = mnist.load(args.data)
    scores = _scores(x, predict, mnist.features(x_test, x.graph.dtype))
    report = metrics.precision_recall_f1(y_test, scores, classes=10)
    print(f"test accuracy: {metrics.accuracy(y_test, scores):.4f}")
    print("class  precision  recall     f1  support")
    for digit in range(10):
        print(f"{digit:>5}  {report['precision'][digit]:9.4f}  {report['recall'][digit]:6.4f}"
              f"  {report['f1'][digit]:.4f}  {report['support'][digit]:7d}")
    macro = report["macro"]
    print(f"macro  {macro['precision']:9.4f}  {macro['recall']:6.4f}  {macro['f1']:.4f}")
    print("confusion matrix (rows: true digit, columns: predicted):")
    for row in metrics.confusion_matrix(y_test, scores, classes=10):
        print(" ".join(f"{count:5d}" for count in row))
    return 0


def _predict(args):
    x, predict, meta = _load_model(args.model)
    images = np.stack([_read_image(path, meta["image_shape"]) for path in args.images])
    scores = _scores(x, predict, mnist.features(images, x.graph.dtype))
    for path, row in zip(args.images, scores):
        digit = int(row.argmax())
        print(f"{path}: {digit} (probability {row[digit]:.4f})")
    return 0


def _read_image(path, shape):
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as error:
        raise ValueError("reading images needs Pillow: pip install 'fastgraph[plot]'") from error
    try:
        with warnings.catch_warnings():  # a huge image is refused below, by its size
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open_regular(path) as stream, Image.open(stream) as image:
                if image.size != (shape[1], shape[0]):  # before decoding a single pixel
                    raise ValueError(f"{path}: expected a {shape[0]}x{shape[1]} image, got "
                                     f"{image.size[0]}x{image.size[1]} (width x height)")
                return _grey(image, path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except UnidentifiedImageError:  # its message names a stream: "<_io.BufferedReader ...>"
        raise ValueError(f"{path}: not an image Pillow can read (no image format it knows"
                         + (": the file is empty)" if _is_empty(path) else ")")) from None
    except (Image.DecompressionBombError, OSError) as error:
        raise ValueError(f"{path}: not an image Pillow can read ({error})") from error


def _is_empty(path):
    try:
        return os.stat(path).st_size == 0
    except OSError:
        return False


def _grey(image, path):
    """The image as 0-255 grey levels (uint8). ``convert("L")`` clips 16-bit and float
    images (it would make them black and white), so those are scaled here. An image with
    transparency (an alpha channel, or a palette's transparent colour) that is not opaque
    everywhere is read by its alpha, opaque as ink (MNIST's white): a digit drawn in black
    or in white on a transparent ground is the same digit, and its colours alone, which
    ``convert("L")`` keeps, can be all one colour."""
    if "A" in image.getbands() or "transparency" in image.info:
        alpha = np.asarray(image.convert("RGBA"))[:, :, 3]
        if alpha.min() < 255:
            return alpha.copy()
    if image.mode.startswith("I;16"):  # 16-bit grey: 0..65535
        return np.round(np.asarray(image, dtype=np.float64) / 257).astype(np.uint8)
    if image.mode in ("I", "F"):  # 32-bit integers or floats: the range decides
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"{path}: the image holds NaN or infinite pixels")
        low, high = values.min(), values.max()
        ranges = [(1.0, "0-1")] if image.mode == "F" else []
        ranges += [(255.0, "0-255"), (65535.0, "0-65535")]
        for top, _ in ranges:
            if low >= 0 and high <= top:
                return np.round(values * (255 / top)).astype(np.uint8)
        raise ValueError(f"{path}: {image.mode} pixels from {low:g} to {high:g} are not grey "
                         f"levels ({', '.join(name for _, name in ranges)} expected)")
    return np.asarray(image.convert("L"))


if __name__ == "__main__":
    sys.exit(main())
