#!/usr/bin/env python3
"""transformers' side of `dreamplan vlm decode-bench`: the same prompt layout, lengths and
definitions, on the same device, for the ratio in scripts/gpu_bench.sh.

    bench_decode_hf.py --model DIR --device cuda --dtype bf16 --batch 1,8 --new-tokens 64 --json F

The model is built from DIR's config.json with transformers' own random initialisation
(no weights are read: speed does not depend on their values). The prompt: --images noise
images of --image-side px (vision start, image pads, vision end each) and --text-tokens
text tokens. Prefill: one forward of the prompt with a KV cache. Decode tok/s at K rows:
K × (new tokens − 1) / (generate time − time of a generate of one token), as in dreamplan:
both subtract the work before the first decode step (here `generate` with
num_return_sequences = K runs the prompt K times; dreamplan runs it once and copies the
cache), so the figures compare decode steps alone. Needs torch and transformers
(scripts/requirements-hf.txt).
"""
import argparse
import inspect
import json
import statistics
import time

import torch
import transformers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--image-side", type=int, default=256)
    ap.add_argument("--text-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[a.dtype]
    dev = torch.device(a.device)
    cfg = transformers.AutoConfig.from_pretrained(a.model)
    torch.manual_seed(0)
    t0 = time.time()
    with dev:
        model = transformers.Qwen3VLForConditionalGeneration._from_config(
            cfg, dtype=dtype, attn_implementation="sdpa"
        )
    model.eval()
    init_s = time.time() - t0
    v = cfg.vision_config
    unit = v.patch_size * v.spatial_merge_size
    assert a.image_side % unit == 0, f"--image-side must be a multiple of {unit}"
    side = a.image_side // v.patch_size
    per_image = side * side // (v.spatial_merge_size**2)
    ids = []
    for _ in range(a.images):
        ids += [cfg.vision_start_token_id] + [cfg.image_token_id] * per_image
        ids += [cfg.vision_end_token_id]
    special = {cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id,
               cfg.vision_end_token_id}
    vocab = cfg.text_config.vocab_size
    nxt = 7
    while len(ids) < a.images * (per_image + 2) + a.text_tokens:
        nxt = (nxt * 31 + 17) % min(vocab, 50_000)
        if nxt not in special:
            ids.append(nxt)
    patch_len = v.in_channels * v.temporal_patch_size * v.patch_size**2
    pixel_values = torch.randn(a.images * side * side, patch_len, device=dev, dtype=dtype)
    grid = torch.tensor([[1, side, side]] * a.images, device=dev)
    input_ids = torch.tensor([ids], device=dev)
    # transformers ≥ 5.2x wants each token's modality (0 text, 1 image) for M-RoPE; older
    # releases do not take the argument.
    extra = lambda rows: {}  # noqa: E731
    if "mm_token_type_ids" in inspect.signature(model.forward).parameters:
        types = (input_ids == cfg.image_token_id).int()
        extra = lambda rows: {"mm_token_type_ids": types.repeat(rows, 1)}  # noqa: E731

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def median(f):
        f()
        times = []
        for _ in range(a.iters):
            t = time.perf_counter()
            f()
            sync()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    rows = []
    with torch.inference_mode():
        for k in [int(x) for x in a.batch.split(",")]:
            ik = input_ids.repeat(k, 1)
            pk = pixel_values.repeat(k, 1)
            gk = grid.repeat(k, 1)
            prefill = median(lambda: model(input_ids=ik, pixel_values=pk, image_grid_thw=gk,
                                           use_cache=True, **extra(k)))

            def gen(n):
                def run():
                    out = model.generate(
                        input_ids=input_ids, pixel_values=pixel_values, image_grid_thw=grid,
                        max_new_tokens=n, min_new_tokens=n, do_sample=True,
                        top_p=1.0, top_k=0, temperature=1.0, num_return_sequences=k,
                        eos_token_id=None, pad_token_id=0, **extra(1),
                    )
                    assert out.shape == (k, len(ids) + n), out.shape
                return run

            gen_s = median(gen(a.new_tokens))
            # A generate of one token: the prefill of K rows and no decode step.
            first_s = median(gen(1))
            tok_s = k * max(a.new_tokens - 1, 1) / max(gen_s - first_s, 1e-9)
            rows.append({"k": k, "prefill_ms": prefill * 1e3, "generate_ms": gen_s * 1e3,
                         "first_token_ms": first_s * 1e3,
                         "decode_tok_s": tok_s, "decode_tok_s_per_row": tok_s / k})
            print(f"K={k}: prefill {prefill*1e3:.1f} ms, generate {gen_s*1e3:.1f} ms, "
                  f"decode {tok_s:.1f} tok/s", flush=True)
    doc = {"implementation": "transformers", "transformers": transformers.__version__,
           "torch": torch.__version__, "device": a.device, "dtype": a.dtype,
           "init_s": init_s, "prompt_tokens": len(ids), "new_tokens": a.new_tokens,
           "rows": rows}
    if a.json:
        json.dump(doc, open(a.json, "w"), indent=2)
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
