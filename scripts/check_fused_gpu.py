#!/usr/bin/env python3
"""The fused decoder operations on a GPU against the plain ones and transformers
(scripts/gpu_bench.sh's `fused_check` step).

    check_fused_gpu.py DIR CASE...

DIR holds, per CASE, `CASE.{f32,bf16}.{fused,plain}.safetensors` from `dreamplan vlm forward
--device cuda` with and without DREAMPLAN_NO_FUSED; the expected logits are transformers'
(tests/fixtures/vlm/cases/CASE.out.safetensors, f32 on a CPU). Prints a JSON of the largest
logit differences at the real (unpadded) positions and exits 1 when the fused f32 forward
is further from transformers than 1e-3 or than twice the plain f32 forward's distance, or
when either bf16 forward is further than 1.0 (bf16 on a CPU: 0.17 and 0.20 on these cases;
on 2026-12-04 the GPU's bf16 was 13 and 19 away, both paths alike: a copy-paste had put a
softmax in LayerNorm's half-precision GPU branch, found here and fixed the same day).
"""
import json
import sys

from safetensors.torch import load_file

d, cases = sys.argv[1], sys.argv[2:]
out, ok = {}, True
for case in cases:
    want = load_file(f"tests/fixtures/vlm/cases/{case}.out.safetensors")["logits"].float()
    inp = load_file(f"tests/fixtures/vlm/cases/{case}.in.safetensors")
    real = inp["attention_mask"].bool() if "attention_mask" in inp else None
    got = {k: load_file(f"{d}/{case}.{k}.safetensors")["logits"].float()
           for k in ["f32.fused", "f32.plain", "bf16.fused", "bf16.plain"]}

    def diff(a, b):
        e = (a - b).abs().amax(-1)
        return float((e[real] if real is not None else e).max())

    row = {
        "f32_fused_vs_hf": diff(got["f32.fused"], want),
        "f32_plain_vs_hf": diff(got["f32.plain"], want),
        "bf16_fused_vs_hf": diff(got["bf16.fused"], want),
        "bf16_plain_vs_hf": diff(got["bf16.plain"], want),
        "bf16_fused_vs_plain": diff(got["bf16.fused"], got["bf16.plain"]),
    }
    out[case] = row
    ok &= row["f32_fused_vs_hf"] <= max(1e-3, 2 * row["f32_plain_vs_hf"])
    ok &= row["bf16_fused_vs_hf"] <= 1.0 and row["bf16_plain_vs_hf"] <= 1.0
print(json.dumps({"ok": ok, "cases": out}, indent=2))
sys.exit(0 if ok else 1)
