#!/usr/bin/env python3
"""A diagnostic, not the method: a copy of a `dreamplan preferences` file whose chosen
answer in every state is the fold's (pick current keypoint 1, place at the goal keypoint
farthest from it, on the pixel positions the file stores), added as a candidate where the
planner had not sampled it (its score then set above the best, so that it is chosen).
Each state keeps up to 20 pairs against candidates scoring below it by the file's margin
(at least 5 pairs). Image paths become absolute. Training on it asks whether the planner
can represent the rule at all (docs/stage3.md, session 13).

    python scripts/relabel_pairs.py IN.jsonl OUT.jsonl
"""
import json
import math
import os
import sys


def fold(d):
    cur = {k[0]: (k[1], k[2]) for k in d["current_keypoints"]}
    goal = {k[0]: (k[1], k[2]) for k in d["goal_keypoints"]}
    return 1, max(goal, key=lambda j: (math.dist(cur[1], goal[j]), -j))


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: relabel_pairs.py IN.jsonl OUT.jsonl")
    src, out = sys.argv[1:]
    base = os.path.dirname(os.path.abspath(src))
    with open(src) as f:
        lines = f.read().splitlines()
    header = json.loads(lines[0])
    margin = header.get("margin", 0.25)
    rows = [json.dumps(header)]
    for line in lines[1:]:
        d = json.loads(line)
        c = d["candidates"]
        answer = fold(d)
        hits = [i for i, x in enumerate(c) if (x["pick"], x["place"]) == answer]
        if hits:
            i = hits[0]
        else:
            best = max(x["score"] for x in c)
            c.append({"pick": answer[0], "place": answer[1], "score": best + 1.0,
                      "count": 1, "logprob": 0.0})
            i = len(c) - 1
        worse = [j for j, x in enumerate(c) if j != i and x["score"] < c[i]["score"] - margin]
        others = [j for j in range(len(c)) if j != i]
        d["pairs"] = [{"chosen": i, "rejected": j} for j in (worse[:20] or others[:5])]
        for key in ("current_image", "goal_image"):
            d[key] = os.path.join(base, d[key])
        rows.append(json.dumps(d))
    with open(out, "w") as f:
        f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
