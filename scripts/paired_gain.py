#!/usr/bin/env python3
"""Paired gain of one `dreamplan eval --json` run over another on the same episodes.

    python3 scripts/paired_gain.py BASE.json TUNED.json

For every (task, seed) in both files: tuned score minus base score. Prints, per task and
over all tasks, both means and the mean difference with a normal 95% interval (1.96
standard errors of the per-episode differences; for "all", of the mean of the tasks'
gains, from the tasks' own variances). Standard library only.
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


def stratified(groups):
    """The average of the groups' mean differences (each task alike) with a normal 95%
    interval from the groups' own variances (sqrt(sum s_t^2 / n_t) / T): the spread between
    the tasks' gains is no sampling noise. Before session 44 the "all" row pooled the
    episodes of every task into one sample, which widened its interval."""
    t = len(groups)
    mean = sum(sum(g) / len(g) for g in groups) / t
    var = 0.0
    for g in groups:
        n, m = len(g), sum(g) / len(g)
        var += (sum((x - m) ** 2 for x in g) / (n - 1) if n > 1 else 0.0) / n
    half = 1.96 * math.sqrt(var) / t
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
    tasks = sorted({k[0] for k in keys})
    for task in tasks + ["all"]:
        ks = [k for k in keys if task in ("all", k[0])]
        b = sum(base[k] for k in ks) / len(ks)
        t = sum(tuned[k] for k in ks) / len(ks)
        if task == "all":
            # The mean of the tasks' means (the same as pooling when each task has as
            # many episodes), the gain's interval from within the tasks.
            of = [[k for k in keys if k[0] == x] for x in tasks]
            b = sum(sum(base[k] for k in g) / len(g) for g in of) / len(of)
            t = sum(sum(tuned[k] for k in g) / len(g) for g in of) / len(of)
            m, lo, hi = stratified([[tuned[k] - base[k] for k in g] for g in of])
        else:
            m, lo, hi = summary([tuned[k] - base[k] for k in ks])
        print(f"| {task} | {len(ks)} | {b:.2f} | {t:.2f} | {m:+.2f} ({lo:+.2f} to {hi:+.2f}) |")


if __name__ == "__main__":
    main()
