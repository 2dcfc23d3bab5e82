#!/usr/bin/env bash
# The prepared GPU check (issue 21): bash benchmarks/gpu_check.sh OUT
#
# With a CUDA device, within 9.5 minutes in all, each step in its own process under its own
# time box (benchmarks/bench_gpu.py has what each does):
#   device   20 s  the machine; a pinned copy in and a float64 product out, against the CPU
#   tests   100 s  every @pytest.mark.cuda test (tests/test_cuda.py)
#   ddp      80 s  2 gloo ranks sharing the device = 1 process; NCCL with 1 rank
#   packing  70 s  seed-steps/s of K = 1, 8, 64, 256, 1024 packed seeds
#   trainer  70 s  every algorithm's step against its bare loop
#   compile 130 s  ALM and switching steps eager, compiled, compiled with CUDA graphs
#   sweep   100 s  ctrain sweep of 4 trials at gpus_per_trial 0.25, store under OUT
# Each step appends itself to OUT/gpu_check.json and OUT/gpu_check.md as it ends, so a
# step that hangs costs only itself; one killed at its box is recorded as failed.
# Without CUDA every step runs its CPU fallback (under a minute in all) and says it skipped
# the GPU part, and why. Exit 0 when no step failed.
#
# Python: .venv/bin/python (bash scripts/setup.sh makes it), or CTRAIN_PYTHON, e.g. an
# image's own python3 that has a CUDA torch. On a lent machine whose $OUT takes few files,
# give a scratch OUT and copy OUT/gpu_check.json and OUT/gpu_check.md back.
set -uo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: bash benchmarks/gpu_check.sh OUT" >&2
  exit 2
fi
mkdir -p "$1" && out=$(cd "$1" && pwd) || exit 2
cd "$(dirname "$0")/.." || exit 2
python=${CTRAIN_PYTHON:-.venv/bin/python}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "gpu_check: $python not found; run bash scripts/setup.sh first" >&2
  exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
total=570
deadline=$((SECONDS + total))

run_step() {  # run_step NAME SECONDS: the step under its box, cut to what is left of the total
  local name=$1 box=$2 left=$((deadline - SECONDS - 5)) code
  ((box > left)) && box=$left
  if ((box < 10)); then
    "$python" -m benchmarks.gpu_report missing "$out" "$name" \
      "not started: the check's ${total} s were spent by the steps before it"
    return
  fi
  echo "gpu_check: $name (at most ${box} s)"
  timeout --kill-after=5 "$box" "$python" -m benchmarks.bench_gpu "$name" "$out" --seconds "$box"
  code=$?
  if ((code == 124 || code == 137)); then
    "$python" -m benchmarks.gpu_report missing "$out" "$name" "ran past its ${box} s box" \
      --seconds "$box"
  elif ((code != 0)); then
    "$python" -m benchmarks.gpu_report missing "$out" "$name" "exited ${code} unrecorded"
  fi
}

run_step device 20
run_step tests 100
run_step ddp 80
run_step packing 70
run_step trainer 70
run_step compile 130
run_step sweep 100
"$python" -m benchmarks.gpu_report summary "$out"
