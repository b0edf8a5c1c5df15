"""A small data-parallel training that tests/test_distributed.py runs under mpiexec.

    python tests/mpi_worker.py train OUT_DIR     each rank writes OUT_DIR/rank<r>.npz
    python tests/mpi_worker.py kill|raise        rank 1 dies of SIGKILL / raises at update 3
    python tests/mpi_worker.py hang OUT_DIR      each rank writes OUT_DIR/<r>.pid, then waits
    python tests/mpi_worker.py --launch N MODE   the same through fastgraph.distributed.launch
    python tests/mpi_worker.py disagree WHAT     rank 1 is given another WHAT (DISAGREEMENTS);
                                                 each rank prints the error it gets (a
                                                 ValueError) and exits with status 3
    python tests/mpi_worker.py uncaught WHAT     the same, the error left to end the job
    python tests/mpi_worker.py seed-none         train with seed=None; rank 0 prints whether
                                                 the ranks' shares covered each epoch once
    python tests/mpi_worker.py end-early WHERE   a rank's program ends while the other calls
                                                 DataParallel() (see ``end_early``)
    python tests/mpi_worker.py two-models        two DataParallels of other shapes; rank 1
                                                 ends after one update fewer
    python tests/mpi_worker.py models            models that differ, and alike but numbered
                                                 differently (see ``models``)

The test runs ``train_model`` in its own process too, as the single-process reference.
"""

import json
import os
import signal
import sys
import time

import numpy as np

import fastgraph as fg
from fastgraph import distributed
from fastgraph.datasets import Batches
from fastgraph.models import mlp
from fastgraph.trainer import SimpleTrainer

RULES = {
    "GradientDescent": (fg.optimizer.GradientDescent, 0.1),
    "Momentum": (fg.optimizer.Momentum, 0.05),
    "AdaGrad": (fg.optimizer.AdaGrad, 0.05),
    "RMSProp": (fg.optimizer.RMSProp, 0.01),
    "Adam": (fg.optimizer.Adam, 0.01),
}
FEATURES, CLASSES, BATCH = 12, 4, 64


def data():
    """197 samples: global batches 64, 64, 64 and an uneven 5 (2 and 3 for two ranks)."""
    rng = np.random.default_rng(7)
    features = rng.normal(size=(197, FEATURES)).astype(np.float32)
    labels = (features[:, :CLASSES] + 0.5 * rng.normal(size=(197, CLASSES))).argmax(axis=1)
    return features, labels


def train_model(rule, comm=None, fault=None):
    """Train a 12-16-4 network with ``rule``: two epochs of ``data()``, then one epoch of its
    first 65 samples (a last batch of one sample, so rank 0 of two has none). Returns the
    parameters and the history. With ``comm``, ranks other than 0 start from other values,
    which the broadcast must replace."""
    rank = 0 if comm is None else comm.Get_rank()
    model = mlp(FEATURES, (16,), CLASSES, seed=11 + rank)
    kind, learning_rate = RULES[rule]
    optimizer = kind(model.graph, model.loss, learning_rate)
    options = dict(batch_size=BATCH, seed=3, progress=False, log=lambda line: None)
    if comm is None:
        trainer = SimpleTrainer(model.x, model.one_hot, model.predict, optimizer, **options)
    else:
        optimizer = Faulty(optimizer, comm, fault) if fault else distributed.DataParallel(
            optimizer, comm)
        trainer = distributed.DistributedTrainer(model.x, model.one_hot, model.predict,
                                                 optimizer, **options)
    features, labels = data()
    trainer.train(features, labels, epochs=2)
    trainer.train(features[:65], labels[:65], epochs=1)
    return [param.value.copy() for param in optimizer.params], trainer.history


class Faulty(distributed.DataParallel):
    """Rank 1 fails at its third update: killed by a signal, or raising."""

    def __init__(self, optimizer, comm, fault):
        super().__init__(optimizer, comm)
        self.fault, self.updates = fault, 0

    def update(self):
        self.updates += 1
        if self.rank == 1 and self.updates == 3:
            if self.fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("simulated failure on rank 1")
        super().update()


#: What rank 1 is given differently from rank 0, by ``disagree_run``.
DISAGREEMENTS = ("epochs", "samples", "batch_size", "hidden", "optimizer", "refused",
                 "train_calls", "updates", "learning_rate")


