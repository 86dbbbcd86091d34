#!/usr/bin/env bash
# Install a CUDA 13.0 build toolchain from NVIDIA's PyPI wheels into a
# git-ignored cache and print the environment under which
# `cargo build --release --features cuda` works, so that
#
#   eval "$(scripts/cuda-toolchain.sh)" && cargo build --release --features cuda
#
# builds on a machine with no GPU, no driver and no system CUDA toolkit.
# Idempotent: a second run re-uses the install and only prints the exports.
# Messages go to stderr; stdout carries nothing but the export lines.
#
# Environment:
#   CUDA_COMPUTE_CAP   target GPU, e.g. 90 (default: 90, Hopper), 89, 80, 100
#   MEFT_CUDA_PREFIX   where the toolchain lives (default: <repo>/.cache/cuda)
set -euo pipefail

me="cuda-toolchain"
die() {
  echo "$me: $*" >&2
  exit 1
}

root=$(cd "$(dirname "$0")/.." && pwd)
prefix="${MEFT_CUDA_PREFIX:-$root/.cache/cuda}"
cap="${CUDA_COMPUTE_CAP:-90}"

# Why CUDA 13.0 and not 12.x: the -cu12 nvcc wheels ship only ptxas and
# libnvvm (no nvcc driver, no cicc, no cudafe++), so they cannot compile
# candle's kernels; the unsuffixed CUDA 13 wheels are a complete compiler.
# Why 13.0 and not newer: the GPU hosts run driver 580 (CUDA 13.0), and PTX
# from a newer nvcc carries an ISA version that driver refuses to load.
# The versions are those of NVIDIA's `cuda-toolkit==13.0.3.0` meta-package,
# pinned here one by one so that nothing but what the build needs is fetched.
release=13.0
pins=(
  nvidia-cuda-nvcc==13.0.88    # nvcc, ptxas, fatbinary, nvlink, cudafe++
  nvidia-nvvm==13.0.88         # cicc and libdevice, which nvcc runs for every .cu
  nvidia-cuda-crt==13.0.88     # include/crt: nvcc's own host/device glue headers
  nvidia-cuda-runtime==13.0.96 # cuda_runtime.h, cuda_fp16/bf16/fp8.h, cuda.h, libcudart
  nvidia-cuda-cccl==13.0.85    # include/cccl (cuda/std), which nvcc.profile always adds
  nvidia-cuda-nvrtc==13.0.88   # libnvrtc: candle enables cudarc's nvrtc, so -lnvrtc must resolve
  nvidia-cublas==13.1.1.3      # libcublas + libcublasLt: candle's matmul
  nvidia-curand==10.4.0.35     # libcurand: candle's random tensors
)
# The install is re-used while this list is what it was installed from.
want=$(printf '%s\n' "${pins[@]}")

case "$cap" in
  [0-9][0-9] | [0-9][0-9][0-9] | [0-9][0-9][af] | [0-9][0-9][0-9][af]) ;;
  *) die "CUDA_COMPUTE_CAP must look like 90, 89, 100 or 90a, got '$cap'" ;;
esac
# CUDA 13 dropped Maxwell, Pascal and Volta: nvcc 13 rejects sm_50..sm_72.
if [ "${cap%%[af]}" -lt 75 ]; then
  die "CUDA $release compiles for compute capability 75 and newer, got CUDA_COMPUTE_CAP=$cap"
fi

dest="$prefix/$release"
cuda="$dest/nvidia/cu13"
stamp="$dest/.installed"

