#!/usr/bin/env bash
# The GPU runner (copied next to doctorglm-gpu.tar.xz by publish.sh). One call runs, in this order (what a GPU session
# must settle first comes first):
#   info    --cuda-info: the device, driver, NVRTC and the CUDA library files the engine resolved (GPU only, always)
#   tests   the CUDA tests and the op harness on the GPU (--full: the whole test suite)
#   decode  decoding of the 6B shape at batch 1 and 8, bf16 / INT8 / INT4 / fp32, against the bandwidth bound
#   lora    one LoRA step of ChatGLM-6B (bf16 frozen base, batch 4 × 512), checkpointing off and on
#   qlora   the same step over an INT4 base (block linears quantized while loading; --full, or --only qlora)
#   torch   the same step in PyTorch (bf16; --full: bf16 and fp32), when python3 has torch
#   bench   the CUDA kernel suite (BenchmarkDotNet, a fixed tiny job; --full: the --short job)
# Every stage runs under `timeout`, from a shared budget (default 500 s), and a stage that would not fit is skipped
# with a line saying so. The device time of a session is 15 minutes, machine start included, so the default is sized
# for ONE call (estimated 6–8 minutes on an H100, not yet measured) with a few minutes left for a rerun of what
# failed (--only STAGES) on the warm machine. Results: $R = $DOCTORGLM_RUNNER_DIR/results-<time>; when $OUT is set
# (the device tool returns what is written there: at most 8 files), summary.md, run.log and results.tar.gz are
# copied there after EVERY stage, so a call cut short still returns what had finished.
#
#   run.sh [--full] [--only tests,decode,lora,qlora,torch,bench] [--budget SECONDS] [--cpu]
# --fast is accepted as the default's old name. PYTHON (default python3) names the interpreter that has PyTorch.
# --cpu rehearses every stage on the CPU with small shapes (for checking the runner on a machine without a GPU).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
FULL=0
CPU=0
ONLY="tests,decode,lora,torch,bench"
BUDGET="${RUN_BUDGET_S:-500}"
PYTHON="${PYTHON:-python3}"   # the interpreter that has torch (on the device image: python3)
while [ $# -gt 0 ]; do
  case "$1" in
    --fast) FULL=0 ;;
    --full) FULL=1; [ "$ONLY" = "tests,decode,lora,torch,bench" ] && ONLY="tests,decode,lora,qlora,torch,bench" ;;
    --cpu) CPU=1 ;;
    --only) ONLY="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
START=$(date +%s)
WORK="${DOCTORGLM_RUNNER_DIR:-/tmp/doctorglm-gpu}"
ARCHIVE="$HERE/doctorglm-gpu.tar.xz"
APP="$WORK/doctorglm-gpu"
[ -f "$ARCHIVE" ] || { echo "run.sh: $ARCHIVE is missing; run tools/gpu-runner/publish.sh first" >&2; exit 2; }
mkdir -p "$WORK"
R="$WORK/results-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$R"
exec > >(tee -a "$R/run.log") 2>&1

# Extract once per archive (a warm machine keeps $WORK between calls). tar needs xz; python3's tarfile is the fallback.
STAMP="$WORK/.extracted-$(sha256sum "$ARCHIVE" | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  rm -rf "$APP" "$WORK"/.extracted-*
  t0=$(date +%s)
  tar -C "$WORK" -xJf "$ARCHIVE" 2>/dev/null \
    || python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$ARCHIVE" "$WORK" \
    || { echo "run.sh: cannot extract $ARCHIVE (no xz and no python3?)"; exit 2; }
  touch "$STAMP"
  echo "extracted $(du -sh "$APP" | cut -f1) to $APP in $(( $(date +%s) - t0 )) s"
fi
export DOCTORGLM_KERNEL_CACHE="${DOCTORGLM_KERNEL_CACHE:-$WORK/kernel-cache}"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
# On a GPU machine a CUDA test that finds no GPU fails instead of skipping (a library search that found nothing must
# not pass as green); --cpu leaves them skipping.
[ "$CPU" = 1 ] || export DOCTORGLM_TEST_CUDA=1
echo "commit $(cat "$APP/COMMIT"), $(date -u '+%Y-%m-%d %H:%M UTC'), full=$FULL cpu=$CPU only=$ONLY budget=${BUDGET}s"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader | tee "$R/gpu.txt"

