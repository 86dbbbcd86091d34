#!/usr/bin/env bash
# Pack the meft binary for a GPU machine that has no Rust toolchain: build
# it with `--features cuda` (or take one built already), strip it into the
# repository root as ./meft (git-ignored, with ./meft.build saying what it
# is), gzip it into .gpu/ for the trip, and print its size and how to run
# scripts/gpu-check.sh there.
#
#   scripts/pack-gpu.sh            # eval "$(scripts/cuda-toolchain.sh)", then cargo build
#   scripts/pack-gpu.sh BINARY     # pack BINARY as it is
#
# What travels to the machine in one call is limited to 64 MiB: the working
# tree plus the carried files. The SmolLM2 GGUF (94 MiB) does not fit beside
# the binary, so where it is present (MEFT_SMOLLM2, or scripts/get-smollm2.sh's
# path) this also stages it in two parts under .gpu/, with the binary
# compressed, for two calls in a row on one warm machine.
#
# Environment:
#   CUDA_COMPUTE_CAP   the GPU's compute capability (default 90: H100, H200)
#   MEFT_SMOLLM2       the SmolLM2 GGUF to stage
set -euo pipefail

me=pack-gpu
die() {
  echo "$me: $*" >&2
  exit 1
}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
limit=$((64 << 20))
# Room for what the limit counts that is not measured here.
margin=$((2 << 20))

if [ $# -gt 1 ]; then
  die "usage: scripts/pack-gpu.sh [BINARY]"
elif [ $# -eq 1 ]; then
  src=$1
  [ -f "$src" ] || die "$src: no such file"
else
  eval "$(scripts/cuda-toolchain.sh)"
  echo "$me: cargo build --release --features cuda (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)" >&2
  cargo build --release --features cuda
  src=target/release/meft
fi

strip -o meft "$src" || die "strip failed on $src"
chmod +x meft
cuda=yes
if ! readelf -d meft 2>/dev/null | grep -q 'libcuda\.so'; then
  cuda=no
  echo "$me: warning: $src is not a CUDA build (it does not link libcuda): it runs only with MEFT_DEVICE=cpu" >&2
fi
{
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- 2>/dev/null || echo ' with local changes')"
  echo "packed $(date -u '+%Y-%m-%d %H:%M UTC') from $src"
  echo "cuda $cuda${CUDA_COMPUTE_CAP:+, compute capability $CUDA_COMPUTE_CAP}"
} >meft.build

# Bytes of the working tree that travel: tracked files and untracked ones
# git does not ignore.
tree=$(git ls-files -z -co --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
bytes() { stat -c %s "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
# The binary travels compressed: a CUDA build carries its kernels and is
# larger than a call's limit as it is (69 MiB stripped for compute
# capability 90; about 20 MiB gzipped).
rm -rf .gpu
mkdir -p .gpu
gzip -9 -c meft >.gpu/meft.gz
cp meft.build .gpu/meft.build
bin=$(bytes meft)
gz=$(($(bytes .gpu/meft.gz) + $(bytes .gpu/meft.build)))
one=$((tree + gz))
echo "$me: ./meft is $(mib "$bin") (stripped from $src), $(mib "$gz") gzipped in .gpu/; with the working tree ($(mib "$tree")) one call carries $(mib "$one") of $(mib "$limit")"
[ "$one" -le $((limit - margin)) ] || die "the compressed binary and the working tree do not fit in one call"
unpack='gzip -dc .gpu/meft.gz >meft && chmod +x meft && cp .gpu/meft.build meft.build'

# The device machine's output comes back as at most 8 files, two folders
# deep: the check's folder travels back as one archive, its summary and
# screenshot beside it.
back='rc=$?; tar -C /tmp -czf $OUT/gpu-check.tgz gc; cp /tmp/gc/summary.txt /tmp/gc/*.png $OUT/ 2>/dev/null; exit $rc'
cat <<EOF

On the GPU machine, one call (no SmolLM2; its runs are skipped, saying so):
  carry:     [".gpu/meft.gz", ".gpu/meft.build"]
  timeout_s: 570
  command:   $unpack && scripts/gpu-check.sh /tmp/gc; $back
EOF

gguf="${MEFT_SMOLLM2:-.cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
if [ ! -f "$gguf" ]; then
  echo
  echo "No SmolLM2 GGUF at $gguf (scripts/get-smollm2.sh fetches it): nothing staged for the two-call recipe."
  exit 0
fi

# Two calls: the first carries the GGUF's first part, which its command
# moves out of the working tree; the second carries the rest with the
# compressed binary and runs the check. Between them the machine must stay
# warm (it goes back after 30 s idle): a cold second call finds no first
# part, and the check then runs without SmolLM2, saying so.
size=$(bytes "$gguf")
rest=$((limit - margin - tree - $(bytes .gpu/meft.gz) - $(bytes .gpu/meft.build)))
first=$((size - rest))
[ "$rest" -gt 0 ] && [ $((tree + first)) -le $((limit - margin)) ] ||
  die "the GGUF ($(mib "$size")) does not fit in two calls beside the binary"
head -c "$first" "$gguf" >.gpu/smollm2.part1
tail -c "$rest" "$gguf" >.gpu/smollm2.part2
sum=$(sha256sum "$gguf" | cut -d' ' -f1)
stage=/tmp/meft-gpu
cat <<EOF

With SmolLM2: two calls in a row on one warm machine ($(mib "$size") of GGUF staged in .gpu/):
 1. carry:     [".gpu/smollm2.part1"]   ($(mib $((tree + first))))
    timeout_s: 60
    command:   mkdir -p $stage && mv .gpu/smollm2.part1 $stage/ && nvidia-smi -L
 2. carry:     [".gpu/meft.gz", ".gpu/meft.build", ".gpu/smollm2.part2"]   ($(mib $((tree + rest + $(bytes .gpu/meft.gz) + $(bytes .gpu/meft.build)))))
    timeout_s: 570
    command:   $unpack && cat $stage/smollm2.part1 .gpu/smollm2.part2 >$stage/smollm2.gguf; echo "$sum  $stage/smollm2.gguf" | sha256sum -c || rm -f $stage/smollm2.gguf; MEFT_SMOLLM2=$stage/smollm2.gguf scripts/gpu-check.sh /tmp/gc; $back
EOF
