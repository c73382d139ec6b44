#!/usr/bin/env bash
# Set up odimo in ./.venv: CPU torch first (so nothing pulls CUDA wheels), then odimo and its test
# extra, then Debian's Fashion-MNIST. Idempotent: a second run only compares a stamp and returns.
set -euo pipefail
cd "$(dirname "$0")"

venv=.venv
stamp="$venv/.odimo-setup"
want="$(sha256sum pyproject.toml | cut -c1-16)-$(python3 -c 'import sys; print(sys.version_info[:2])')"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  # torch first, pinned to the CPU build; pyproject's `torch>=2.4` is then already satisfied.
  "$venv/bin/python" -m pip install -q "torch==2.13.0"
  "$venv/bin/python" -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi

fmnist=/usr/share/datasets/fashion-mnist
if [ ! -f "$fmnist/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q dataset-fashion-mnist >/dev/null \
      || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  else
    echo "setup: Fashion-MNIST is missing; run: sudo apt-get install dataset-fashion-mnist" >&2
  fi
fi