def disagree_run(what, comm):
    """Train the 12-16-4 network with Adam on every rank, rank 1 with another ``what``:
    epochs 3 (not 2), the first 150 samples (not 197), batch 32 (not 64), 17 hidden units,
    Momentum, epochs 0 (refused by its own check), one more train() call, or (a loop of
    one_step()/update() without a trainer) one more update, or (the same loop) a learning
    rate changed after two updates (each rank then prints the sum of its parameters)."""
    odd = comm.Get_rank() == 1
    model = mlp(FEATURES, (17 if odd and what == "hidden" else 16,), CLASSES, seed=11)
    kind = fg.optimizer.Momentum if odd and what == "optimizer" else fg.optimizer.Adam
    optimizer = distributed.DataParallel(kind(model.graph, model.loss, 0.01), comm)
    features, labels = data()
    if what in ("updates", "learning_rate"):
        batches = Batches(features, labels, 32, classes=CLASSES, seed=3)
        updates = 5 if odd and what == "updates" else 4
        try:
            for step, _ in zip(range(updates), batches.feed(model.x, model.one_hot)):
                if odd and what == "learning_rate" and step == 2:
                    optimizer.learning_rate = 0.02
                optimizer.one_step()
                optimizer.update()
        finally:
            if what == "learning_rate":
                total = sum(float(param.value.astype(np.float64).sum())
                            for param in optimizer.params)
                print(f"<rank {comm.Get_rank()} parameters: {total!r}>", flush=True)
        return
    trainer = distributed.DistributedTrainer(
        model.x, model.one_hot, model.predict, optimizer, seed=3, progress=False,
        log=lambda line: None, batch_size=32 if odd and what == "batch_size" else 64)
    if odd and what == "samples":
        features, labels = features[:150], labels[:150]
    epochs = {"epochs": 3, "refused": 0}.get(what, 2) if odd else 2
    trainer.train(features, labels, epochs=epochs)
    if odd and what == "train_calls":
        trainer.train(features, labels, epochs=1)


def seed_none(comm):
    """Train with seed=None; rank 0 prints ``covered`` when the ranks' shares of each epoch
    were disjoint and covered it (every rank shuffled alike), else what they took."""
    model = mlp(FEATURES, (16,), CLASSES, seed=11)
    optimizer = distributed.DataParallel(fg.optimizer.Adam(model.graph, model.loss, 0.01), comm)
    taken = []

    class Recorded(distributed.ShardedBatches):
        def _batches(self, order):
            taken.append([])
            for rows in super()._batches(order):
                taken[-1].extend(rows.tolist())
                yield rows

    trainer = distributed.DistributedTrainer(model.x, model.one_hot, model.predict, optimizer,
                                             batch_size=BATCH, seed=None, progress=False,
                                             log=lambda line: None)
    trainer.batches = lambda features, labels: Recorded(
        features, labels, BATCH, comm.Get_rank(), comm.Get_size(), classes=CLASSES, seed=None)
    features, labels = data()
    trainer.train(features, labels, epochs=2)
    trainer.train(features, labels, epochs=1)
    every = comm.gather(taken, root=0)
    if comm.Get_rank() == 0:
        epochs = [sorted(sum((ranks[epoch] for ranks in every), [])) for epoch in range(3)]
        print("covered" if all(rows == list(range(len(labels))) for rows in epochs) else
              f"not covered: {every}", flush=True)


def rank_from_launcher():
    return int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))


def end_early(where):
    """Rank 0 wraps its optimizer in DataParallel() while rank 1's program ends: with
    ``sys.exit(1)`` before it started MPI (``before-mpi``: its data could not be read), or
    (``unwrapped``) rank 0's program ends, status 0, without wrapping while rank 1 wraps."""
    waiting = 1 if where == "unwrapped" else 0
    if rank_from_launcher() != waiting:
        if where == "before-mpi":
            sys.exit(1)
        distributed.communicator()
        return 0
    model = mlp(FEATURES, (16,), CLASSES, seed=11)
    distributed.DataParallel(fg.optimizer.Adam(model.graph, model.loss, 0.01))
    return 0


def two_models(comm):
    """Two DataParallels of other shapes on one communicator; rank 0 updates the first three
    times, rank 1 twice, then its program ends."""
    first, second = (mlp(FEATURES, (hidden,), CLASSES, seed=11) for hidden in (16, 8))
    optimizer = distributed.DataParallel(fg.optimizer.Adam(first.graph, first.loss, 0.01), comm)
    distributed.DataParallel(fg.optimizer.Adam(second.graph, second.loss, 0.01), comm)
    features, labels = data()
    batches = Batches(features, labels, 32, classes=CLASSES, seed=3)
    for _ in zip(range(3 if comm.Get_rank() == 0 else 2), batches.feed(first.x, first.one_hot)):
        optimizer.one_step()
        optimizer.update()


def numbered_model(shift):
    """A 12-4 softmax regression; with ``shift``, another node built first numbers its
    nodes differently."""
    with fg.Graph(seed=5) as graph:
        if shift:
            fg.Variable((3, 1), trainable=False)
        x = fg.Variable((FEATURES, 1), trainable=False)
        one_hot = fg.Variable((CLASSES, 1), trainable=False)
        weights = fg.Variable((CLASSES, FEATURES), init=True)
        loss = fg.ops.CrossEntropyWithSoftMax(fg.ops.MatMul(weights, x), one_hot)
    return graph, x, one_hot, loss


