#!/usr/bin/env python3
"""Seed-by-seed agreement of planners' answers with a reference planner's.

Reads `dreamplan eval --json` files (episodes carry `"action": [pick, place]`) and prints,
per task, how many episodes of each file pick and place as the reference did, and the
most frequent answers. Used in docs/stage3.md (session 13) to tell a learned lookup from a
learned answer prior.

    python scripts/eval_agreement.py fold_eval.json tuned_eval.json [more.json ...]
"""
import collections
import json
import sys


def episodes(path):
    with open(path) as f:
        return json.load(f)["episodes"]


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: eval_agreement.py REFERENCE.json EVAL.json [EVAL.json ...]")
    ref = {(e["task"], e["seed"]): e.get("action") for e in episodes(sys.argv[1])}
    for path in sys.argv[2:]:
        per_task = collections.defaultdict(collections.Counter)
        answers = collections.defaultdict(collections.Counter)
        for e in episodes(path):
            r, a = ref.get((e["task"], e["seed"])), e.get("action")
            if r is None or a is None:
                continue
            c = per_task[e["task"]]
            c["n"] += 1
            c["pick"] += a[0] == r[0]
            c["place"] += a[1] == r[1]
            c["both"] += a == r
            answers[e["task"]][tuple(a)] += 1
        for task, c in per_task.items():
            top = ", ".join(f"pick {p} place {q}: {k}" for (p, q), k in answers[task].most_common(3))
            print(f"{path} {task}: {c['n']} episodes, same pick {c['pick']}, same place "
                  f"{c['place']}, same action {c['both']}; most frequent {top}")


if __name__ == "__main__":
    main()
