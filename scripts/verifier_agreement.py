#!/usr/bin/env python3
"""How far one verifier's preference file agrees with another's on the same states.

    python3 scripts/verifier_agreement.py EXP/preferences-wm/pairs.jsonl EXP/preferences-sim/pairs.jsonl

Both files come from `dreamplan preferences` with the same planner and first seed (as
`dreamplan experiment` makes them), so each state's candidates are the same actions; only
the scores differ. Per task, over the candidates both files scored: how often the first
file's best candidate is the second's best, the second verifier's score lost by taking
the first's best (regret, in the second's units), and the share of candidate pairs whose
order the two agree on (pairs the second separates by more than --margin). With the
simulator second, this is how good the pairs the first verifier trained on were.
"""

import argparse
import collections
import json
import sys

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from ranking import pair_credit  # noqa: E402


def load(path):
    with open(path) as f:
        head = json.loads(f.readline())
        states = {}
        for line in f:
            r = json.loads(line)
            states[(r["task"], r["seed"])] = {(c["pick"], c["place"]): c["score"] for c in r["candidates"]}
    return head, states


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("first")
    ap.add_argument("second", help="the reference verifier's file (e.g. the simulator's)")
    ap.add_argument("--margin", type=float, default=0.05)
    a = ap.parse_args()
    h1, s1 = load(a.first)
    h2, s2 = load(a.second)
    for h, name in ((h1, a.first), (h2, a.second)):
        print(f"{name}: verifier {h['verifier']}, planner {h['planner']}, first seed {h['first_seed']}")
    if (h1["planner"], h1["first_seed"]) != (h2["planner"], h2["first_seed"]):
        print("warning: the files come from different planners or seeds; only shared actions are compared")
    per = collections.defaultdict(lambda: {"states": 0, "top": 0, "regret": 0.0, "agree": 0, "pairs": 0})
    for key, a1 in s1.items():
        a2 = s2.get(key)
        if a2 is None:
            continue
        common = [x for x in a1 if x in a2]
        if len(common) < 2:
            continue
        d = per[key[0]]
        d["states"] += 1
        # The first verifier's best: a pick at random among its tied best (since session
        # 44; the first of them before, and a tied pair counted as a disagreement).
        top1 = max(a1[x] for x in common)
        tied = [x for x in common if a1[x] == top1]
        best2 = max(a2[x] for x in common)
        d["top"] += sum(a2[x] >= best2 - 1e-9 for x in tied) / len(tied)
        d["regret"] += sum(best2 - a2[x] for x in tied) / len(tied)
        for i, x in enumerate(common):
            for y in common[i + 1:]:
                if abs(a2[x] - a2[y]) <= a.margin:
                    continue
                d["pairs"] += 1
                d["agree"] += pair_credit(a1[x], a1[y], a2[x] > a2[y])
    print("task   states  same best  regret  pair agreement")
    for task, d in sorted(per.items()):
        n = d["states"]
        print(f"{task:6} {n:6}  {d['top'] / n:9.2f}  {d['regret'] / n:6.3f}  "
              f"{d['agree'] / max(1, d['pairs']):.3f} of {d['pairs']}")


if __name__ == "__main__":
    main()
