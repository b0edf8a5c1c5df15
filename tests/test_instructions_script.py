"""benchmarks.one_sample_instructions: the loop whose instructions
benchmarks/results/series.md counts."""

import numpy as np

from benchmarks import one_sample_instructions


def test_it_runs_the_article_loop_for_the_samples_asked(recordings):
    loss = one_sample_instructions.main(["40"])
    assert loss.value.shape == (1, 1) and np.isfinite(loss.value).all()
    assert len(recordings) <= 1  # one training pass, replayed (none on the walker)
