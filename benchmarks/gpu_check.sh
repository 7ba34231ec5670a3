#!/usr/bin/env bash
# One command on a machine with a CUDA GPU: the gpu-marked tests and the GPU benchmarks
# (end-to-end training throughput at full size first, then the step compiled without CUDA graphs, the gpu
# tests, model throughput compiled), each under its own time limit (300 + 120 + 240 + 90 s: at most 13
# minutes; about 10 on an H200). JSON and logs go to benchmarks/results/<device>/ (e.g. h200, derived
# from torch.cuda.get_device_name).
#
#   benchmarks/gpu_check.sh                 # on a machine with a CUDA GPU
#   benchmarks/gpu_check.sh --only train-throughput,step-default    # only these steps (log appended)
#   benchmarks/gpu_check.sh --device cpu    # smoke test of the script itself: tiny sizes, no GPU needed,
#                                           # results under runs/gpu_check_smoke/ (never committed)
#
# Steps: train-throughput, step-default (step-eager on --device cpu), gpu-tests, model-throughput.
#
# A step that fails or runs out of time is logged and the script goes on with the next one; the exit
# status is non-zero when any step failed. Set PYTHON to choose the interpreter (default: .venv/bin/python).
set -uo pipefail

cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3

DEVICE=cuda
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="${2:?--device needs cpu or cuda}"; shift 2 ;;
    --only) ONLY=",${2:?--only needs comma-separated step names},"; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | grep '^#' | cut -c3-; exit 0 ;;
    *) echo "error: unknown argument $1 (use --device cpu|cuda, --only STEP,...)" >&2; exit 2 ;;
  esac
done

if [ "$DEVICE" = cpu ]; then
  OUT="${OUT_DIR:-runs/gpu_check_smoke}"
  QUICK=(--quick --rounds 1)
  DATA=()
  MODEL_ARGS=(--widths 0.5 --settings channels_last --modes train --batch-size 8 --image-size 64 --repeats 2 --warmup 1)
  VARIANTS=(eager)
  LIMITS=(120 120 300 200)  # a shared CPU is slow: generous limits, the smoke checks the plumbing
else
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA GPU is visible; run with --device cpu for a smoke test of this script" >&2
    exit 2
  fi
  NAME=$("$PY" - <<'EOF'
import re, torch
tokens = [t for t in re.split(r"[^a-z0-9]+", torch.cuda.get_device_name(0).lower()) if t and t not in ("nvidia", "geforce", "tesla")]
print("-".join(tokens[:2]) if tokens and tokens[0] in ("rtx", "gtx", "quadro") else (tokens[0] if tokens else "cuda"))
EOF
)
  OUT="${OUT_DIR:-benchmarks/results/$NAME}"
  QUICK=()
  DATA=(--images-per-class 300)  # 3,000 images: ~11 whole batches of 256 per epoch
  MODEL_ARGS=(--widths 1.0 --settings compile --modes train --batch-size 256 --image-size 160)
  VARIANTS=(default)  # compiled without CUDA graphs; reduce-overhead is the full-size run above
  LIMITS=(240 90 300 120)  # seconds: gpu tests, model throughput, training throughput, step variant
fi
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
[ -n "$ONLY" ] || : > "$LOG"
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
FAILED=()

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, remember a failure
  local name=$1 limit=$2; shift 2
  [ -z "$ONLY" ] || [[ "$ONLY" == *",$name,"* ]] || return 0
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  local start=$SECONDS
  timeout --kill-after=20 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - start))s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || FAILED+=("$name (exit $rc)")
}

"$PY" -c "import torch; print('torch', torch.__version__, '| device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tee -a "$LOG"

# The end-to-end comparison at full size (on CUDA: 1.0x, batch 256, 160 px, bf16, CUDA graphs).
step train-throughput "${LIMITS[2]}" "$PY" benchmarks/train_throughput.py --device "$DEVICE" ${QUICK[@]+"${QUICK[@]}"} ${DATA[@]+"${DATA[@]}"} \
  --data-root "$SCRATCH/data" --json "$OUT/train_throughput.json" --no-progress

# The step alone compiled without CUDA graphs (eager in the CPU smoke): against the full-size run, what CUDA graphs add.
for mode in "${VARIANTS[@]}"; do
  compile_flags=(--compile --compile-mode "$mode")
  [ "$mode" = eager ] && compile_flags=(--no-compile)
  step "step-$mode" "${LIMITS[3]}" "$PY" benchmarks/train_throughput.py --device "$DEVICE" ${QUICK[@]+"${QUICK[@]}"} ${DATA[@]+"${DATA[@]}"} "${compile_flags[@]}" \
    --candidates model_only bare_loop --rounds 1 --data-root "$SCRATCH/data" \
    --json "$OUT/train_throughput_step_$mode.json" --no-progress
done

# Without a GPU the gpu tests only have to be collected and skipped cleanly.
step gpu-tests "${LIMITS[0]}" "$PY" -m pytest -q -m gpu tests/gpu/ -p no:cacheprovider

step model-throughput "${LIMITS[1]}" "$PY" benchmarks/model_throughput.py --device "$DEVICE" "${MODEL_ARGS[@]}" \
  --out-dir "$SCRATCH/model" --no-progress
[ -f "$SCRATCH/model/model_throughput.json" ] && cp "$SCRATCH/model/model_throughput.json" "$OUT/model_throughput_compile.json"

echo "results in $OUT:" | tee -a "$LOG"
ls -1 "$OUT" | tee -a "$LOG"
if [ ${#FAILED[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${FAILED[@]}" | tee -a "$LOG"
  exit 1
fi
echo "all steps passed" | tee -a "$LOG"
