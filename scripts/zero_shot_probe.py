#!/usr/bin/env python3
"""A fast text-only probe of what the tiny zero-shot model can learn from the keypoint lists.

The Rust trainer (`dreamplan pretrain-zero-shot`) spends ~190 ms per sample on this 2-core
CPU (vision tower and ~300 tokens); this probe trains a decoder of the same shape (width
128, 4 layers, RMSNorm, SwiGLU, rotary positions, number tokens whose embeddings start
with the same Fourier code) on the *text* of the prompt alone: the task, both keypoint
lists tokenised as the zero-shot tokenizer splits them (` 3`, ` (`, `705`, `,`, ` 400`,
`),`), and the answer `pick N place M`. It asks: does more data (several times the Rust
budget) teach the rule, or only the per-task answer prior? It answers by the held-out
agreement (greedy pick, then greedy place after the true pick) per task.

Scenes come from `examples/dump_scenes.rs` (keypoints as the evaluation samples them):

  cargo run --release --example dump_scenes -- 1000000 600 > train.jsonl
  cargo run --release --example dump_scenes -- 2000000 100 > held.jsonl
  python3 scripts/zero_shot_probe.py --train train.jsonl --held held.jsonl \
      --rule coverage --steps 2000 --batch 8

Needs torch (CPU); `scripts/requirements-hf.txt` has it.
"""
import argparse
import json
import math
import random
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM = 1001  # number tokens 0..1000, then the same after a space


class Vocab:
    def __init__(self):
        self.words = {}

    def word(self, w):
        return self.words.setdefault(w, 2 * NUM + len(self.words))

    @staticmethod
    def number(n, after_space):
        return n + (NUM if after_space else 0)


def encode(vocab, scene, answer, relabel_rng=None):
    cur = [list(k) for k in scene["cur"]]
    goal = [list(k) for k in scene["goal"]]
    pick, place = answer
    if relabel_rng is not None:
        for points, which in ((cur, 0), (goal, 1)):
            ids = list(range(1, len(points) + 1))
            relabel_rng.shuffle(ids)
            new = {k[0]: ids[i] for i, k in enumerate(points)}
            if which == 0:
                pick = new[pick]
            else:
                place = new[place]
            for k in points:
                k[0] = new[k[0]]
            points.sort()
    w, n = vocab.word, vocab.number
    ids = [w("task%d" % scene["task"]), w("current:")]
    for points, head in ((cur, None), (goal, "goal:")):
        if head:
            ids.append(w(head))
        for i, (k, x, y) in enumerate(points):
            end = ")." if i == len(points) - 1 else "),"
            ids += [n(k, True), w(" ("), n(x, False), w(","), n(y, True), w(end)]
    prompt_len = len(ids)
    ids += [w("pick"), n(pick, True), w(" place"), n(place, True), w("<end>")]
    return ids, prompt_len, (pick, place)


