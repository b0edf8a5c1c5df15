"""Processes forked after fastgraph computed (multiprocessing's default start on Linux), and
two processes or threads saving into one folder (helper hG's findings): a forked child ran
into GNU OpenMP, which cannot serve it (killed at its first parallel loop, or waiting forever
in MKL's product), and the Pool waited forever."""

import os
import subprocess
import sys
import textwrap
import threading

import pytest

import fastgraph as fg

linux = pytest.mark.skipif(sys.platform != "linux", reason="fork and /proc are Linux's")

TRAIN = textwrap.dedent("""
    import multiprocessing, sys
    import numpy as np, fastgraph as fg

    def mlp(seed):
        rng = np.random.default_rng(seed)
        m = fg.models.mlp(784, (100,), 10, seed=seed)  # a weight of 78,400: owned in parts
        o = fg.optimizer.Adam(m.graph, m.loss, 0.001)
        x, y = rng.integers(0, 256, (640, 784)).astype(np.uint8), rng.integers(0, 10, 640)
        for _ in fg.datasets.Batches(x, y, 64, scale=1 / 255, seed=seed).feed(m.x, m.one_hot):
            o.one_step(); o.update()  # Batches.feed: a prange gather
        return [p.value.tobytes() for p in o.params]

    def lenet(seed):
        rng = np.random.default_rng(seed)
        m = fg.models.lenet5(seed=seed)
        o = fg.optimizer.Adam(m.graph, m.loss, 0.001)
        x, y = rng.integers(0, 256, (64, 784)).astype(np.uint8), rng.integers(0, 10, 64)
        for _ in fg.datasets.Batches(x, y, 16, scale=1 / 255, seed=seed).feed(m.x, m.one_hot):
            o.one_step(); o.update()  # im2col, pooling: prange kernels
        return [p.value.tobytes() for p in o.params]

    if __name__ == "__main__":
        train = {"mlp": mlp, "lenet": lenet}[sys.argv[1]]
        alone = train(1)
        train(0)  # the parent computes first
        with multiprocessing.get_context("fork").Pool(1) as pool:
            forked = pool.apply_async(train, (1,)).get(timeout=100)
        print("same" if forked == alone else "differs")
""")


def _run(script, args, threads, tmp_path, timeout=200):
    path = tmp_path / "script.py"
    path.write_text(script)
    env = dict(os.environ, FASTGRAPH_THREADS=threads)
    try:
        return subprocess.run([sys.executable, str(path), *args], capture_output=True,
                              text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"hung: {error.stderr!r:.400}")


