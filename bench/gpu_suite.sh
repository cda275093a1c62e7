#!/usr/bin/env bash
# Every GPU benchmark of the project in one run, on random weights at the real configs (no downloads):
#   vision   bench/annotators_vision.py   depth / pose / HED annotators vs their bare forward (and naive loop)
#   segment  bench/annotators_segment.py  OWLv2 + SAM vit_h annotator vs bare forwards
#   vlm      bench/vlm.py                 LLaVA-NeXT Mistral-7B batched captioning vs one-at-a-time HF generate
#   train    bench/train_step.py          2.8B Next-DiT train step with the shard loader vs the bare step, MFU
#   loader   bench/loader.py              training loader vs a plain WebDataset pipeline
# Checkpoints come from bench/real_configs.py (random weights, real architectures). Each benchmark runs under
# its own time limit (150 + 90 + 75 + 120 + 210 + 45 s: under 12 minutes on one H100 / H200) and appends one
# JSON line to bench/results/gpu-<device>.jsonl: {"bench", "device", "mode", "commit", "rc", "seconds", "command", "report"}
# (report: the benchmark's own output lines); a failed or timed-out benchmark is recorded with its rc and the
# suite goes on, and the suite exits non-zero if any failed.
#
#   bench/gpu_suite.sh                   # on the GPU machine, from the repository root or anywhere
#   bench/gpu_suite.sh --smoke --out F   # CPU, tiny models and sizes, seconds (tests/training/test_gpu_suite.py)
set -uo pipefail

cd "$(dirname "$0")/.."
SMOKE=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) OUT="$2"; shift ;;
    *) echo "gpu_suite.sh: unknown argument $1 (use --smoke, --out FILE)" >&2; exit 2 ;;
  esac
  shift
done

PY="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 YOLO_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
DEVICE=$("$PY" -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-') if torch.cuda.is_available() else 'cpu')")
if [ "$SMOKE" = 0 ] && [ "$DEVICE" = cpu ]; then
  echo "gpu_suite.sh: no CUDA device; run with --smoke for the CPU check" >&2
  exit 2
fi
MODE=$([ "$SMOKE" = 1 ] && echo smoke || echo full)
OUT="${OUT:-bench/results/gpu-$DEVICE.jsonl}"
mkdir -p "$(dirname "$OUT")"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-suite-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
FAILED=0

# run NAME SECONDS COMMAND...: run one benchmark under a time limit and append its JSON line to $OUT
run() {
  local name="$1" limit="$2"
  shift 2
  local start rc
  start=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1
  rc=$?
  [ "$rc" = 0 ] || FAILED=1
  "$PY" - "$name" "$rc" "$start" "$WORK/$name.log" "$DEVICE" "$MODE" "$COMMIT" "$*" >>"$OUT" <<'EOF'
import json, sys, time
name, rc, start, log, device, mode, commit, command = sys.argv[1:]
lines = [line.rstrip() for line in open(log, errors="replace") if line.strip()]
keep = [line for line in lines if not line.startswith(("Loading weights", "Writing model shards"))]
print(json.dumps({"bench": name, "device": device, "mode": mode, "commit": commit, "rc": int(rc),
                  "seconds": round(time.time() - float(start), 1), "command": command,
                  "report": keep[-40:] if int(rc) == 0 else lines[-60:]}))
EOF
  echo "gpu_suite: $name rc=$rc" >&2
}

if [ "$SMOKE" = 1 ]; then
  run vision 120 "$PY" bench/annotators_vision.py --tiny --n 2 --side 64 --imgsz 64 --hed-resolution 64 --repeats 1
  run segment 120 "$PY" bench/annotators_segment.py --tiny --batch 1 --width 64 --repeats 1
  run vlm 120 "$PY" bench/vlm.py --tiny --n 2 --batch-sizes 2 --max-new-tokens 4
  run train 120 "$PY" bench/train_step.py --preset tiny --device cpu --size 64 --views 2 --batch 2 --steps 1 --workers 0
  run loader 120 "$PY" bench/loader.py --views 2 --size 64 --caption-width 32 --batch 2 --buffer 4 --workers 0 \
    --batches 4 --chunk 2 --samples 16
else
  run checkpoints 150 "$PY" bench/real_configs.py "$WORK/ckpt" --device cuda
  CKPT="$WORK/ckpt"
  run vision 90 "$PY" bench/annotators_vision.py --device cuda --n 32 --side 512 --repeats 3 \
    --depth-model "$CKPT/depth" --pose-model "$CKPT/vitpose" --detector "$CKPT/yolo/yolo11n_random.pt" \
    --hed-model "$CKPT/hed"
  run segment 75 "$PY" bench/annotators_segment.py --detector owlv2 --detector-id "$CKPT/owlv2" --sam-type vit_h \
    --sam-checkpoint "$CKPT/sam/sam_vit_h_random.pth" --batch 8 --width 512 --repeats 2
  run vlm 120 "$PY" bench/vlm.py --models "$CKPT/llava_next" --n 16 --batch-sizes 16 --max-new-tokens 64
  run train 210 "$PY" bench/train_step.py --preset onediffusion-2.8b --batch 4 --views 4 --size 256 --steps 10 \
    --workers 8 --out "$WORK/train.txt"
  run loader 45 "$PY" bench/loader.py --views 4 --size 256 --workers 8 --batches 200 --chunk 20
fi
echo "gpu_suite: $MODE run on $DEVICE -> $OUT" >&2
exit "$FAILED"
