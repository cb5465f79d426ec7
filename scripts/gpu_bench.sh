#!/usr/bin/env bash
# The project's GPU figures in one run (≤ 11 min on one H200: the steps' limits add to 10.5 min),
# written as JSON to OUT.
#
#   scripts/gpu_bench.sh BINARY OUT [SIZE]
#
# BINARY: a `cuda` build of dreamplan carried to the GPU machine, or the folder that
# `scripts/cuda_toolchain.sh carry` writes (gpu_carry/: the binary compressed, with the
# OpenCV libraries it needs; unpacked here first). It needs no Rust there. OUT: folder for the figures (gpu_bench.json gathers
# them; one JSON and one log per measurement beside it). SIZE: 8b (default) or 2b, the
# Qwen3-VL config measured (config/qwen3_vl/SIZE.json) with made-up weights: the real
# architecture, sizes and speed, answering noise (no model hub is reachable).
#
# Measured, each under its own time limit so one failure costs only its own figure, after
# a smoke test on the tiny test model (≤ 60 s) that stops the script if CUDA does not run,
# and a check of the fused decoder operations against the plain ones and transformers:
#   1. decode: prefill of the planner's prompt (2 images of 256², 128 text tokens) and
#      decode tok/s at K = 1 and K = 8 rows, bf16 (`dreamplan vlm decode-bench`);
#   2. the same with PyPI transformers + torch on the same GPU (scripts/bench_decode_hf.py),
#      and the ratio;
#   3. one planner decision end to end, K = 8 (`dreamplan plan-bench --random-weights`);
#   4. world model at the GPU preset: training step/s, prediction ms per candidate
#      (`dreamplan wm-bench --preset gpu`);
#   5. one ORPO step of rank-16 LoRA adapters, 4 pairs (`dreamplan vlm train-bench`).
#
# The machine needs an NVIDIA driver and the CUDA 13 runtime libraries; a PyTorch cu13x
# install has them under site-packages/nvidia (found below). Nothing here needs network.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:?usage: scripts/gpu_bench.sh BINARY OUT [8b|2b]}
OUT=${2:?usage: scripts/gpu_bench.sh BINARY OUT [8b|2b]}
SIZE=${3:-8b}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# CUDA runtime libraries from the Python environment (cuBLAS, cuRAND, NVRTC, cudart).
LIBS=$("$PY" - <<'EOF' 2>/dev/null
import glob, os, site
dirs = []
for root in site.getsitepackages():
    dirs += glob.glob(os.path.join(root, "nvidia", "*", "lib"))
    dirs += glob.glob(os.path.join(root, "nvidia", "cu1*", "lib"))
print(":".join(sorted(set(dirs))))
EOF
)
export LD_LIBRARY_PATH="${LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ -d "$BIN" ]; then
  # A carry bundle: unpack the binary, put its libraries first.
  bash "$BIN/unpack.sh" > "$OUT/unpack.log" 2>&1 || { cat "$OUT/unpack.log" >&2; exit 1; }
  export LD_LIBRARY_PATH="$(cd "$BIN" && pwd)/lib:$LD_LIBRARY_PATH"
  BIN="$BIN/dreamplan"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
ldd "$BIN" > "$OUT/ldd.txt" 2>&1
"$BIN" --version > "$OUT/version.txt" 2>&1

# The bench folder: SIZE's architecture; the test tokenizer and processor (its special
# token ids written into the config, so prompts tokenize; the embedding keeps SIZE's
# vocabulary, so every matrix has the real shape).
"$PY" scripts/bench_folder.py --arch "config/qwen3_vl/$SIZE.json" \
  --tokenizer tests/fixtures/vlm/tiny --out "$WORK/model" > "$OUT/bench_folder.log" 2>&1

step() { # name limit command...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >> "$OUT/steps.jsonl"
  echo "$name: rc $rc, $((SECONDS - t0)) s"
}

# A few seconds on the tiny test model first: if CUDA does not work at all (a library
# missing, the driver too old for the kernels), say so now and spend no more GPU time.
step smoke 60 "$BIN" vlm decode-bench --model tests/fixtures/vlm/tiny --random-weights \
  --device cuda --dtype bf16 --batch 1 --new-tokens 8 --iters 1 --json "$OUT/smoke.json"