install() {
  local py tmp log
  py=$(command -v python3 || command -v python || true)
  [ -n "$py" ] || die "python3 with pip is required to fetch the CUDA wheels"
  "$py" -m pip --version >/dev/null 2>&1 || die "$py has no pip; install python3-pip"
  # nvcc hands all host code to the system C++ compiler, and the libcuda
  # stub below is built with gcc.
  command -v g++ >/dev/null 2>&1 || die "g++ is required (nvcc's host compiler); install g++"
  command -v gcc >/dev/null 2>&1 || die "gcc is required to build the libcuda link stub"

  mkdir -p "$prefix"
  tmp="$prefix/.install.$$"
  log="$prefix/install.log"
  rm -rf "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  echo "$me: installing CUDA $release wheels into $dest (about 1.2 GB on disk)" >&2
  # One pip call for all wheels: they share the nvidia/cu13 tree, and a
  # second `pip install --target` into the same folder would skip or clobber
  # it. --no-deps keeps pip from pulling in packages the pins leave out.
  # pip, not a bare unzip, because it restores the executable bits of nvcc,
  # cicc and ptxas.
  if ! "$py" -m pip install --no-deps --only-binary=:all: --no-compile \
    --disable-pip-version-check --no-warn-script-location --target "$tmp" \
    "${pins[@]}" >"$log" 2>&1; then
    die "pip could not install the CUDA wheels; see $log"
  fi
  local c="$tmp/nvidia/cu13"
  [ -x "$c/bin/nvcc" ] || die "the wheels did not provide bin/nvcc under nvidia/cu13"

  # The wheels carry only versioned sonames (libcudart.so.13, ...), which is
  # what a program loads at run time, but the linker looks up `-lcudart` as
  # libcudart.so: give every library its unversioned name.
  local f base
  for f in "$c"/lib/lib*.so.*; do
    base="${f%%.so.*}.so"
    [ -e "$base" ] || ln -s "$(basename "$f")" "$base"
  done

  # candle-core turns on cudarc's `dynamic-linking`, so the binary is linked
  # with -lcuda. libcuda.so belongs to the driver, which is not on PyPI, and
  # NVIDIA's toolkit stub is not in any wheel. Build the same kind of stub:
  # every driver entry point that cuda.h declares, each returning
  # CUDA_ERROR_STUB_LIBRARY (34). Its soname is libcuda.so.1, so the binary
  # asks for libcuda.so.1, which only the real driver provides. The file is
  # named libcuda.so and lives in lib/stubs so it is seen at link time only
  # and can never shadow the driver at run time.
  mkdir -p "$c/lib/stubs"
  local syms
  syms=$(echo '#include <cuda.h>' | gcc -E -P -I"$c/include" -x c - |
    tr -s ' \n\t' ' ' | grep -oE '\bCUresult +cu[A-Za-z0-9_]+ *\(' |
    sed -E 's/CUresult +//; s/ *\(//' | sort -u)
  [ -n "$syms" ] || die "found no driver entry points in $c/include/cuda.h"
  for f in $syms; do
    printf 'int %s(void) { return 34; }\n' "$f"
  done >"$c/lib/stubs/libcuda-stub.c"
  gcc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$c/lib/stubs/libcuda.so" \
    "$c/lib/stubs/libcuda-stub.c" >>"$log" 2>&1 ||
    die "could not build the libcuda link stub; see $log"

  rm -rf "$dest"
  mv "$tmp" "$dest"
  trap - EXIT
  echo "$want" >"$stamp"
}

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x "$cuda/bin/nvcc" ]; then
  install
fi

# cudarc reads the CUDA version from the 4th line of `nvcc --version`; check
# here so a broken install fails with one line instead of a build-script panic.
version=$("$cuda/bin/nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\),.*/\1/p')
[ "$version" = "$release" ] ||
  die "$cuda/bin/nvcc reports CUDA '${version:-nothing}', expected $release; remove $dest and rerun"

# cudarc takes its link search paths from CUDA_ROOT/CUDA_PATH/CUDA_HOME
# (lib/ and lib/stubs/); cudaforge, which compiles candle's kernels, takes nvcc
# from NVCC, then PATH. CUDARC_CUDA_VERSION pins cudarc's API feature
# (cuda-13000) instead of leaving it to parsing nvcc's banner.
# LD_LIBRARY_PATH is for running the binary here or on a GPU host without its
# own CUDA 13 libraries; the driver's libcuda.so.1 must come from the host.
printf 'export CUDA_ROOT=%q\n' "$cuda"
printf 'export CUDA_PATH=%q\n' "$cuda"
printf 'export CUDA_HOME=%q\n' "$cuda"
printf 'export NVCC=%q\n' "$cuda/bin/nvcc"
printf 'export CUDARC_CUDA_VERSION=%s\n' "${release%%.*}0${release#*.}0"
printf 'export CUDA_COMPUTE_CAP=%q\n' "$cap"
# shellcheck disable=SC2016 # $PATH is for the caller's shell to expand at eval time
printf 'export PATH=%q:"$PATH"\n' "$cuda/bin"
# shellcheck disable=SC2016
printf 'export LD_LIBRARY_PATH=%q"${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"\n' "$cuda/lib"
