#!/usr/bin/env bash
# Set up odimo in ./.venv: CPU torch first (so nothing pulls CUDA wheels), then odimo, then Debian's
# Fashion-MNIST. `--test` also installs the test extra (pytest, ruff, Netron, Ray, Apache TVM) and,
# as root, Debian's chromium for the Netron check: everything the suite needs, so CI skips nothing.
# Plain setup stays small, as the quick start times it. Idempotent: a second run only compares a
# stamp and returns; a test setup also serves a plain one.
set -euo pipefail
cd "$(dirname "$0")"

case "${1:-}" in
  "") mode=plain ;;
  --test) mode=test ;;
  *) echo "usage: ./setup.sh [--test]" >&2; exit 2 ;;
esac

venv=.venv
stamp="$venv/.odimo-setup"
base="$(sha256sum pyproject.toml | cut -c1-16)-$(python3 -c 'import sys; print(sys.version_info[:2])')"
have="$(cat "$stamp" 2>/dev/null || true)"

# Debian packages, as root only; waits for another apt run's lock rather than failing on it.
apt_install() {
  local quiet=(-y -q -o DPkg::Lock::Timeout=600)
  apt-get install "${quiet[@]}" "$@" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install "${quiet[@]}" "$@" >/dev/null; }
}
is_root() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "$have" != "$base-test" ] && { [ "$mode" = test ] || [ "$have" != "$base-plain" ]; }; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  # torch first, pinned to the CPU build; pyproject's `torch>=2.4` is then already satisfied.
  "$venv/bin/python" -m pip install -q "torch==2.13.0"
  if [ "$mode" = test ]; then
    "$venv/bin/python" -m pip install -q -e ".[test]"
  else
    "$venv/bin/python" -m pip install -q -e .
  fi
  echo "$base-$mode" > "$stamp"
fi

fmnist=/usr/share/datasets/fashion-mnist
if [ ! -f "$fmnist/train-images-idx3-ubyte.gz" ]; then
  if is_root; then
    apt_install dataset-fashion-mnist
  else
    echo "setup: Fashion-MNIST is missing; run: sudo apt-get install dataset-fashion-mnist" >&2
  fi
fi

if [ "$mode" = test ] && ! command -v chromium >/dev/null; then
  if is_root; then
    apt_install chromium
  else
    echo "setup: the Netron test needs Debian's chromium; run: sudo apt-get install chromium" >&2
  fi
fi
