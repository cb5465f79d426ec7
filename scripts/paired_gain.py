#!/usr/bin/env python3
"""Paired gain of one `dreamplan eval --json` run over another on the same episodes.

    python3 scripts/paired_gain.py BASE.json TUNED.json

For every (task, seed) in both files: tuned score minus base score. Prints, per task and
pooled, both means and the mean difference with a normal 95% interval (1.96 standard
errors of the per-episode differences). Standard library only.
"""
import json
import math
import sys


def scores(path):
    with open(path) as f:
        d = json.load(f)
    return {(e["task"], e["seed"]): e["score"] for e in d["episodes"]}


def summary(diffs):
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((x - mean) ** 2 for x in diffs) / (n - 1) if n > 1 else 0.0
    half = 1.96 * math.sqrt(var / n)
    return mean, mean - half, mean + half


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    base, tuned = scores(sys.argv[1]), scores(sys.argv[2])
    keys = sorted(set(base) & set(tuned))
    if not keys:
        sys.exit("no (task, seed) is in both files")
    print("| task | episodes | base | tuned | gain (95%) |")
    print("|---|---|---|---|---|")
    for task in sorted({k[0] for k in keys}) + ["all"]:
        ks = [k for k in keys if task in ("all", k[0])]
        b = sum(base[k] for k in ks) / len(ks)
        t = sum(tuned[k] for k in ks) / len(ks)
        m, lo, hi = summary([tuned[k] - base[k] for k in ks])
        print(f"| {task} | {len(ks)} | {b:.2f} | {t:.2f} | {m:+.2f} ({lo:+.2f} to {hi:+.2f}) |")


if __name__ == "__main__":
    main()
