#!/usr/bin/env bash
# The measurements behind the README's "Performance" section, into OUTDIR:
#   compare-{1,2,3}   fastgraph, NumPy, PyTorch and JAX on both MLPs, the recurrent net, the
#                     per-sample derivatives and the cold start (run 1 with the profile)
#   extra-{1..5}      fastgraph and JAX alone on both MLPs, 5 epochs each
#   bench.txt         the compiled tape's and the Jacobians' pytest-benchmarks
#   article-{1,2,3}   the article's programs, one sample per one_step()
#   startup-*.txt     import and first step in fresh processes, warm and empty cache
#   uptime-*.txt      the load before, between and after
#   summary.md        the targets: each run's value, their range, met or not (benchmarks.series)
# Ratios are read within a run, ranges across runs. Run it with nothing else on the machine,
# from the repository, after `make compare` has installed the peers (about 7 minutes):
#   benchmarks/measure.sh /tmp/runs
set -eu
out=${1:?usage: benchmarks/measure.sh OUTDIR}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
uptime > "$out/uptime-start.txt"
for i in 1 2 3; do
  profile=$([ "$i" = 1 ] && echo --profile || true)
  "$python" -m benchmarks.compare --epochs 5 --networks 784-100-20-10,784-256-128-10 \
    --no-memory --json "$out/compare-$i.json" --chart "$out/compare-$i.png" $profile \
    > "$out/compare-$i.txt" 2>&1
  uptime > "$out/uptime-$i.txt"
done
for i in 1 2 3 4 5; do
  "$python" -m benchmarks.compare --epochs 5 --networks 784-100-20-10,784-256-128-10 \
    --frameworks fastgraph,jax --no-memory --no-cold-start --no-recurrent \
    --json "$out/extra-$i.json" --chart "$out/extra-$i.png" > "$out/extra-$i.txt" 2>&1
done
"$python" -m pytest -q benchmarks/test_compiled.py benchmarks/test_jacobians.py \
  --benchmark-only --benchmark-columns=min,median,mean,rounds -p no:cacheprovider \
  > "$out/bench.txt" 2>&1
for i in 1 2 3; do
  "$python" -m pytest -q benchmarks/test_article_programs.py --benchmark-only -k one_sample \
    --benchmark-columns=min,median,mean,rounds --benchmark-json="$out/article-$i.json" \
    -p no:cacheprovider > "$out/article-$i.txt" 2>&1
done
"$python" -m benchmarks.startup --model mlp --runs 3 > "$out/startup-mlp.txt" 2>&1
"$python" -m benchmarks.startup --model recurrent --runs 3 > "$out/startup-recurrent.txt" 2>&1
uptime > "$out/uptime-end.txt"
"$python" -m benchmarks.series "$out" > "$out/summary.md"
cat "$out/summary.md"