@linux
@pytest.mark.parametrize("threads", ["1", "auto"])
@pytest.mark.parametrize("model", ["mlp", "lenet"])
def test_a_child_forked_after_the_parent_computed_trains_as_a_fresh_process(
        tmp_path, model, threads):
    """The child runs on one thread, its prange kernels as plain loops: the same numbers,
    bit for bit, as the parent's own run of the same training (on one thread, or on the
    thread count its chooser took: the products give the same numbers on either)."""
    done = _run(TRAIN, [model], threads, tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "same", \
        done.stdout + done.stderr[-800:]


CONTINUE = textwrap.dedent("""
    import multiprocessing
    import numpy as np, fastgraph as fg

    rng = np.random.default_rng(0)
    m = fg.models.mlp(784, (100,), 10, seed=0)
    o = fg.optimizer.Adam(m.graph, m.loss, 0.001)
    x, y = rng.integers(0, 256, (640, 784)).astype(np.uint8), rng.integers(0, 10, 640)
    batches = fg.datasets.Batches(x, y, 64, scale=1 / 255, shuffle=False)

    def epoch(_=None):  # the parent's graph, its passes recorded in the parent
        for _ in batches.feed(m.x, m.one_hot):
            o.one_step(); o.update()
        return [p.value.tobytes() for p in o.params]

    if __name__ == "__main__":
        epoch()
        with multiprocessing.get_context("fork").Pool(1) as pool:
            forked = pool.apply_async(epoch).get(timeout=100)
        print("same" if forked == epoch() else "differs")
""")


@linux
def test_a_forked_child_goes_on_with_the_parents_graph(tmp_path):
    """A graph trained in the parent, trained on in the child: its passes (which call the
    parallel kernels) are recorded again on the plain ones; the same numbers as the
    parent's own next epoch."""
    done = _run(CONTINUE, [], "auto", tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "same", \
        done.stdout + done.stderr[-800:]


LATER = textwrap.dedent("""
    import multiprocessing, sys
    import numpy as np, fastgraph as fg

    def batches(seed):  # fastgraph.datasets, first imported in the child
        rng = np.random.default_rng(seed)
        m = fg.models.mlp(784, (100,), 10, seed=seed)
        o = fg.optimizer.Adam(m.graph, m.loss, 0.001)
        x, y = rng.integers(0, 256, (256, 784)).astype(np.uint8), rng.integers(0, 10, 256)
        for _ in fg.datasets.Batches(x, y, 64, scale=1 / 255, seed=seed).feed(m.x, m.one_hot):
            o.one_step(); o.update()
        return [p.value.tobytes() for p in o.params]

    if __name__ == "__main__":
        m = fg.models.mlp(784, (100,), 10, seed=0)  # the parent feeds with set_value only
        o = fg.optimizer.Adam(m.graph, m.loss, 0.001)
        for _ in range(3):
            m.x.set_value(np.ones((64, 784), np.float32))
            m.one_hot.set_value(np.eye(10, dtype=np.float32)[np.arange(64) % 10])
            o.one_step(); o.update()
        assert "fastgraph.datasets" not in sys.modules
        with multiprocessing.get_context("fork").Pool(1) as pool:
            forked = pool.apply_async(batches, (1,)).get(timeout=100)
        print("same" if forked == batches(1) else "differs")
""")


@linux
def test_kernels_a_forked_child_imports_later_run_on_one_core_too(tmp_path):
    """``fastgraph.datasets`` loads on first use: its gathering kernels, made after the
    fork, ran their parallel loops, and Numba stopped the child."""
    done = _run(LATER, [], "auto", tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "same", \
        done.stdout + done.stderr[-800:]


def test_two_saves_into_one_folder_at_once_leave_one_whole_pair(tmp_path):
    """Two threads saving their own graphs with the article's Saver into one folder at the
    same moment left model.json of one save and weights.npz of the other in 40 of 300
    rounds: a pair that no load accepts, the old pair gone. One save's pair, whole, now."""
    models = [fg.models.mlp(20, (16,), 3, seed=seed) for seed in (0, 1)]
    target = fg.models.mlp(20, (16,), 3, seed=5)
    rounds = 100
    go, done = threading.Barrier(3), threading.Barrier(3)

    def save(model):
        for _ in range(rounds):
            go.wait()
            fg.saver.Saver(tmp_path).save(model.graph)
            done.wait()

    savers = [threading.Thread(target=save, args=(model,)) for model in models]
    for saver in savers:
        saver.start()
    refused = 0
    for _ in range(rounds):
        go.wait()
        done.wait()
        try:
            fg.saver.Saver(tmp_path).load(target.graph)
        except fg.saver.ModelFileError:
            refused += 1
    for saver in savers:
        saver.join(30)
    assert refused == 0


FORK_WHILE_SAVING = textwrap.dedent("""
    import contextlib, io, os, signal, sys, threading, time
    import fastgraph as fg
    from fastgraph import files

    root = sys.argv[1]
    with fg.Graph(seed=0) as graph:
        x = fg.Variable(dim=(3, 1), init=False, trainable=False)
        fg.layer.fc(x, 3, 2, None)
    inside = threading.Event()

    def renaming():  # what a save holds around its renames
        with files.folders_locked([root]):
            inside.set()
            time.sleep(0.5)

    thread = threading.Thread(target=renaming)
    thread.start()
    inside.wait()
    child = os.fork()
    if child == 0:
        signal.alarm(20)
        with contextlib.redirect_stdout(io.StringIO()):
            fg.trainer.Saver(root).save(graph)  # the other thread's hold never ends here
        time.sleep(3)  # a worker lives on
        os._exit(0)
    thread.join()
    began = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        fg.trainer.Saver(root).save(graph)
    waited = time.perf_counter() - began
    status = os.waitpid(child, 0)[1]
    print(f"child {status} parent waited {waited:.1f}")
""")


@linux
def test_a_fork_while_another_thread_saves_blocks_neither_process(tmp_path):
    """A fork while another thread held a folder for its renames (helper hH): the child's
    save waited forever for the lock that thread held (it does not exist in the child), and
    the child's copy of the folder's handle kept the flock, so the parent's next save
    waited until the child ended."""
    done = _run(FORK_WHILE_SAVING, [str(tmp_path)], "1", tmp_path, timeout=60)
    child, parent = done.stdout.split()[1], float(done.stdout.split()[-1])
    assert done.returncode == 0 and child == "0" and parent < 2, done.stdout + done.stderr


TWO_NAMES = textwrap.dedent("""
    import contextlib, io, os, sys
    import fastgraph as fg

    root = sys.argv[1]
    os.symlink(".", os.path.join(root, "same"))
    with fg.Graph(seed=0) as graph:
        x = fg.Variable(dim=(3, 1), init=False, trainable=False)
        fg.layer.fc(x, 3, 2, None)
    with contextlib.redirect_stdout(io.StringIO()):
        fg.trainer.Saver(root).save(graph, model_file_name="same/model.json")
    print(sorted(name for name in os.listdir(root) if name.endswith((".json", ".npz"))))
""")


def test_a_pair_saved_through_two_names_of_one_folder_does_not_wait_on_itself(tmp_path):
    """model.json through a symbolic link to the folder of weights.npz: the folder was
    locked twice, the second lock waited for the first, and the save never ended (helper
    hH). Run in a process of its own, with a timeout."""
    root = tmp_path / "models"
    root.mkdir()
    done = _run(TWO_NAMES, [str(root)], "1", tmp_path, timeout=60)
    assert done.stdout.strip() == "['model.json', 'weights.npz']", done.stdout + done.stderr


@linux
def test_a_fixed_thread_count_holds_for_batches_in_a_thread_that_claimed_no_graph():
    """Batches.iterate gathered on Numba's default count (every core) in a thread that had
    claimed no graph, whatever FASTGRAPH_THREADS said."""
    script = textwrap.dedent("""
        import threading, numpy as np, numba, fastgraph as fg
        seen = []
        def feed():
            rng = np.random.default_rng(0)
            for _ in fg.datasets.Batches(rng.random((512, 784)), rng.integers(0, 10, 512), 256):
                pass
            seen.append(numba.get_num_threads())
        thread = threading.Thread(target=feed); thread.start(); thread.join()
        print(seen[0])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=dict(os.environ, FASTGRAPH_THREADS="1"), timeout=120)
    assert done.stdout.strip() == "1", done.stdout + done.stderr[-600:]


def test_more_threads_than_numba_has_are_taken_with_a_warning():
    done = subprocess.run([sys.executable, "-c", "import fastgraph"], capture_output=True,
                          text=True, env=dict(os.environ, FASTGRAPH_THREADS="1000"),
                          timeout=120)
    assert done.returncode == 0
    assert "FASTGRAPH_THREADS=1000: Numba runs at most" in done.stderr
