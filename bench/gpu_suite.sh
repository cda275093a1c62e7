#!/usr/bin/env bash
# Every GPU number of the project in one command that fits a short GPU loan (bench/README.md says how to run it).
#
#   bench/gpu_suite.sh --wheels bench/wheels --results DIR      # on the GPU machine: the full run
#   bench/gpu_suite.sh --smoke [--wheels DIR] --results DIR     # CPU: tiny models and sizes, same scripts
#   bench/gpu_suite.sh --plan [--smoke]                         # print the benchmarks, limits and commands only
#   bench/gpu_suite.sh ... --only vlm,train                     # a rerun of some of them
#   bench/gpu_suite.sh ... --cap 60                             # no benchmark longer than 60 s (little time left)
#
# --wheels DIR: the wheel set of bench/device_wheels.sh, installed with --no-deps into a temporary target folder
# that goes first on PYTHONPATH (the machine's image lacks these packages and can download nothing); refused if
# its onegen wheel was built from another tree (bench/tree_hash.py). Without it the suite runs on the
# environment's own packages.
#
# Benchmarks, most valuable first, each on random weights at the real architectures (bench/real_configs.py; no
# downloads) and under its own time limit; the full run's limits add up to 420 s, so the install, the machine's
# start, the transfers and a rerun fit a 15-minute loan whose commands may run 10 minutes:
#   vlm      LLaVA-NeXT Mistral-7B captions/s, HF generate batched (64, 16) vs one request at a time
#   train    2.8B Next-DiT train step, bare vs fed by the shard loader: ms/step and MFU, eager then compiled
#   vision   depth / pose / HED annotators vs their bare forwards (and a naive per-image loop)
#   segment  OWLv2 + SAM vit_h annotator vs the bare forwards
#   loader   the training loader vs a plain WebDataset pipeline
# The smoke run adds `configs`: every real architecture built on the meta device (no memory), the check that
# the full run's builders work with the image's library versions.
#
# Each benchmark's JSON line is appended to DIR/gpu-<device>.jsonl as soon as it ends, so a kill keeps what
# finished: {"bench", "date", "device", "mode", "commit", "wheels", "rc", "seconds", "limit", "command", "summary",
# "report"} (summary: the benchmark's `summary:` lines; report: its output, the tail of it when it failed; rc 124:
# killed at its limit, with what it printed by then). One line per benchmark goes to stdout. A failed benchmark
# does not stop the others; the exit status is 1 if any failed, 2 for a usage or set-up error.
set -uo pipefail

cd "$(dirname "$0")/.."
SMOKE=0
PLAN=0
WHEELS=""
RESULTS=bench/results
ONLY=""
CAP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --plan) PLAN=1 ;;
    --wheels) WHEELS="${2:?--wheels needs a folder}"; shift ;;
    --results) RESULTS="${2:?--results needs a folder}"; shift ;;
    --only) ONLY="${2:?--only needs names}"; shift ;;
    --cap) CAP="${2:?--cap needs seconds}"; shift ;;
    *) echo "gpu_suite.sh: unknown argument $1 (use --wheels DIR, --results DIR, --smoke, --plan, --only a,b, --cap S)" >&2
       exit 2 ;;
  esac
  shift
done
if ! [[ "$CAP" =~ ^[0-9]+$ ]]; then
  echo "gpu_suite.sh: --cap takes whole seconds, not $CAP" >&2
  exit 2
fi
MODE=$([ "$SMOKE" = 1 ] && echo smoke || echo full)