if [ "$CPU" = 1 ]; then
  DEVICE=cpu; LORA_ARGS=(--config tiny --seq 256); DECODE_ARGS=(--config tiny --tokens 8 --batch 1,4)
  TORCH_ARGS=(--small --seq 256); TORCH_DTYPES=(f32)
else
  # bf16 frozen weights on both sides: the comparison issue #7 asks for (tensor-core GEMMs, fp32 accumulation).
  # Decoding lists bf16 and the quantized modes first: fp32 is the 24.7 GB load, last so a short budget drops it.
  DEVICE=cuda; LORA_ARGS=(--config 6b --batch 4 --steps 2 --dtype bf16 --activations bf16,f32)
  # Each batch picks twice: top-k's candidates selected on the GPU (the generator's way) and the logits brought over whole.
  DECODE_ARGS=(--config 6b --tokens 32 --modes bf16,int8,int4,f32 --batch 1,8 --pick device,host)
  TORCH_ARGS=(--config 6b --batch 4 --steps 2); TORCH_DTYPES=(bf16)
  if [ "$FULL" = 1 ]; then
    LORA_ARGS=(--config 6b --batch 4 --dtype bf16 --activations bf16,f32); DECODE_ARGS=(--config 6b --tokens 64 --modes bf16,int8,int4,f32 --batch 1,8,32 --pick device,host --sampling greedy,chat)
    TORCH_ARGS=(--config 6b --batch 4); TORCH_DTYPES=(bf16 f32)
  fi
fi

# Where the CUDA libraries are. The engine searches DOCTORGLM_CUDA_PATH, LD_LIBRARY_PATH, /usr/local/cuda*/lib64,
# the system folders and the loader's cache; this prints what is there, and when no NVRTC or cuBLAS is in any of
# those, adds the folders of the NVIDIA wheels that the image's PyTorch uses (nvidia/*/lib) as a last resort.
{
  echo "CUDA libraries:"
  ldconfig -p 2>/dev/null | grep -E 'lib(cuda|nvrtc|cublas|cublasLt)\.so' | sed 's/^/  ldconfig: /'
  IFS=: read -ra given <<< "${DOCTORGLM_CUDA_PATH:-}"
  for d in "${given[@]}" /usr/local/cuda*/lib64 /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
    [ -d "$d" ] && echo "  $d: $(cd "$d" && ls libcuda.so* libnvrtc.so* libcublas.so* 2>/dev/null | tr '\n' ' ')"
  done
  echo "  DOCTORGLM_CUDA_PATH=${DOCTORGLM_CUDA_PATH:-}  LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
} | tee "$R/libraries.txt"
if ! grep -qE 'libnvrtc\.so\.1[123]' "$R/libraries.txt" || ! grep -qE 'libcublas\.so\.1[123]' "$R/libraries.txt"; then
  extra=$("$PYTHON" -c 'import glob, os, sys; p = [os.path.dirname(f) for d in sys.path for f in glob.glob(os.path.join(d, "nvidia", "**", "lib", "lib*.so.*"), recursive=True)]; print(":".join(sorted(set(p))))' 2>/dev/null)
  if [ -n "$extra" ]; then
    export DOCTORGLM_CUDA_PATH="${DOCTORGLM_CUDA_PATH:+$DOCTORGLM_CUDA_PATH:}$extra"
    echo "  no NVRTC or cuBLAS in the usual folders; added the NVIDIA wheels' folders: $extra" | tee -a "$R/libraries.txt"
  fi
fi

