#!/usr/bin/env python3
"""transformers' forward on a dreamplan VLM input file, timed (for `dreamplan vlm bench`).

Prints one JSON line: {"ms_median": ..., "ms_min": ..., "iters": ..., "threads": ...,
"transformers": ..., "torch": ...}. Needs scripts/requirements-hf.txt.
"""

import argparse
import json
import statistics
import time

import torch
import transformers
from safetensors.torch import load_file
from transformers import Qwen3VLForConditionalGeneration


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = Qwen3VLForConditionalGeneration.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation=args.attn
    ).eval()
    inputs = load_file(args.inputs)
    if "pixel_values" in inputs:
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == model.config.image_token_id).int()
    times = []
    with torch.inference_mode():
        model(**inputs)
        for _ in range(args.iters):
            t0 = time.perf_counter()
            model(**inputs)
            times.append((time.perf_counter() - t0) * 1e3)
    print(
        json.dumps(
            {
                "ms_median": statistics.median(times),
                "ms_min": min(times),
                "iters": args.iters,
                "threads": torch.get_num_threads(),
                "transformers": transformers.__version__,
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
