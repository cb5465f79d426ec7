#!/usr/bin/env python3
"""Which mask measure orders outcomes as the simulator does? (session 30)

Reads the masks `dreamplan wm-eval --dump-masks FILE` writes (per state: the goal's object
mask; per candidate: its simulator score and the object masks of its true, predicted and
prior final frames) and, for every measure below and every source of frames, prints per
task:
- the pair agreement: over candidate pairs whose simulator scores differ by more than the
  margin (wm-eval's default 0.5 half-thresholds), how often the measure orders them as the
  simulator does;
- the top-1 regret: the simulator score lost by taking the measure's best candidate
  instead of the simulator's best (mean over states).

`fold` is the measure `src/verifier/measure.rs` ships since session 30; `fold29` the one
of sessions 7–29. The others are the variants screened beside them. Needs NumPy only
(distances by brute force: the model's masks are 64×64).

    python3 scripts/measure_screen.py masks.jsonl [--margin 0.5]
"""
import argparse
import json
import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from ranking import pair_credit, tied_top  # noqa: E402,F401


def points(bits, w, h):
    a = np.frombuffer(bits.encode(), dtype=np.uint8) == ord("1")
    ys, xs = np.nonzero(a.reshape(h, w))
    return a, np.stack([xs, ys], 1).astype(np.float64)


def nearest(p, q):
    """For each point of p, the distance to the nearest point of q."""
    return np.sqrt(((p[:, None, :] - q[None, :, :]) ** 2).sum(-1)).min(1)


def features(outcome, goal):
    (oa, op), (ga, gp) = outcome, goal
    if len(op) == 0 or len(gp) == 0:
        return None
    inter = (oa & ga).sum()
    to_goal, to_outcome = nearest(op, gp), nearest(gp, op)
    return dict(
        iou=inter / (oa.sum() + ga.sum() - inter),
        coverage=to_outcome.mean(),
        spill=to_goal.mean(),
        max=max(to_goal.max(), to_outcome.max()),
        p90=max(np.percentile(to_goal, 90), np.percentile(to_outcome, 90)),
        p95=max(np.percentile(to_goal, 95), np.percentile(to_outcome, 95)),
        coverage_p90=np.percentile(to_outcome, 90),
    )


def fold_distance(coverage, reach):
    """The distance d of the shipped measure (`src/verifier/measure.rs`): coverage plus half
    the 90th-percentile reach, over 1.5."""
    return (coverage + 0.5 * reach) / 1.5


def measures(f, side):
    """Higher is better; None (an empty mask) ranks below everything."""
    e = lambda d, k=0.05: np.exp(-d / (k * side))
    ch = 0.5 * (f["coverage"] + f["spill"])
    return {
        "fold": e(fold_distance(f["coverage"], f["p90"])),
        "fold29": 0.5 * f["iou"] + 0.5 * e(ch),
        "iou": f["iou"],
        "chamfer": -ch,
        "coverage": -f["coverage"],
        "coverage+spill/2": -(f["coverage"] + 0.5 * f["spill"]),
        "iou+coverage": 0.5 * f["iou"] + 0.5 * e(f["coverage"]),
        "hausdorff": -f["max"],
        "hausdorff95": -f["p95"],
        "hausdorff90": -f["p90"],
        "chamfer+h95": -(ch + f["p95"]),
        "chamfer+h95/2": -(ch + 0.5 * f["p95"]),
        "chamfer+h90": -(ch + f["p90"]),
        "chamfer+h90/2": -(ch + 0.5 * f["p90"]),
        "chamfer+hmax": -(ch + f["max"]),
        "fold29+h95": 0.5 * f["iou"] + 0.25 * e(ch) + 0.25 * e(f["p95"], 0.1),
        "fold29+hmax": 0.5 * f["iou"] + 0.25 * e(ch) + 0.25 * e(f["max"], 0.1),
        "thirds": f["iou"] / 3 + e(ch) / 3 + e(f["max"], 0.1) / 3,
        "iou/4+chamfer": 0.25 * f["iou"] + 0.75 * e(ch),
        "coverage90": -f["coverage_p90"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("masks")
    ap.add_argument("--margin", type=float, default=0.5)
    args = ap.parse_args()
    tasks, sources = ["rope", "cloth", "toy"], ["true", "prior", "predicted"]
    agree, regret, names = {}, {}, None
    for line in open(args.masks):
        st = json.loads(line)
        w, h = st["width"], st["height"]
        goal = points(st["goal"], w, h)
        sims = [c["sim"] for c in st["candidates"]]
        for src in sources:
            ms = []
            for c in st["candidates"]:
                f = features(points(c[src], w, h), goal)
                ms.append(None if f is None else measures(f, min(w, h)))
            if names is None:
                some = next((m for m in ms if m), None)
                names = list(some) if some else None
            if names is None:
                continue
            val = lambda m, n: -1e18 if m is None else m[n]
            for n in names:
                sc = [val(m, n) for m in ms]
                key = (st["task"], src, n)
                top = tied_top(sc)
                regret.setdefault(key, []).append(
                    max(sims) - np.mean([sims[i] for i in top]))
                a = agree.setdefault(key, [0, 0])
                for i in range(len(sims)):
                    for j in range(i + 1, len(sims)):
                        if abs(sims[i] - sims[j]) > args.margin:
                            a[0] += pair_credit(sc[i], sc[j], sims[i] > sims[j])
                            a[1] += 1
    for src in sources:
        print(f"== {src} final frames: pair agreement % (rope cloth toy mean) | top-1 regret")
        for n in names or []:
            r = [100 * agree[(t, src, n)][0] / max(agree[(t, src, n)][1], 1)
                 if (t, src, n) in agree else float("nan") for t in tasks]
            g = [np.mean(regret.get((t, src, n), [np.nan])) for t in tasks]
            print(f"{n:<18}" + "".join(f"{x:>7.1f}" for x in r) + f"{np.nanmean(r):>7.1f}"
                  + " |" + "".join(f"{x:>6.2f}" for x in g))


if __name__ == "__main__":
    main()
