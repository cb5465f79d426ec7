#!/usr/bin/env python3
"""How far one-step lookups of the prompt's relations get, per task, on an action table.

Reads the JSON lines of ``cargo run --release --example action_table -- FIRST COUNT THREADS
[TASKS]`` (every keypoint action of each scene scored by the simulator) and prints, per
task: the keypoint oracle (the best action of each scene), every anchored lookup the prompt
makes possible (keypoints ranked as the prompt ranks them: by the distance to the nearest
keypoint of the other image, 1 = the largest), and what choosing the best of a few lookups
per scene would give (a ceiling for a planner that can only pick among them).

Lookups are named ``cur<r>->near`` / ``cur<r>->far`` (pick current rank r, place at its
nearest / farthest goal keypoint), ``cur<r>->goal<s>`` (pick current rank r, place goal
rank s; ``cur1->goal1`` is the ranks rule), ``goal<s><-near`` / ``goal<s><-far`` (place at
goal rank s, pick its nearest / farthest current keypoint; ``goal1<-near`` is coverage).

Usage::

    python3 scripts/lookup_table.py table.jsonl [--top 12]
"""

from __future__ import annotations

import argparse
import collections
import json
import math

TASKS = ['rope', 'cloth', 'toy']


def relations(own, other):
    """Per keypoint (index of nearest, index of farthest, rank) as the prompt gives them."""
    out = []
    for k in own:
        ds = [math.hypot(k[1] - o[1], k[2] - o[2]) for o in other]
        near = min(range(len(other)), key=lambda j: (ds[j], j))
        far = max(range(len(other)), key=lambda j: (ds[j], -j))
        out.append((near, far, ds[near]))
    order = sorted(range(len(own)), key=lambda i: (-out[i][2], i))
    rank = [0] * len(own)
    for r, i in enumerate(order):
        rank[i] = r + 1
    return [(n, f, rank[i]) for i, (n, f, _) in enumerate(out)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('table')
    ap.add_argument('--top', type=int, default=12)
    args = ap.parse_args()
    per_task: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for line in open(args.table, encoding='utf-8'):
        row = json.loads(line)
        task = TASKS[row['task']]
        cur, goal, s = row['cur'], row['goal'], row['scores']
        rc, rg = relations(cur, goal), relations(goal, cur)
        ci = {rc[i][2]: i for i in range(len(cur))}
        gi = {rg[j][2]: j for j in range(len(goal))}
        acc = per_task[task]
        acc['keypoint oracle'].append(max(max(r) for r in s))
        for r, i in ci.items():
            acc[f'cur{r}->near'].append(s[i][rc[i][0]])
            acc[f'cur{r}->far'].append(s[i][rc[i][1]])
            for q, j in gi.items():
                acc[f'cur{r}->goal{q}'].append(s[i][j])
        for q, j in gi.items():
            acc[f'goal{q}<-near'].append(s[rg[j][0]][j])
            acc[f'goal{q}<-far'].append(s[rg[j][1]][j])
        i1, j1 = ci[1], gi[1]
        five = [s[rg[j1][0]][j1], s[rg[j1][1]][j1], s[i1][rc[i1][0]], s[i1][rc[i1][1]], s[i1][j1]]
        acc['best of the five rank-1 lookups, per scene'].append(max(five))
    for task in TASKS:
        if task not in per_task:
            continue
        acc = per_task[task]
        n = len(acc['keypoint oracle'])
        mean = {k: sum(v) / len(v) for k, v in acc.items() if len(v) == n}
        print(f'{task}: {n} scenes')
        fixed = ['keypoint oracle', 'best of the five rank-1 lookups, per scene']
        for k in fixed:
            print(f'  {k:44s} {mean[k]:.3f}')
        ranked = sorted((k for k in mean if k not in fixed), key=lambda k: -mean[k])
        for k in ranked[: args.top]:
            print(f'  {k:44s} {mean[k]:.3f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
