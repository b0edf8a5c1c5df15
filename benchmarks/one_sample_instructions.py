"""The article's one-sample MLP loop (``test_article_programs.py``'s program: an update every
32 samples) for N samples, to count its instructions, which do not depend on what else the
machine runs:

    OPENBLAS_NUM_THREADS=1 FASTGRAPH_THREADS=1 valgrind --tool=callgrind \
        python -m benchmarks.one_sample_instructions 256
    OPENBLAS_NUM_THREADS=1 FASTGRAPH_THREADS=1 valgrind --tool=callgrind \
        python -m benchmarks.one_sample_instructions 1280

The difference of the two totals over 1,024 is the loop's instructions a sample (import
and set-up cancel; run each once before, so that nothing is compiled in them). The two
variables keep other threads out of the count: NumPy's OpenBLAS starts worker threads that
spin for a while (``blas_thread_server``: -11 to +12 thousand instructions a sample in
the difference, by the luck of the two runs), and fastgraph's count of threads would be
chosen by measuring."""

import argparse

import fastgraph as ms
from benchmarks.test_article_programs import mlp


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("samples", type=int)
    samples = parser.parse_args(argv).samples
    graph = ms.Graph(seed=0)
    with graph:
        loss, feed = mlp(graph)
        optimizer = ms.optimizer.Adam(graph, loss, 0.001)
    for i in range(samples):
        feed(i)
        optimizer.one_step()
        if (i + 1) % 32 == 0:
            optimizer.update()
    return loss


if __name__ == "__main__":
    main()