class Block(nn.Module):
    def __init__(self, h, heads):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = nn.RMSNorm(h), nn.RMSNorm(h)
        self.qkv = nn.Linear(h, 3 * h, bias=False)
        self.o = nn.Linear(h, h, bias=False)
        self.gate = nn.Linear(h, 3 * h, bias=False)
        self.up = nn.Linear(h, 3 * h, bias=False)
        self.down = nn.Linear(3 * h, h, bias=False)

    def forward(self, x, cos, sin):
        b, l, h = x.shape
        hd = h // self.heads
        q, k, v = self.qkv(self.n1(x)).view(b, l, 3, self.heads, hd).permute(2, 0, 3, 1, 4)

        def rope(t):
            a, c = t[..., : hd // 2], t[..., hd // 2:]
            return torch.cat([a * cos - c * sin, c * cos + a * sin], -1)

        y = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
        x = x + self.o(y.transpose(1, 2).reshape(b, l, h))
        z = self.n2(x)
        return x + self.down(F.silu(self.gate(z)) * self.up(z))


class Decoder(nn.Module):
    def __init__(self, vocab_size, h, layers, heads=4, code=0.1, freqs=12):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, h)
        self.blocks = nn.ModuleList([Block(h, heads) for _ in range(layers)])
        self.norm = nn.RMSNorm(h)
        self.head = nn.Linear(h, vocab_size, bias=False)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)
        with torch.no_grad():  # the Fourier code of zero_shot::init_weights
            for space in (0, 1):
                for v in range(NUM):
                    for k in range(freqs):
                        f = 0.5 * 64 ** (k / (freqs - 1))
                        ph = 2 * math.pi * f * v / 1000
                        col = 2 * freqs * space + 2 * k
                        self.emb.weight[Vocab.number(v, space == 1), col] += code * math.sin(ph)
                        self.emb.weight[Vocab.number(v, space == 1), col + 1] += code * math.cos(ph)
        hd = h // heads
        inv = 1.0 / (10000 ** (torch.arange(0, hd // 2).float() / (hd // 2)))
        pos = torch.arange(512).float()[:, None] * inv[None]
        self.register_buffer("cos", pos.cos())
        self.register_buffer("sin", pos.sin())

    def forward(self, x):
        length = x.shape[1]
        h = self.emb(x)
        for b in self.blocks:
            h = b(h, self.cos[:length], self.sin[:length])
        return self.head(self.norm(h))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--held", required=True)
    ap.add_argument("--rule", choices=["coverage", "assignment"], default="coverage")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--code", type=float, default=0.1, help="Fourier code amplitude")
    ap.add_argument("--relabel", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    load = lambda f: [json.loads(line) for line in open(f)]
    train, held = load(a.train), load(a.held)

    def answer(s):  # the rule's answer as dreamplan computes it (examples/dump_scenes.rs)
        return tuple(s["answers"][a.rule])

    vocab = Vocab()
    for s in train[:1]:
        encode(vocab, s, answer(s))
    for t in range(3):
        vocab.word("task%d" % t)
    for w in ("<pad>", ")."):
        vocab.word(w)
    size = 2 * NUM + len(vocab.words)
    model = Decoder(size, a.hidden, a.layers, code=a.code)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)

    def batch(scenes, relabel):
        enc = [encode(vocab, s, answer(s), rng if relabel else None) for s in scenes]
        length = max(len(e[0]) for e in enc)
        x = torch.full((len(enc), length), vocab.word("<pad>"))
        y = torch.full((len(enc), length), -100)
        for b, (ids, pl, _) in enumerate(enc):
            x[b, : len(ids)] = torch.tensor(ids)
            for t in range(pl, len(ids)):
                y[b, t - 1] = ids[t]
        return x, y, enc

    def held_out():
        model.eval()
        exact, pick, n = [0] * 3, [0] * 3, [0] * 3
        with torch.no_grad():
            for i in range(0, len(held), 64):
                chunk = held[i: i + 64]
                x, _, enc = batch(chunk, False)
                logits = model(x)
                for b, (_, pl, (pk, pc)) in enumerate(enc):
                    p_ok = logits[b, pl].argmax().item() == Vocab.number(pk, True)
                    q_ok = logits[b, pl + 2].argmax().item() == Vocab.number(pc, True)
                    t = chunk[b]["task"]
                    n[t] += 1
                    pick[t] += p_ok
                    exact[t] += p_ok and q_ok
        model.train()
        f = lambda c: " / ".join("%.2f" % (c[t] / max(1, n[t])) for t in range(3))
        return f(exact), f(pick)

    # The per-task prior: the most frequent training answer of each task, on held-out scenes.
    from collections import Counter
    modes = [Counter(answer(s) for s in train if s["task"] == t).most_common(1) for t in range(3)]
    agree = [0.0] * 3
    for t in range(3):
        of_task = [s for s in held if s["task"] == t]
        if modes[t] and of_task:
            agree[t] = sum(answer(s) == modes[t][0][0] for s in of_task) / len(of_task)
    print("per-task most frequent training answer, held-out same action: "
          + " / ".join("%.2f" % v for v in agree), flush=True)
    t0, losses = time.time(), []
    for step in range(a.steps):
        warm = 30
        if step < warm:
            lr = a.lr * (step + 1) / warm
        else:
            p = (step - warm) / max(1, a.steps - warm)
            lr = a.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * p)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y, _ = batch(rng.sample(train, a.batch), a.relabel)
        loss = F.cross_entropy(model(x).view(-1, size), y.view(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % max(1, a.steps // 5) == 0:
            exact, pick = held_out()
            recent = losses[-50:]
            print(f"step {step + 1}: answer loss {sum(recent) / len(recent):.3f}; held-out "
                  f"same action {exact}, same pick {pick} (rope / cloth / toy); "
                  f"{time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
