#!/usr/bin/env python3
"""A model folder for speed figures of a real Qwen3-VL architecture without its weights.

    bench_folder.py --arch config/qwen3_vl/8b.json --tokenizer tests/fixtures/vlm/tiny --out DIR

DIR gets the architecture's config.json, with the special token ids (image pad, video pad,
vision start / end) taken from the tokenizer folder's config so that its tokenizer's
prompts line up with the model, and that folder's tokenizer and processor files. The
embedding keeps the architecture's vocabulary size, so every weight matrix has its real
shape. No weights are written: `dreamplan ... --random-weights` makes them up in memory
(`WeightStore::random`), and scripts/bench_decode_hf.py lets transformers initialise its
own. Standard library only.
"""
import argparse
import json
import os
import shutil

IDS = ["image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"]
FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "special_tokens_map.json",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", required=True, help="an HF config.json of the architecture")
    ap.add_argument("--tokenizer", required=True, help="a model folder with a tokenizer")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    arch = json.load(open(a.arch))
    tok_cfg = json.load(open(os.path.join(a.tokenizer, "config.json")))
    for key in IDS:
        if key not in tok_cfg:
            raise SystemExit(f"{a.tokenizer}/config.json has no {key}")
        arch[key] = tok_cfg[key]
    vocab = arch["text_config"]["vocab_size"]
    if max(tok_cfg[k] for k in IDS) >= vocab:
        raise SystemExit(f"the tokenizer's special ids do not fit a vocabulary of {vocab}")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(arch, f, indent=2)
    copied = []
    for name in FILES:
        src = os.path.join(a.tokenizer, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(a.out, name))
            copied.append(name)
    t = arch["text_config"]
    print(
        f"{a.out}: {t['num_hidden_layers']} layers × {t['hidden_size']}, vocabulary {vocab}; "
        f"special ids {[arch[k] for k in IDS]}; copied {', '.join(copied)}"
    )


if __name__ == "__main__":
    main()
