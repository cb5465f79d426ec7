#!/usr/bin/env python3
"""Golden fixtures for dreamplan's Qwen3-VL (src/vlm) from HF transformers on the CPU.

Builds a tiny random Qwen3-VL (seeded), a tiny byte-level BPE tokenizer with Qwen's special
tokens and a Qwen-style chat template, saves HF model folders and the expected outputs of
transformers for them:

  tiny/            main model: config.json in the transformers 5.x format (rope_parameters),
                   model.safetensors (f32), tokenizer.json, tokenizer_config.json (with the
                   chat template), preprocessor_config.json
  tiny-bf16-sharded/  the same model stored in bfloat16, in shards with
                   model.safetensors.index.json, config.json in the transformers 4.57 format
                   (rope_theta + rope_scaling), the chat template in chat_template.json
  images/*.png     test images (sides multiple of 32 and not; one above max_pixels)
  cases/*.in.safetensors / *.out.safetensors   forward inputs (HF names) and expected
                   logits + position_ids
  preprocess/*.safetensors   pixel_values + image_grid_thw from the default (torchvision)
                   processor and from the PIL-backend processor
  cases.json       chat messages, rendered prompts, input_ids, greedy generation

Usage (versions pinned in scripts/requirements-hf.txt):
  ~/.cache/dreamplan-hf-venv/bin/python scripts/gen_vlm_fixtures.py tests/fixtures/vlm
"""

import json
import math
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import tokenizers
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

SEED = 1234
SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
BPE_VOCAB = 300

# A Qwen-style chat template (the real Qwen3-VL one also handles tools and videos):
# string or list content, images as vision_start + image_pad + vision_end, optional
# "Picture N:" labels, a default system prompt only when asked for.
CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) -%}"
    "{%- if messages[0]['role'] != 'system' and add_system_prompt is defined and add_system_prompt -%}"
    "{{- '<|im_start|>system\\nYou are a robot planner.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' or 'image' in item -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id is defined and add_vision_id -%}"
    "{{- 'Picture ' ~ image_count.value ~ ': ' -}}"
    "{%- endif -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}"
    "{{- item['text'] | trim -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

CORPUS = [
    "Pick the rope end at keypoint 3 and place it at keypoint 7 on the goal image.",
    "The cloth corner is folded over the middle; grasp point 12, place point 4.",
    "Move the plush toy arm from keypoint 5 to keypoint 9 so it matches the goal.",
    "You are a robot planner. Answer with a source keypoint and a target keypoint.",
    "source: 2, target: 11. source: 8, target: 1. The rope is straight now.",
    "Describe the difference between the current image and the goal image.",
]

PREPROCESSOR = {
    "size": {"shortest_edge": 64 * 64, "longest_edge": 32 * 32 * 6},
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "do_resize": True,
    "do_rescale": True,
    "rescale_factor": 1.0 / 255.0,
    "do_normalize": True,
    "resample": 3,
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen3VLProcessor",
}

# name -> (width, height): a multiple of 32, not a multiple, and one above max_pixels
# (downscaled, so the antialiasing of the bicubic filter matters).
IMAGES = {"a_96x64": (96, 64), "b_77x45": (77, 45), "c_190x130": (190, 130)}


def build_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.add_special_tokens(SPECIALS)
    return tok


def make_image(name, width, height, rng):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack(
        [
            128 + 100 * np.sin(xx / (5.0 + len(name)) + yy / 9.0),
            128 + 100 * np.cos(yy / 7.0) * np.sin(xx / 11.0),
            255 * (xx + yy) / (width + height),
        ],
        axis=-1,
    )
    noise = rng.normal(0, 25, size=base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def tiny_config(tok):
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    vocab = tok.get_vocab_size()
    return Qwen3VLConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": 64,
            "intermediate_size": 96,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "rms_norm_eps": 1e-6,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
            "attention_bias": False,
            "hidden_act": "silu",
        },
        vision_config={
            "depth": 3,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "in_channels": 3,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0, 1],
            "hidden_act": "gelu_pytorch_tanh",
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def randomise(model):
    """Weights with O(1) activations and peaked logits, so that greedy decoding is robust
    to float rounding (HF's 0.02-std init gives near-uniform logits and fragile argmaxes)."""
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name or "pos_embed" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                fan_in = int(np.prod(p.shape[1:]))
                gain = 3.0 if name.startswith("lm_head") else 1.0
                p.copy_(gain * torch.randn(p.shape, generator=g) / math.sqrt(fan_in))


