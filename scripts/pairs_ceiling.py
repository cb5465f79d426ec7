#!/usr/bin/env python3
"""What a preference file can teach: per task, the episode score of the planner's own
favourite candidate, of the chosen answers and of the best candidate, on its states.

    python3 scripts/pairs_ceiling.py PAIRS.jsonl

Only for files scored by the simulator verifier (`--verifier sim`): its score is
`-distance / half_threshold`, so an episode scores 1 when the distance is within the
task's first threshold, 0.5 within the second (`Task::thresholds` in src/sim/tasks.rs).
Standard library only.
"""
import json
import sys

# (one, half) thresholds in metres, as Task::thresholds.
THRESHOLDS = {"rope": (0.02, 0.04), "cloth": (0.02, 0.05), "toy": (0.02, 0.04)}


def episode_score(task, score):
    one, half = THRESHOLDS[task]
    if score >= -one / half:
        return 1.0
    if score >= -1.0:
        return 0.5
    return 0.0


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        header = json.loads(f.readline())
        if header.get("verifier") not in ("sim", None):
            sys.exit(f"scored by {header.get('verifier')!r}, not the simulator: no episode scores")
        rows = {}
        for line in f:
            if not line.strip():
                continue
            st = json.loads(line)
            if not st["pairs"]:
                continue
            c = st["candidates"]
            t = st["task"]
            chosen = c[st["pairs"][0]["chosen"]]
            favourite = max(c, key=lambda x: x["logprob"])
            best = max(c, key=lambda x: x["score"])
            r = rows.setdefault(t, [0, 0.0, 0.0, 0.0, 0])
            r[0] += 1
            r[1] += episode_score(t, favourite["score"])
            r[2] += episode_score(t, chosen["score"])
            r[3] += episode_score(t, best["score"])
            r[4] += len(c)
    print("| task | states with pairs | distinct candidates per state | favourite | chosen | best |")
    print("|---|---|---|---|---|---|")
    for t in sorted(rows):
        n, fav, ch, best, cands = rows[t]
        print(f"| {t} | {n} | {cands / n:.1f} | {fav / n:.2f} | {ch / n:.2f} | {best / n:.2f} |")


if __name__ == "__main__":
    main()
