#!/usr/bin/env bash
# Create .venv (if missing) and install ctrain-dist with its dev extra into it.
#
# torch: on a machine with an NVIDIA driver, the newest torch from the package index (a CUDA
# build); without one, CTRAIN_TORCH (default torch==2.13.0, a CPU build where the index offers
# one) so that a CPU-only machine does not pull gigabytes of CUDA libraries. Set CTRAIN_TORCH
# to any pip requirement to choose yourself. pyproject.toml itself never caps torch.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    "${pip[@]}" "${CTRAIN_TORCH:-torch}"
  else
    "${pip[@]}" "${CTRAIN_TORCH:-torch==2.13.0}"
  fi
fi
"${pip[@]}" -e '.[dev]'