def to_rope_4_57(config_json):
    """transformers 4.57 wrote rope settings as rope_theta + rope_scaling."""
    text = config_json["text_config"]
    rope = text.pop("rope_parameters")
    text["rope_theta"] = rope.pop("rope_theta")
    text["rope_scaling"] = rope
    vision = config_json["vision_config"]
    vision.pop("rope_parameters", None)
    return config_json


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def main(out):
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    for sub in ["tiny", "tiny-bf16-sharded", "images", "cases", "preprocess"]:
        os.makedirs(os.path.join(out, sub))

    # --- tokenizer, template, processor -------------------------------------------------
    tok = build_tokenizer()
    tiny = os.path.join(out, "tiny")
    tok.save(os.path.join(tiny, "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 4096,
        "chat_template": CHAT_TEMPLATE,
    }
    write_json(os.path.join(tiny, "tokenizer_config.json"), tokenizer_config)
    write_json(os.path.join(tiny, "preprocessor_config.json"), PREPROCESSOR)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(tiny, "tokenizer.json"),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    ip_kwargs = {k: v for k, v in PREPROCESSOR.items() if k not in ("image_processor_type", "processor_class")}
    image_processor = Qwen2VLImageProcessor(**ip_kwargs)
    image_processor_pil = Qwen2VLImageProcessorPil(**ip_kwargs)
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=hf_tok,
        video_processor=Qwen3VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )

    # --- images and preprocessing -------------------------------------------------------
    images = {}
    for name, (w, h) in IMAGES.items():
        img = make_image(name, w, h, rng)
        img.save(os.path.join(out, "images", f"{name}.png"))
        images[name] = Image.open(os.path.join(out, "images", f"{name}.png")).convert("RGB")
    pre_report = {}
    for name, img in images.items():
        a = image_processor(images=[img], return_tensors="pt")
        b = image_processor_pil(images=[img], return_tensors="pt")
        assert torch.equal(a["image_grid_thw"], b["image_grid_thw"])
        diff = (a["pixel_values"] - b["pixel_values"]).abs().max().item()
        pre_report[name] = {"torchvision_vs_pil_max_abs": diff}
        save_file(
            {
                "pixel_values": a["pixel_values"].float().contiguous(),
                "image_grid_thw": a["image_grid_thw"].long().contiguous(),
                "pixel_values_pil": b["pixel_values"].float().contiguous(),
            },
            os.path.join(out, "preprocess", f"{name}.safetensors"),
        )

    # --- model ---------------------------------------------------------------------------
    config = tiny_config(tok)
    config._attn_implementation = "eager"
    model = Qwen3VLForConditionalGeneration(config).eval()
    randomise(model)
    model.save_pretrained(tiny)
    # save_pretrained rewrites these; keep ours
    write_json(os.path.join(tiny, "tokenizer_config.json"), tokenizer_config)
    for leftover in ["generation_config.json"]:
        p = os.path.join(tiny, leftover)
        if os.path.exists(p):
            os.remove(p)

    sharded = os.path.join(out, "tiny-bf16-sharded")
    Qwen3VLForConditionalGeneration.from_pretrained(tiny, dtype=torch.float32).to(torch.bfloat16).save_pretrained(
        sharded, max_shard_size="150KB"
    )
    with open(os.path.join(sharded, "config.json")) as f:
        write_json(os.path.join(sharded, "config.json"), to_rope_4_57(json.load(f)))
    for f_ in ["tokenizer.json", "preprocessor_config.json"]:
        shutil.copy(os.path.join(tiny, f_), os.path.join(sharded, f_))
    cfg_wo_template = {k: v for k, v in tokenizer_config.items() if k != "chat_template"}
    write_json(os.path.join(sharded, "tokenizer_config.json"), cfg_wo_template)
    write_json(os.path.join(sharded, "chat_template.json"), {"chat_template": CHAT_TEMPLATE})
    p = os.path.join(sharded, "generation_config.json")
    if os.path.exists(p):
        os.remove(p)

    def load(d):
        m = Qwen3VLForConditionalGeneration.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
        return m.eval()

    model = load(tiny)
    model_bf16 = load(sharded)

    # --- forward cases ---------------------------------------------------------------------
    prompt = "Pick the rope end and place it on the goal keypoint."
    cases_spec = {
        "text": ([[{"role": "user", "content": "Describe the difference between the images."}]], []),
        "one_image": (
            [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]],
            [["a_96x64"]],
        ),
        "two_images": (
            [
                [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Current:"},
                            {"type": "image"},
                            {"type": "text", "text": "Goal:"},
                            {"type": "image"},
                            {"type": "text", "text": prompt},
                        ],
                    }
                ]
            ],
            [["b_77x45", "c_190x130"]],
        ),
        "padded_batch": (
            [
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where?"}]}],
                [
                    {"role": "system", "content": "You are a robot planner."},
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]},
                ],
            ],
            [["b_77x45"], ["a_96x64"]],
        ),
    }
    cases = {}
    for case, (conversations, image_names) in cases_spec.items():
        texts = [
            processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations
        ]
        flat_images = [images[n] for row in image_names for n in row]
        kwargs = {"text": texts, "return_tensors": "pt"}
        if flat_images:
            kwargs["images"] = flat_images
        if len(texts) > 1:
            kwargs["padding"] = True
            kwargs["padding_side"] = "left"
        inputs = processor(**kwargs)
        tensors = {"input_ids": inputs["input_ids"].long().contiguous()}
        if len(texts) > 1:
            tensors["attention_mask"] = inputs["attention_mask"].long().contiguous()
        if flat_images:
            tensors["pixel_values"] = inputs["pixel_values"].float().contiguous()
            tensors["image_grid_thw"] = inputs["image_grid_thw"].long().contiguous()
        save_file(tensors, os.path.join(out, "cases", f"{case}.in.safetensors"))
        with torch.no_grad():
            logits = model(**inputs).logits.float()
            if flat_images:
                position_ids, _ = model.model.get_rope_index(
                    inputs["input_ids"],
                    mm_token_type_ids=inputs["mm_token_type_ids"],
                    image_grid_thw=inputs["image_grid_thw"],
                    attention_mask=inputs.get("attention_mask") if len(texts) > 1 else None,
                )
            else:
                b, l = inputs["input_ids"].shape
                position_ids = torch.arange(l).view(1, 1, -1).expand(3, b, -1)
        expected = {"logits": logits.contiguous(), "position_ids": position_ids.long().contiguous()}
        if case in ("text", "one_image"):
            with torch.no_grad():
                expected["logits_bf16"] = model_bf16(**inputs).logits.float().contiguous()
        save_file(expected, os.path.join(out, "cases", f"{case}.out.safetensors"))
        cases[case] = {
            "messages": conversations,
            "images": image_names,
            "rendered": texts,
            "input_ids": inputs["input_ids"].tolist(),
            "attention_mask": inputs["attention_mask"].tolist(),
        }

    # --- greedy generation ---------------------------------------------------------------
    gen_config = GenerationConfig(
        max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=tok.token_to_id("<|endoftext|>")
    )
    for case in ("text", "one_image", "two_images"):
        conversations, image_names = cases_spec[case]
        kwargs = {"text": cases[case]["rendered"], "return_tensors": "pt"}
        flat_images = [images[n] for row in image_names for n in row]
        if flat_images:
            kwargs["images"] = flat_images
        inputs = processor(**kwargs)
        with torch.no_grad():
            out_ids = model.generate(**inputs, generation_config=gen_config)
        cases[case]["greedy_16"] = out_ids[0, inputs["input_ids"].shape[1] :].tolist()

    write_json(
        os.path.join(out, "cases.json"),
        {
            "versions": {
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "tokenizers": tokenizers.__version__,
            },
            "special_tokens": {t: tok.token_to_id(t) for t in SPECIALS},
            "preprocess": pre_report,
            "cases": cases,
        },
    )
    print(json.dumps(pre_report, indent=1))
    total = 0
    for root, _, files in os.walk(out):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"fixtures: {total / 1e6:.2f} MB in {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/vlm")
