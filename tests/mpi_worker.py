"""A small data-parallel training that tests/test_distributed.py runs under mpiexec.

    python tests/mpi_worker.py train OUT_DIR     each rank writes OUT_DIR/rank<r>.npz
    python tests/mpi_worker.py kill|raise        rank 1 dies of SIGKILL / raises at update 3
    python tests/mpi_worker.py hang OUT_DIR      each rank writes OUT_DIR/<r>.pid, then waits
    python tests/mpi_worker.py --launch N MODE   the same through fastgraph.distributed.launch

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


def main(argv):
    if argv[0] == "--launch":
        return distributed.launch(int(argv[1]), [sys.executable, __file__, *argv[2:]])
    comm = distributed.communicator()
    if argv[0] == "train":
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