# bench_args NAME: the benchmark's command line (after the interpreter) into ARGS, and its time limit into LIMIT.
bench_args() {
  if [ "$SMOKE" = 1 ]; then
    LIMIT=300  # CPU, shared machine: only a hang guard
    case "$1" in
      vlm) ARGS=(bench/vlm.py --tiny --families llava_next --n 2 --batch-sizes 2 --baseline-n 1 --max-new-tokens 4) ;;
      train) ARGS=(bench/train_step.py --preset tiny --device cpu --size 64 --views 2 --batch 2 --steps 1 --workers 0) ;;
      vision) ARGS=(bench/annotators_vision.py --tiny --n 2 --side 64 --imgsz 64 --hed-resolution 64 --repeats 1) ;;
      segment) ARGS=(bench/annotators_segment.py --tiny --batch 1 --width 64 --repeats 1) ;;
      loader) ARGS=(bench/loader.py --views 2 --size 64 --caption-width 32 --batch 2 --buffer 4 --workers 0 --batches 4
                    --chunk 2 --samples 16) ;;
      configs) ARGS=(bench/real_configs.py "$WORK/configs" --device meta) ;;
    esac
  else
    case "$1" in
      vlm) LIMIT=135; ARGS=(bench/vlm.py --real --n 64 --batch-sizes 64 16 --baseline-n 4 --max-new-tokens 160) ;;
      train) LIMIT=145; ARGS=(bench/train_step.py --preset onediffusion-2.8b --batch 4 --views 4 --size 256 --steps 5
                             --workers 8) ;;
      vision) LIMIT=60; ARGS=(bench/annotators_vision.py --real --device cuda --n 32 --side 512 --repeats 3) ;;
      segment) LIMIT=55; ARGS=(bench/annotators_segment.py --real --batch 8 --width 512 --repeats 2) ;;
      loader) LIMIT=25; ARGS=(bench/loader.py --views 4 --size 256 --workers 8 --batches 100 --chunk 20) ;;
    esac
  fi
  if [ "$CAP" -gt 0 ] && [ "$LIMIT" -gt "$CAP" ]; then
    LIMIT=$CAP
  fi
}
BENCHES=(vlm train vision segment loader)
[ "$SMOKE" = 1 ] && BENCHES+=(configs)
if [ -n "$ONLY" ]; then
  for name in ${ONLY//,/ }; do
    [[ " ${BENCHES[*]} " == *" $name "* ]] || { echo "gpu_suite.sh: no benchmark $name (${BENCHES[*]})" >&2; exit 2; }
  done
  BENCHES=(${ONLY//,/ })
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-suite-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [ "$PLAN" = 1 ]; then
  total=0
  for name in "${BENCHES[@]}"; do
    bench_args "$name"
    total=$((total + LIMIT))
    printf '%-8s %4d s  %s\n' "$name" "$LIMIT" "${ARGS[*]}"
  done
  printf '%-8s %4d s\n' total "$total"
  exit 0
fi

PY="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=False RAY_USAGE_STATS_ENABLED=0
export PYTHONUNBUFFERED=1  # a benchmark killed at its limit still leaves every line it printed
export YOLO_CONFIG_DIR="${YOLO_CONFIG_DIR:-$WORK/yolo}"
mkdir -p "$WORK/tmp"
export TMPDIR="$WORK/tmp"  # the benchmarks' checkpoints and shards (14 GB for the 7B VLM) go when the suite ends,
                           # also those of a benchmark killed at its limit
WHEEL_BUILD="none: the environment's own packages"
if [ -n "$WHEELS" ]; then
  shopt -s nullglob
  wheels=("$WHEELS"/*.whl)
  shopt -u nullglob
  if [ ${#wheels[@]} = 0 ]; then
    echo "gpu_suite.sh: no wheels in $WHEELS (make them with bench/device_wheels.sh)" >&2
    exit 2
  fi
  built=$(sed -n 's/.*, tree \([0-9a-f]*\)$/\1/p' "$WHEELS/BUILD" 2>/dev/null)
  here=$("$PY" bench/tree_hash.py) || exit 2
  if [ "$built" != "$here" ]; then
    echo "gpu_suite.sh: the onegen wheel in $WHEELS was built from another tree (${built:-no BUILD file}, this one is" \
      "$here): run bench/device_wheels.sh again" >&2
    exit 2
  fi
  if ! "$PY" -m pip install --quiet --no-index --no-deps --no-compile --disable-pip-version-check \
      --target "$WORK/site" "${wheels[@]}"; then
    echo "gpu_suite.sh: installing the wheels of $WHEELS failed" >&2
    exit 2
  fi
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  WHEEL_BUILD="${#wheels[@]} wheels, $(cat "$WHEELS/BUILD" 2>/dev/null || echo 'no BUILD file')"
fi

if ! DEVICE=$("$PY" -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-') if torch.cuda.is_available() else 'cpu')"); then
  echo "gpu_suite.sh: $PY cannot import torch" >&2
  exit 2
fi
if [ "$SMOKE" = 0 ] && [ "$DEVICE" = cpu ]; then
  echo "gpu_suite.sh: no CUDA device; run with --smoke for the CPU check" >&2
  exit 2
fi
mkdir -p "$RESULTS"
OUT="$RESULTS/gpu-$DEVICE.jsonl"
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
FAILED=0

# run NAME: run one benchmark under its limit, append its JSON line to $OUT, print its one-line summary.
run() {
  local name="$1" start rc
  bench_args "$name"
  start=$(date +%s.%N)
  timeout --kill-after=5 "$LIMIT" "$PY" "${ARGS[@]}" >"$WORK/$name.log" 2>&1
  rc=$?
  [ "$rc" = 0 ] || FAILED=1
  "$PY" - "$name" "$rc" "$start" "$LIMIT" "$WORK/$name.log" "$DEVICE" "$MODE" "$COMMIT" "$WHEEL_BUILD" \
      "${ARGS[*]}" >>"$OUT" <<'EOF'
import json, sys, time
name, rc, start, limit, log, device, mode, commit, wheels, command = sys.argv[1:]
lines = [line.rstrip() for line in open(log, errors="replace") if line.strip()]
summary = [line[len("summary:"):].strip() for line in lines if line.startswith("summary:")]
keep = [line for line in lines if not line.startswith(("Loading weights", "Writing model shards"))]
print(json.dumps({"bench": name, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": device,
                  "mode": mode, "commit": commit, "wheels": wheels, "rc": int(rc),
                  "seconds": round(time.time() - float(start), 1), "limit": int(limit), "command": command,
                  "summary": summary, "report": keep[-40:] if int(rc) == 0 else lines[-60:]}))
EOF
  "$PY" - "$OUT" <<'EOF'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
state = "ok" if r["rc"] == 0 else ("killed at its limit" if r["rc"] in (124, 137) else f"failed rc={r['rc']}")
print(f"gpu_suite: {r['bench']:<8} {state} {r['seconds']:.0f}/{r['limit']} s | " + (" | ".join(r["summary"]) or "-"))
EOF
}

echo "gpu_suite: $MODE run on $DEVICE, wheels: $WHEEL_BUILD -> $OUT"
for name in "${BENCHES[@]}"; do
  run "$name"
done
exit "$FAILED"
