#!/usr/bin/env bash
# Every check of the GPU path in one go, every result in one folder:
#
#   scripts/gpu-check.sh [OUT_DIR]        # from the repository root
#
# It needs no Rust toolchain: only the meft binary (a `--features cuda`
# build, as scripts/pack-gpu.sh makes and carries it), bash, coreutils and
# python3 for the summary. Each step continues on failure and records its
# exit status in OUT_DIR/steps.tsv; the script exits 1 if any step failed
# or was skipped for lack of time, 0 otherwise.
#
# OUT_DIR (default gpu-check-<UTC date>-<time>) receives:
#   env.txt            machine, binary, libraries found, settings
#   nvidia-smi.txt     `nvidia-smi -q`
#   selftest.json      `meft selftest` (its lines are in logs/selftest.log)
#   runs/              the training runs: tiny-meft (embedded tiny, MEFT),
#                      smollm2-meft, smollm2-lora, smollm2-parallel (SmolLM2
#                      GGUF, bf16 base, all 30 layers); their checkpoints are
#                      deleted after each run (their size is kept in
#                      RUN/checkpoints.bytes)
#   bench.json         `meft bench --quick` (the table is logs/bench.log)
#   smollm2-meft.png   the SmolLM2 MEFT run's dashboard (tiny-meft.png when
#                      SmolLM2 is absent)
#   summary.txt        steps, checks, step times, device memory against the
#                      device ledger, PCIe bytes against the Link's
#   logs/STEP.log      each step's output; steps.tsv: step, exit status, seconds
#
# Environment:
#   MEFT_BIN           the meft binary (default ./meft)
#   MEFT_DEVICE        the compute device (default cuda:0; cpu for a dry run)
#   MEFT_SMOLLM2       the SmolLM2 GGUF (default
#                      .cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf); its
#                      runs are skipped, saying so, when it is absent
#   MEFT_CHECK_SCALE   full, or dry: a few steps of smaller shapes, so that
#                      the whole script runs on a CPU in minutes (default:
#                      dry on the CPU, full on a GPU)
#   MEFT_CHECK_BUDGET  seconds the steps may take together (default 480): a
#                      step is stopped when it would run past it, and steps
#                      that find less than 10 s left are skipped
#
# A dry run here, on the CPU, of everything a GPU machine does:
#
#   MEFT_DEVICE=cpu MEFT_BIN=target/release/meft scripts/gpu-check.sh /tmp/gc
set -uo pipefail

me=gpu-check
started=$(date +%s)
out="${1:-gpu-check-$(date -u +%Y%m%d-%H%M%S)}"
bin="${MEFT_BIN:-./meft}"
dev="${MEFT_DEVICE:-cuda:0}"
gguf="${MEFT_SMOLLM2:-.cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
scale="${MEFT_CHECK_SCALE:-$([ "$dev" = cpu ] && echo dry || echo full)}"
budget="${MEFT_CHECK_BUDGET:-480}"

die() {
  echo "$me: $*" >&2
  exit 2
}

[ -f presets/example.toml ] || die "run me from the repository root (presets/example.toml not found)"
[ -x "$bin" ] || die "no meft binary at $bin (set MEFT_BIN, or carry one as ./meft: scripts/pack-gpu.sh)"
case "$budget" in '' | *[!0-9]*) die "MEFT_CHECK_BUDGET must be a number of seconds, got '$budget'" ;; esac
# The sizes of each scale: steps of the tiny run and of the SmolLM2 runs,
# the SmolLM2 runs' M, K, batch, cut-off and evaluated rows.
# The headline runs' base (random weights made on the device), M, E, steps
# and micro-batch.
case "$scale" in
  full) tiny_steps=100 smol_steps=50 smol_m=65536 smol_k=64 smol_batch=16 smol_cutoff=64 smol_eval=16
    big_ref=random:llama-7b big_m=8464 big_e=368 big_steps=5 big_batch=8 ;;
  dry) tiny_steps=10 smol_steps=3 smol_m=4096 smol_k=32 smol_batch=4 smol_cutoff=32 smol_eval=4
    big_ref=random:tiny big_m=4096 big_e=256 big_steps=2 big_batch=4 ;;
  *) die "MEFT_CHECK_SCALE must be full or dry, got '$scale'" ;;
