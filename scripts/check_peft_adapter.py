#!/usr/bin/env python3
"""PEFT interop for dreamplan's LoRA adapters (src/vlm/lora.rs), with peft 0.21.2 on the
tiny Qwen3-VL of tests/fixtures/vlm/tiny.

  make OUT      a PEFT LoRA adapter (r 4, alpha 8, dropout 0.05, the seven text projections,
                init_lora_weights=False so that B is not zero), saved by PEFT to
                OUT/peft-adapter/, and PEFT's logits with it for the `text` and `one_image`
                cases in OUT/peft-adapter-logits.safetensors. Seeded: same bytes each run.
  check ADAPTER INPUTS LOGITS
                loads ADAPTER (written by dreamplan) with PeftModel.from_pretrained, checks
                that every tensor of its adapter_model.safetensors landed in the model,
                runs INPUTS (HF-named forward inputs) and compares with dreamplan's logits
                (tensor `logits` of LOGITS); prints the max abs error, exits 1 above 1e-4.

Usage:
  ~/.cache/dreamplan-hf-venv/bin/pip install -r scripts/requirements-hf.txt
  ~/.cache/dreamplan-hf-venv/bin/python scripts/check_peft_adapter.py make tests/fixtures/vlm
"""

import json
import os
import sys

import peft
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import Qwen3VLForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "tests", "fixtures", "vlm", "tiny")
CASES = os.path.join(HERE, "..", "tests", "fixtures", "vlm", "cases")
TOL = 1e-4


def base_model():
    model = Qwen3VLForConditionalGeneration.from_pretrained(TINY, dtype=torch.float32)
    return model.eval()


def forward(model, inputs):
    inputs = dict(inputs)
    if "image_grid_thw" in inputs:
        image_token_id = model.config.image_token_id
        inputs["mm_token_type_ids"] = (inputs["input_ids"] == image_token_id).long()
    with torch.no_grad():
        return model(**inputs).logits.float().contiguous()


def make(out):
    torch.manual_seed(0)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,
    )
    model = get_peft_model(base_model(), config).eval()
    adapter = os.path.join(out, "peft-adapter")
    model.save_pretrained(adapter)
    # The absolute path of this checkout is no business of the fixture.
    cfg_path = os.path.join(adapter, "adapter_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["base_model_name_or_path"] = "tests/fixtures/vlm/tiny"
    # PEFT stores the targets as a set: its order changes from run to run.
    cfg["target_modules"] = sorted(cfg["target_modules"])
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    readme = os.path.join(adapter, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    logits = {}
    for case in ("text", "one_image"):
        logits[case] = forward(model, load_file(os.path.join(CASES, f"{case}.in.safetensors")))
    save_file(logits, os.path.join(out, "peft-adapter-logits.safetensors"))
    print(f"peft {peft.__version__}: wrote {adapter} and peft-adapter-logits.safetensors")


def check(adapter, inputs, logits):
    model = PeftModel.from_pretrained(base_model(), adapter).eval()
    saved = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    loaded = get_peft_model_state_dict(model)
    if set(saved) != set(loaded):
        print(f"keys differ: only in file {sorted(set(saved) - set(loaded))[:5]}, "
              f"only in model {sorted(set(loaded) - set(saved))[:5]}")
        return 1
    for key, value in saved.items():
        if not torch.equal(value.float(), loaded[key].float()):
            print(f"{key}: loaded tensor differs from the file")
            return 1
    ours = load_file(logits)["logits"]
    theirs = forward(model, load_file(inputs))
    err = (ours - theirs).abs().max().item()
    print(f"peft {peft.__version__}: {len(saved)} adapter tensors loaded; max abs logit error {err:.3e}")
    return 0 if err <= TOL else 1


def main(argv):
    if len(argv) == 2 and argv[0] == "make":
        make(argv[1])
        return 0
    if len(argv) == 4 and argv[0] == "check":
        return check(argv[1], argv[2], argv[3])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
