#!/usr/bin/env bash
# The GPU measurements of issue 24, in one call of under 8 minutes on a lent GPU
# (H100/H200, no network: it uses what the repository carries and the machine's
# own python3 with jax, torch, flax and equinox).
#
#   1. the kernel table (benchmarks/bench_pallas.py): rj.scan(kernel="pallas")
#      and kernel="xla", cuDNN through jax.experimental.rnn, PyTorch's cuDNN
#      layers; LSTM and GRU, float32 and bfloat16; with an on-GPU check that the
#      Pallas kernel equals the XLA scan first. Writes pallas_<card>.{json,md}.
#   2. the parallel-in-time table (benchmarks/bench_parallel.py):
#      rj.parallel_scan against the sequential rj.scan, GRU, T = 100,000,
#      H = 1, 8, 32, B = 1. Writes parallel_gpu.{json,md} (the card is named in
#      them).
#
# Results go to benchmarks/results/ and, where $OUT is set (the device
# machine's return folder), to $OUT too, with the log. Each stage has a hard
# time limit; both scripts write partial results as they go.
#
#   benchmarks/gpu_suite.sh            # on the GPU machine
#   benchmarks/gpu_suite.sh --smoke    # a seconds-long dry run at tiny sizes on
#                                      # any machine (also RNNJAX_GPU_SUITE_SMOKE=1);
#                                      # results go to a temporary folder only
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
SMOKE="${RNNJAX_GPU_SUITE_SMOKE:-0}"
[ "${1:-}" = "--smoke" ] && SMOKE=1

if [ "$SMOKE" = 1 ]; then
  RESULTS="${RNNJAX_GPU_SUITE_RESULTS:-$(mktemp -d)}"
  KERNELS=(--smoke --budget 60)
  PARALLEL=(--T 32 --H 2 --B 1 --reps 1)
  LIMIT_K=0 LIMIT_P=0  # no limit: a loaded machine is slow, not broken
else
  RESULTS=benchmarks/results
  KERNELS=(--budget 240)
  PARALLEL=(--T 100000 --H 1 8 32 --B 1 --reps 3)
  LIMIT_K=330 LIMIT_P=120
fi
mkdir -p "$RESULTS"
LOG="${OUT:-${TMPDIR:-/tmp}}/gpu_suite.log"
exec > >(tee "$LOG") 2>&1
status=0
echo "gpu_suite: $(date -u +%FT%TZ), smoke=$SMOKE"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
timeout "$LIMIT_K" "$PY" benchmarks/bench_pallas.py --out "$RESULTS" "${KERNELS[@]}" || status=1
timeout "$LIMIT_P" "$PY" benchmarks/bench_parallel.py --out "$RESULTS" "${PARALLEL[@]}" || status=1
if [ -n "${OUT:-}" ]; then  # the device machine's return folder (at most 8 files; the log is there)
  cp "$RESULTS"/pallas_*.json "$RESULTS"/pallas_*.md "$OUT"/ 2>/dev/null
  cp "$RESULTS"/parallel_gpu.json "$RESULTS"/parallel_gpu.md "$OUT"/ 2>/dev/null
fi
echo "gpu_suite: done, status $status; results in $RESULTS"
exit $status
