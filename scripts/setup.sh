#!/usr/bin/env bash
# Create .venv and install sam3tune into it.
#   bash scripts/setup.sh          # the package (enough for `sam3tune demo`)
#   bash scripts/setup.sh --test   # + test tools and Meta's sam3 0.1.4 (the loss-parity reference)
# TORCH_SPEC picks the torch build (default torch==2.13.0, a CPU build; on a CUDA machine set e.g.
# TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  $PIP install -q ${TORCH_SPEC:-torch==2.13.0}
fi
if [ "${1:-}" = "--test" ]; then
  $PIP install -q -e ".[test]"
  # Meta's reference implementation, test-only. --no-deps: its declared deps pull a CUDA stack and
  # torchvision, none of which the loss code needs.
  $PIP install -q --no-deps "sam3==0.1.4"
  # CLIP's BPE file (bpe_simple_vocab_16e6.txt.gz) for the tokenizer parity and sam3-random tests; --no-deps:
  # its torchvision/timm requirements are not needed for the file
  $PIP install -q --no-deps "open_clip_torch==3.3.0"
else
  $PIP install -q -e .
fi
