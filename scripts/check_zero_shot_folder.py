#!/usr/bin/env python3
"""Checks a model folder made by `dreamplan pretrain-zero-shot` with HF transformers: that it
is an ordinary Qwen3-VL folder to them, and that dreamplan reads it the same way.

  check_zero_shot_folder.py FOLDER CASE_DIR

CASE_DIR (written by tests/zero_shot.rs) holds current.png and goal.png (the overlaid
images), case.json ({"messages", "text", "input_ids"}: dreamplan's chat-template text and
token ids) and logits.safetensors (dreamplan's logits for that prompt). This script
  1. loads the processor (tokenizer, chat template, image processor) and the model with
     transformers' Auto classes;
  2. renders the chat template and tokenises text + images with the HF processor, and
     compares text and ids with dreamplan's (exact);
  3. runs Qwen3VLForConditionalGeneration on them and compares the logits (max abs error
     at most 1e-5; 2.4e-6 on the tiny test folder, 8.3e-7 on a default-size one, session 26).
Prints what it compared; exits 1 on any difference.

Usage: ~/.cache/dreamplan-hf-venv/bin/python scripts/check_zero_shot_folder.py DIR CASE
"""

import json
import os
import sys

import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoProcessor, AutoTokenizer, Qwen3VLForConditionalGeneration

TOL = 1e-5


def main(folder, case_dir):
    case = json.load(open(os.path.join(case_dir, "case.json")))
    images = [
        Image.open(os.path.join(case_dir, name)).convert("RGB")
        for name in ("current.png", "goal.png")
    ]
    tok = AutoTokenizer.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    text = processor.apply_chat_template(
        case["messages"], tokenize=False, add_generation_prompt=True
    )
    ok = True
    if text != case["text"]:
        print("chat template text differs:\nHF:   %r\nours: %r" % (text, case["text"]))
        ok = False
    else:
        print("chat template text identical (%d chars)" % len(text))
    inputs = processor(text=[text], images=images, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    if ids != case["input_ids"]:
        first = next(
            (i for i, (a, b) in enumerate(zip(ids, case["input_ids"])) if a != b),
            min(len(ids), len(case["input_ids"])),
        )
        print(
            "input ids differ at %d (HF %d ids, ours %d): HF %r ours %r"
            % (first, len(ids), len(case["input_ids"]), ids[first : first + 8],
               case["input_ids"][first : first + 8])
        )
        ok = False
    else:
        print("input ids identical (%d tokens)" % len(ids))
    answer = "pick 3 place 5"
    round_trip = tok.decode(tok(answer)["input_ids"])
    if round_trip != answer:
        print("tokenizer round trip %r -> %r" % (answer, round_trip))
        ok = False
    model = Qwen3VLForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    ours = load_file(os.path.join(case_dir, "logits.safetensors"))["logits"][0]
    if logits.shape != ours.shape:
        print("logits shape HF %s ours %s" % (tuple(logits.shape), tuple(ours.shape)))
        return 1
    err = (logits - ours).abs().max().item()
    print("max abs logit error %.2e over %s" % (err, tuple(logits.shape)))
    if not err <= TOL:
        ok = False
    greedy_hf = int(logits[-1].argmax())
    greedy_ours = int(ours[-1].argmax())
    print("next token: HF %d, ours %d" % (greedy_hf, greedy_ours))
    ok = ok and greedy_hf == greedy_ours
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