def models(comm):
    """Rank 1's model has Tanh where rank 0's has ReLU: each rank prints the error it gets.
    Then the same model, numbered differently on rank 1, and an MLP (two DataParallels of
    other shapes) train two steps each and agree; each rank prints the sum of its parameters
    and its hash of a string. Then rank 1 ends with status 3, rank 0 half a second later."""
    rank = comm.Get_rank()
    model = mlp(FEATURES, (16,), CLASSES, activation="Tanh" if rank == 1 else "ReLU", seed=11)
    try:
        distributed.DataParallel(fg.optimizer.Adam(model.graph, model.loss, 0.01), comm)
    except distributed.RanksDisagree as error:
        print(f"rank {rank}: {type(error).__name__}: {error}", flush=True)
    graph, x, one_hot, loss = numbered_model(shift=rank == 1)
    first = distributed.DataParallel(fg.optimizer.Adam(graph, loss, 0.01), comm)
    model = mlp(FEATURES, (16,), CLASSES, seed=11 + rank)
    second = distributed.DataParallel(fg.optimizer.Adam(model.graph, model.loss, 0.01), comm)
    features, labels = data()
    for optimizer, inputs in ((first, (x, one_hot)), (second, (model.x, model.one_hot))):
        for _ in zip(range(2), Batches(features, labels, 32, classes=CLASSES,
                                       seed=3).feed(*inputs)):
            optimizer.one_step()
            optimizer.update()
        optimizer.agree("my loop", [("epochs", 1)])
    total = sum(float(param.value.astype(np.float64).sum())
                for optimizer in (first, second) for param in optimizer.params)
    print(f"<rank {rank} parameters: {total!r}> <rank {rank} hash: {hash('fastgraph')}>",
          flush=True)
    if rank == 1:
        sys.exit(3)  # its collective calls are done: the job ends when rank 0's program does
    time.sleep(0.5)
    print("rank 0 ended last", flush=True)


def main(argv):
    if argv[0] == "--launch":
        return distributed.launch(int(argv[1]), [sys.executable, __file__, *argv[2:]])
    if argv[0] == "end-early":  # before any communicator, on one rank
        return end_early(argv[1])
    if argv[0] == "raise-before":  # before any communicator: the others wait in DataParallel
        if int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))) == 1:
            raise RuntimeError("rank 1 could not read its data")
        from mpi4py import MPI

        model = mlp(FEATURES, (16,), CLASSES, seed=11)
        distributed.DataParallel(fg.optimizer.Adam(model.graph, model.loss, 0.01),
                                 MPI.COMM_WORLD)
        return 0
    comm = distributed.communicator()
    if argv[0] == "disagree":
        try:
            disagree_run(argv[1], comm)
        except ValueError as error:  # RanksDisagree, or rank 1's own refusal
            print(f"rank {comm.Get_rank()}: {type(error).__name__}: {error}", flush=True)
            comm.Barrier()  # both have printed
            return 3
    elif argv[0] == "uncaught":
        disagree_run(argv[1], comm)
    elif argv[0] == "seed-none":
        seed_none(comm)
    elif argv[0] == "two-models":
        two_models(comm)
    elif argv[0] == "models":
        models(comm)
    elif argv[0] == "frozen":  # the first layer's weights frozen on every rank (or rank 1)
        model = mlp(FEATURES, (16,), CLASSES, seed=11 + comm.Get_rank())  # rank 0's win
        first = model.graph.get_node("Variable:2")
        if argv[1] == "both" or comm.Get_rank() == 1:
            first.trainable = False
        try:
            optimizer = distributed.DataParallel(fg.optimizer.Adam(model.graph, model.loss,
                                                                   0.01), comm)
        except ValueError as error:
            print(f"rank {comm.Get_rank()}: {type(error).__name__}: {error}", flush=True)
            comm.Barrier()
            return 3
        features, labels = data()
        for _ in Batches(features, labels, 32, classes=CLASSES, seed=3).feed(model.x,
                                                                              model.one_hot):
            optimizer.one_step()
            optimizer.update()
        total = sum(float(node.value.astype(np.float64).sum()) for node in model.graph.nodes
                    if isinstance(node, fg.Variable) and not node.is_input)
        print(f"<rank {comm.Get_rank()} parameters: {total!r}>", flush=True)
    elif argv[0] == "train":
        for rule in RULES:
            params, history = train_model(rule, comm)
            np.savez(os.path.join(argv[1], f"{rule}-rank{comm.Get_rank()}.npz"), *params)
            if comm.Get_rank() == 0:
                with open(os.path.join(argv[1], f"{rule}-history.json"), "w") as stream:
                    json.dump(history, stream)
    elif argv[0] == "hang":  # in all-reduces, as a long training would be
        with open(os.path.join(argv[1], f"{comm.Get_rank()}.pid"), "w") as stream:
            stream.write(str(os.getpid()))
        deadline = time.monotonic() + 120  # ends by itself should nothing end it
        while time.monotonic() < deadline:
            comm.allreduce(1)
            time.sleep(0.01)
    else:
        train_model("Adam", comm, fault=argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
