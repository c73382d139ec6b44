#!/bin/sh
# Regenerate docs/netron.png: tests/builders.py's residual_add compiled for diana with conv1 split
# across digital and analog (tests/netron/residual_add_split.mapping.json), shown in Netron.
# Needs the venv of ./setup.sh --test (netron, playwright and, as root, Debian's chromium).
set -eu
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python -c "import sys; sys.path.insert(0, 'tests'); import builders; builders.save(builders.residual_add(), sys.argv[1])" "$tmp/residual_add.onnx"
odimo-compile "$tmp/residual_add.onnx" --target diana --mapping tests/netron/residual_add_split.mapping.json \
    -o "$tmp/residual_add.diana.onnx" --no-progress > /dev/null
python scripts/netron_screenshot.py "$tmp/residual_add.diana.onnx" docs/netron.png --node conv1/analog