STATUS=()
FAILED=0
wanted() { [[ ",$ONLY," == *",$1,"* ]]; }
# stage NAME CAP_SECONDS COMMAND...: runs COMMAND in $APP under a timeout of min(CAP, what is left of the budget).
stage() {
  local name="$1" cap="$2"; shift 2
  local left=$(( START + BUDGET - $(date +%s) - 15 ))
  local limit=$(( cap < left ? cap : left ))
  if [ "$limit" -lt 30 ]; then
    echo "=== $name: skipped, ${left}s left of the ${BUDGET}s budget"
    STATUS+=("$name: skipped (budget)"); publish; return
  fi
  echo "=== $name (limit ${limit}s): $*"
  local t0=$(date +%s)
  (cd "$APP" && timeout -k 10 "$limit" "$@") 2>&1 | tee "$R/$name.log"
  local rc=${PIPESTATUS[0]}
  local took=$(( $(date +%s) - t0 ))
  if [ "$rc" = 0 ]; then STATUS+=("$name: ok (${took}s)")
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then STATUS+=("$name: TIMED OUT after ${took}s"); FAILED=1
  else STATUS+=("$name: FAILED, exit code $rc (${took}s)"); FAILED=1
  fi
  publish
}

# ---------------------------------------------------------------- summary
# publish: writes summary.md from what the stages have left so far and copies it, run.log and the results folder to
# $OUT. Called after every stage, so a call stopped by its limit still returns everything that had finished.
publish() {
  {
    echo "# DoctorGlm.Engine GPU run"
    echo
    echo "commit $(cat "$APP/COMMIT"); $(date -u '+%Y-%m-%d %H:%M UTC'); $(cat "$R/gpu.txt" 2>/dev/null || echo 'no nvidia-smi'); full=$FULL cpu=$CPU"
    echo
    echo "## Stages"
    for s in "${STATUS[@]}"; do echo "- $s"; done
    if [ -f "$R/info.log" ]; then echo; echo '```'; cat "$R/info.log"; echo '```'; fi
    echo
    echo "## Tests"
    for f in "$R"/tests*.log; do
      [ -f "$f" ] || continue
      echo "$(basename "$f"): $(grep -E 'Total: [0-9]+' "$f" | tail -n 1 | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^ *//')"
      grep -E '^\s*\[FAIL\]' "$f" | head -n 20
    done
    echo
    echo "## CUDA kernels"
    if [ -f "$R/cuda-kernels.md" ]; then cat "$R/cuda-kernels.md"; else echo "(no CUDA kernel results)"; fi
    echo
    echo "## End to end"
    if [ -f "$R/e2e.jsonl" ]; then
      python3 - "$R/e2e.jsonl" <<'PY' || cat "$R/e2e.jsonl"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
steps = [r for r in rows if r["kind"] == "lora_step"]
if steps:
    # A PyTorch model cast to a dtype runs its activations in that dtype too.
    act = lambda r: r.get("activations", r["dtype"] if r["impl"] == "torch" else "f32")
    print("| impl | config | weights | activations | attention | batch×seq | checkpointing | ms/step | tokens/s | MFU | HFU | peak GB |")
    wt = lambda r: r["dtype"] + (f" (INT{r['quantize']} linears)" if r.get("quantize") else "")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in steps:
        head = (f"| {r['impl']} | {r['config']} | {wt(r)} | {act(r)} | {r.get('attention', 'sdpa' if r['impl'] == 'torch' else '')} | "
                f"{r['batch']}×{r['seq']} | {'on' if r['checkpointing'] else 'off'} | ")
        if "error" in r:
            print(head + f"{r['error']} | | | | |")
            continue
        print(head + f"{r['step_ms']:.0f} | {r['tokens_per_s']:.0f} | {100 * r['mfu']:.1f}% | {100 * r['hfu']:.1f}% | {r['peak_memory_bytes'] / 1e9:.1f} |")
    steps = [r for r in steps if "error" not in r]
    ours = {(r["dtype"], act(r), r["checkpointing"]): r for r in steps if r["impl"] == "doctorglm" and not r.get("quantize")}
    for r in steps:
        o = ours.get((r["dtype"], act(r), r["checkpointing"])) if r["impl"] == "torch" else None
        if o:
            print(f"\nours / PyTorch ({r['dtype']} weights and activations, checkpointing {'on' if r['checkpointing'] else 'off'}): "
                  f"{o['tokens_per_s'] / r['tokens_per_s']:.2f}× tokens/s")
dec = [r for r in rows if r["kind"] == "decode"]
if dec:
    print("\n| weights | batch | pick | tokens/s | ms/step | bound tokens/s | of bound | GB/step | model GB | load peak GB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in dec:
        print(f"| {r['weights']} | {r.get('batch', 1)} | {r.get('sampling', 'greedy')}, {r.get('pick', 'host')} | {r['tokens_per_s']:.2f} | {r['ms_per_token']:.1f} | {r['bound_tokens_per_s']:.1f} | "
              f"{100 * r['of_bound']:.0f}% | {r['bytes_per_token'] / 1e9:.2f} | {r.get('model_gb', float('nan')):.2f} | {r.get('load_peak_gb', float('nan')):.2f} |")
    print(f"\n(bound = batch × same-run copy bandwidth {dec[0]['copy_gbps']:.0f} GB/s / bytes per step; a step reads the weights once for all rows)")
PY
    else
      echo "(no end-to-end results)"
    fi
  } > "$R/summary.md"

  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$R/summary.md" "$R/run.log" "$OUT/" 2>/dev/null
    tar -C "$WORK" -czf "$OUT/results.tar.gz" "$(basename "$R")" 2>/dev/null
  fi
}

TESTS="$APP/DoctorGlm.Engine.Tests"
BENCH="$APP/DoctorGlm.Engine.Benchmarks"
# First, always on a GPU machine: which device, driver, NVRTC and library files the engine itself resolved.
[ "$CPU" = 1 ] || stage info 60 "$BENCH" --cuda-info
if wanted tests; then
  if [ "$FULL" = 1 ]; then
    stage tests 240 "$TESTS" -noColor -trx "$R/tests.trx"
  else
    stage tests-cuda 150 "$TESTS" -noColor -namespace DoctorGlm.Engine.Tests.Cuda -trx "$R/tests-cuda.trx"
    stage tests-harness 120 "$TESTS" -noColor -class DoctorGlm.Engine.Tests.Harness.OpHarnessTests -trx "$R/tests-harness.trx"
  fi
fi
wanted decode && stage decode 150 "$BENCH" --decode --device "$DEVICE" "${DECODE_ARGS[@]}" --jsonl "$R/e2e.jsonl"
wanted lora && stage lora 120 "$BENCH" --lora-step --device "$DEVICE" "${LORA_ARGS[@]}" --jsonl "$R/e2e.jsonl"
wanted qlora && stage qlora 90 "$BENCH" --lora-step --device "$DEVICE" "${LORA_ARGS[@]}" --quantize 4 --jsonl "$R/e2e.jsonl"
if wanted torch; then
  if "$PYTHON" -c 'import torch' 2>/dev/null; then
    for dt in "${TORCH_DTYPES[@]}"; do
      stage "torch-$dt" 120 env PYTHONUNBUFFERED=1 "$PYTHON" "$APP/bench-scripts/torch_lora_step.py" --device "$DEVICE" "${TORCH_ARGS[@]}" \
        --dtype "$dt" --jsonl "$R/e2e.jsonl"
    done
  else
    echo "=== torch: skipped, $PYTHON has no torch"; STATUS+=("torch: skipped ($PYTHON has no torch)"); publish
  fi
fi
if wanted bench; then
  JOB=--fast; [ "$FULL" = 1 ] && JOB=--short
  FILTER='*Cuda*'; [ "$CPU" = 1 ] && FILTER='*CpuRotary*'
  stage bench 420 "$BENCH" --filter "$FILTER" --join "$JOB" --cuda-report "$R/cuda-kernels.md" --artifacts "$R/bdn"
fi
publish
cat "$R/summary.md"
[ -n "${OUT:-}" ] && echo "wrote summary.md, run.log and results.tar.gz to $OUT"
echo "total $(( $(date +%s) - START )) s; results in $R"
exit $FAILED