esac
case "$dev" in cpu | cuda:[0-9]*) ;; *) die "MEFT_DEVICE must be cpu or cuda:N, got '$dev'" ;; esac

mkdir -p "$out/logs" "$out/runs" || die "cannot create $out"
out=$(cd "$out" && pwd)
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
deadline=$((started + budget))
failed=0
printf 'step\texit\tseconds\n' >"$out/steps.tsv"

# The CUDA libraries the binary links (libcudart, libcublas, libcublasLt,
# libcurand) are not part of the driver: where the loader does not find
# them, look in the CUDA toolkit and in the NVIDIA wheels of the machine's
# Python, and put what is found on LD_LIBRARY_PATH.
find_libraries() {
  local missing lib root hit dirs=() roots=(/usr/local/nvidia /usr/local/cuda /usr/local/cuda-*)
  missing=$(ldd "$bin" 2>/dev/null | awk '/=> not found/ { print $1 }')
  [ -n "$missing" ] || return 0
  if command -v python3 >/dev/null 2>&1; then
    while IFS= read -r root; do
      [ -d "$root/nvidia" ] && roots+=("$root/nvidia")
    done < <(python3 -c 'import site; print("\n".join(site.getsitepackages()))' 2>/dev/null)
  fi
  for lib in $missing; do
    hit=""
    for root in "${roots[@]}"; do
      [ -d "$root" ] || continue
      hit=$(find "$root" -maxdepth 5 -name "$lib" 2>/dev/null | head -n 1)
      [ -n "$hit" ] && break
    done
    [ -n "$hit" ] && dirs+=("$(dirname "$hit")")
  done
  if [ ${#dirs[@]} -gt 0 ]; then
    LD_LIBRARY_PATH=$(printf '%s\n' "${dirs[@]}" | awk '!seen[$0]++' | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export LD_LIBRARY_PATH
  fi
}

# step NAME CAP_SECONDS COMMAND...: run COMMAND with its output in
# logs/NAME.log, stopped after CAP_SECONDS or when the budget runs out.
step() {
  local name=$1 cap=$2 t0 rc left limit secs
  shift 2
  left=$((deadline - $(date +%s)))
  if [ "$left" -lt 10 ]; then
    echo "[$name] skipped: ${left}s of MEFT_CHECK_BUDGET=${budget}s left" | tee "$out/logs/$name.log"
    printf '%s\tskipped\t0\n' "$name" >>"$out/steps.tsv"
    failed=1
    return 1
  fi
  limit=$((cap < left ? cap : left))
  echo "[$name] running (at most ${limit}s): $*"
  t0=$(date +%s)
  # A stopped run gets SIGTERM first: it checkpoints, summarises and exits.
  timeout -k 20 "$limit" "$@" >"$out/logs/$name.log" 2>&1
  rc=$?
  secs=$(($(date +%s) - t0))
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "[$name] stopped after ${limit}s" >>"$out/logs/$name.log"
  fi
  printf '%s\t%s\t%s\n' "$name" "$rc" "$secs" >>"$out/steps.tsv"
  echo "[$name] exit $rc after ${secs}s"
  [ "$rc" -eq 0 ] || failed=1
  return "$rc"
}

# A step that cannot run here, said as one line and not counted as failed.
not_run() {
  echo "[$1] not run: $2" | tee "$out/logs/$1.log"
  printf '%s\tnot run\t0\n' "$1" >>"$out/steps.tsv"
}

# The run directory of the run named $1 (its name, then a time stamp).
run_dir() {
  find "$out/runs" -mindepth 1 -maxdepth 1 -type d -name "$1-*" | sort | tail -n 1
}

# Checkpoints are not what this checks, and the Parallel Adapter's at full
# scale holds tens of GB: keep their size, free the disk.
drop_checkpoints() {
  local dir
  dir=$(run_dir "$1")
  [ -n "$dir" ] && [ -d "$dir/checkpoints" ] || return 0
  du -sb "$dir/checkpoints" | cut -f1 >"$dir/checkpoints.bytes"
  rm -rf "$dir/checkpoints"
}

# train NAME PRESET_SETS...: `meft run` of presets/example.toml on the device.
train() {
  local name=$1 cap=$2
  shift 2
  step "$name" "$cap" "$bin" run presets/example.toml \
    --set "name=\"$name\"" --set "model.device=\"$dev\"" \
    --set train.checkpoint_every=0 "$@" --out "$out/runs"
  local rc=$?
  drop_checkpoints "$name"
  return "$rc"
}

find_libraries
{
  echo "date (UTC)       $(date -u '+%Y-%m-%d %H:%M:%S')"
  echo "host             $(uname -n) · $(uname -srm) · $(nproc) cores"
  echo "memory           $(awk '/^MemTotal|^MemAvailable/ { printf "%s %.1f GiB  ", $1, $2 / 1048576 }' /proc/meminfo)"
  echo "binary           $bin ($(wc -c <"$bin") bytes, $("$bin" --version 2>&1))"
  [ -f "$bin.build" ] && sed 's/^/built            /' "$bin.build"
  echo "device           $dev"
  echo "scale            $scale (tiny $tiny_steps steps; SmolLM2 $smol_steps steps, M $smol_m, K $smol_k, batch $smol_batch, cut-off $smol_cutoff)"
  echo "budget           ${budget}s"
  echo "SmolLM2          $gguf$([ -f "$gguf" ] || echo ' (absent)')"
  echo "headline base    $big_ref (M $big_m in $big_e experts, K 64, P 8, micro-batch $big_batch, $big_steps steps)"
  echo "LD_LIBRARY_PATH  ${LD_LIBRARY_PATH:-}"
  echo
  echo "ldd $bin:"
  ldd "$bin" 2>&1
} >"$out/env.txt"
echo "$me: $dev, scale $scale, into $out"
if ldd "$bin" 2>/dev/null | grep -q 'not found'; then
  echo "$me: libraries still missing (see env.txt):" $(ldd "$bin" | awk '/not found/ { print $1 }')
fi

if command -v nvidia-smi >/dev/null 2>&1; then
  step nvidia-smi 60 nvidia-smi -q -f "$out/nvidia-smi.txt"
elif [ "$dev" = cpu ]; then
  not_run nvidia-smi "no nvidia-smi on this machine"
else
  echo "[nvidia-smi] not found" | tee "$out/logs/nvidia-smi.log"
  printf 'nvidia-smi\tnot found\t0\n' >>"$out/steps.tsv"
  failed=1
fi

step selftest 120 "$bin" selftest --device "$dev" --json "$out/selftest.json"

train tiny-meft 120 --set "train.steps=$tiny_steps"

# The paper's headline: a LLaMA-7B-shaped base with random bf16 weights made
# on the device (no file), MEFT at the paper's setting (M 8464 in 368 experts
# of 23 keys, K 64, P 8, all 32 layers; rows in bf16, the composed kernel),
# a few steps; the planner's figure for it first; MEFT with the row cache,
# LoRA and the dense Parallel Adapter of the same M beside it. The summary
# sets NVML's peak against 24 GiB and the plan, and MEFT's step against
# LoRA's.
big=(
  --set "model.reference=\"$big_ref\"" --set 'model.dtype="bf16"'
  --set "train.steps=$big_steps" --set "train.batch=$big_batch"
  --set "train.micro_batch=$big_batch" --set train.cutoff_len=256
  --set 'method.meft.layers="all"' --set "method.meft.neurons=$big_m"
  --set "method.meft.experts=$big_e" --set method.meft.top_k=64 --set method.meft.probe=8
  --set "method.parallel.size=$big_m" --set eval.limit=1 --set eval.max_new_tokens=4
)
step headline-plan 30 bash -c '"$0" plan presets/example.toml "${@:2}" --gpu-mem 24GiB --json >"$1"' \
  "$bin" "$out/headline-plan.json" "${big[@]}" --set 'method.kind="meft"' --set "model.device=\"$dev\""
train headline-meft 150 "${big[@]}" --set 'method.kind="meft"'
train headline-lora 90 "${big[@]}" --set 'method.kind="lora"'
train headline-meft-cache 150 "${big[@]}" --set 'method.kind="meft"' --set "method.meft.row_cache=$big_m"
train headline-parallel 120 "${big[@]}" --set 'method.kind="parallel"'

shot_of=tiny-meft
if [ -f "$gguf" ]; then
  gguf=$(cd "$(dirname "$gguf")" && pwd)/$(basename "$gguf")
  export MEFT_SMOLLM2="$gguf"
  smol=(
    --set "model.reference=\"gguf:$gguf\"" --set 'model.dtype="bf16"'
    --set "train.steps=$smol_steps" --set "train.batch=$smol_batch"
    --set "train.micro_batch=$smol_batch" --set "train.cutoff_len=$smol_cutoff"
    --set 'method.meft.layers="all"' --set "method.meft.neurons=$smol_m"
    --set "method.meft.top_k=$smol_k" --set "method.parallel.size=$smol_m"
    --set "eval.limit=$smol_eval"
  )
  train smollm2-meft 240 "${smol[@]}" --set 'method.kind="meft"'
  train smollm2-lora 90 "${smol[@]}" --set 'method.kind="lora"'
  train smollm2-parallel 150 "${smol[@]}" --set 'method.kind="parallel"'
  shot_of=smollm2-meft
else
  for name in smollm2-meft smollm2-lora smollm2-parallel; do
    not_run "$name" "no SmolLM2 GGUF at $gguf (scripts/get-smollm2.sh fetches it; MEFT_SMOLLM2 names another)"
  done
fi

# The dashboard as a picture. PNG text needs a monospace font: where the
# system has none, DejaVu Sans Mono from the machine's matplotlib serves.
screenshot() {
  local dir=$1 png=$2 fonts home
  "$bin" screenshot "$dir" --out "$png" --scale 2 && return 0
  fonts=$(python3 -c 'import matplotlib, os; print(os.path.join(matplotlib.get_data_path(), "fonts", "ttf"))' 2>/dev/null) || return 1
  [ -f "$fonts/DejaVuSansMono.ttf" ] || return 1
  home=$(mktemp -d) || return 1
  mkdir -p "$home/.fonts" && cp "$fonts"/DejaVuSansMono*.ttf "$home/.fonts/"
  echo "retrying with the fonts of matplotlib ($fonts)"
  HOME="$home" "$bin" screenshot "$dir" --out "$png" --scale 2
  local rc=$?
  rm -rf "$home"
  return "$rc"
}
shot_dir=$(run_dir "$shot_of")
if [ -n "$shot_dir" ]; then
  export -f screenshot
  export bin
  step screenshot 60 bash -c 'screenshot "$1" "$2"' _ "$shot_dir" "$out/$shot_of.png"
else
  echo "[screenshot] no $shot_of run to draw" | tee "$out/logs/screenshot.log"
  printf 'screenshot\tno run\t0\n' >>"$out/steps.tsv"
  failed=1
fi

step bench 240 "$bin" bench --quick --device "$dev" --json "$out/bench.json"

# The summary runs whatever time is left: it only reads what is there.
deadline=$(($(date +%s) + 60))
step summary 60 python3 "$(dirname "$0")/gpu-summary.py" "$out"
cat "$out/summary.txt" 2>/dev/null

echo "$me: $(($(date +%s) - started))s in all; results in $out"
if [ "$failed" -ne 0 ]; then
  echo "$me: some steps failed or were skipped (see $out/steps.tsv)"
  exit 1
fi