if ! grep -q '"rc": 0' <(tail -1 "$OUT/steps.jsonl"); then
  # Perhaps only the fused kernels (src/vlm/fused.cu) fail here: the rest without them.
  echo "gpu_bench: the smoke test failed; again without the fused operations. Its log:" >&2
  cat "$OUT/smoke.log" >&2
  export DREAMPLAN_NO_FUSED=1
  step smoke_plain 60 "$BIN" vlm decode-bench --model tests/fixtures/vlm/tiny --random-weights \
    --device cuda --dtype bf16 --batch 1 --new-tokens 8 --iters 1 --json "$OUT/smoke.json"
  if ! grep -q '"rc": 0' <(tail -1 "$OUT/steps.jsonl"); then
    echo "gpu_bench: the CUDA smoke test failed; its log:" >&2
    cat "$OUT/smoke_plain.log" >&2
    exit 1
  fi
fi
# The fused decoder operations (src/vlm/fused.rs) on this GPU against the plain ones and
# transformers, on the test model's golden cases, f32 and bf16.
fused_check() {
  local c dt
  for c in two_images padded_batch; do
    for dt in f32 bf16; do
      "$BIN" vlm forward --model tests/fixtures/vlm/tiny --inputs "tests/fixtures/vlm/cases/$c.in.safetensors" \
        --out "$WORK/$c.$dt.fused.safetensors" --device cuda --dtype "$dt" || return 1
      DREAMPLAN_NO_FUSED=1 "$BIN" vlm forward --model tests/fixtures/vlm/tiny \
        --inputs "tests/fixtures/vlm/cases/$c.in.safetensors" \
        --out "$WORK/$c.$dt.plain.safetensors" --device cuda --dtype "$dt" || return 1
    done
  done
  "$PY" scripts/check_fused_gpu.py "$WORK" two_images padded_batch | tee "$OUT/fused_check.json"
}
export BIN WORK OUT PY
export -f fused_check
step fused_check 60 bash -c fused_check
step decode 100 "$BIN" vlm decode-bench --model "$WORK/model" --random-weights \
  --device cuda --dtype bf16 --batch 1,8 --new-tokens 64 --iters 3 --json "$OUT/decode.json"
# The same without the fused operations, on the same machine: what they are worth.
step decode_plain 60 env DREAMPLAN_NO_FUSED=1 "$BIN" vlm decode-bench --model "$WORK/model" \
  --random-weights --device cuda --dtype bf16 --batch 1,8 --new-tokens 64 --iters 3 \
  --json "$OUT/decode_plain.json"
step planner 80 "$BIN" plan-bench --model "$WORK/model" --random-weights --device cuda \
  --dtype bf16 --task cloth --k 8 --iters 3 --json "$OUT/planner.json"
step world_model 70 "$BIN" wm-bench --preset gpu --device cuda --iters 3 --json "$OUT/world_model.json"
step orpo 70 "$BIN" vlm train-bench --model "$WORK/model" --random-weights --device cuda \
  --dtype bf16 --pairs 4 --iters 3 --json "$OUT/orpo.json"
# transformers last: our own figures come first if the time runs short.
step decode_hf 130 "$PY" scripts/bench_decode_hf.py --model "$WORK/model" --device cuda \
  --dtype bf16 --batch 1,8 --new-tokens 64 --iters 3 --json "$OUT/decode_hf.json"

"$PY" - "$OUT" "$SIZE" <<'EOF'
import json, os, sys
out, size = sys.argv[1], sys.argv[2]
def read(name):
    p = os.path.join(out, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
doc = {"size": size, "steps": [json.loads(l) for l in open(os.path.join(out, "steps.jsonl"))]}
for name in ["smoke", "fused_check", "decode", "decode_plain", "planner", "world_model", "orpo", "decode_hf"]:
    doc[name] = read(name)
ours, theirs = doc["decode"], doc["decode_hf"]
if ours and theirs:
    doc["ratio_decode_tok_s_ours_over_hf"] = {
        str(a["k"]): a["decode_tok_s"] / b["decode_tok_s"]
        for a in ours["rows"] for b in theirs["rows"] if a["k"] == b["k"]
    }
    doc["ratio_prefill_hf_over_ours"] = theirs["rows"][0]["prefill_ms"] / ours["rows"][0]["prefill_ms"]
json.dump(doc, open(os.path.join(out, "gpu_bench.json"), "w"), indent=2)
print(json.dumps(doc, indent=2)[:4000])
EOF
