#!/usr/bin/env python3
"""Session 40's screens of toy's ranking on `wm-eval --dump-masks` files (NumPy + SciPy).

Each screen reads the dumped masks (per state: goal and context masks; per candidate: its
simulator score and the true and prior final masks), ranks the candidates of a state by a
score, and prints the pair agreement with the simulator over pairs whose simulator scores
differ by more than the margin (wm-eval's default 0.5 half-thresholds):

- `measures FILE...`: the shipped measure (`src/verifier/measure.rs`: coverage plus half
  the 90th-percentile reach) against its reach percentile and weight, and against
  part-based variants built for the toy's worst-part score: the distance between the
  torsos (masks eroded by 2 px, which removes the 3–4 px limbs), the distance between
  extremities (the first 6 farthest-point samples, as the planner's keypoints are drawn),
  each alone, added to the measure or as its maximum;
- `ensemble FILE[:SOURCE]...`: the measure's value averaged over several dumps of the same
  states and candidates (prior variants, or `FILE:predicted` for a dump's network frames
  beside `FILE` for its prior's), every combination of them;
- `pooled FILE...`: the prior's agreement over every state of the files, with a 95%
  interval (bootstrap over states, 2,000 resamples);
- `jitter FILE`: the measure's value averaged over the prior's frame shifted by r px in 8
  directions (the whole object, or only the pixels that moved), a guess at the
  simulator's scatter;
- `flyers FILE...`: candidates whose true object ends more than 10 px from where the prior
  put it (or loses half its pixels: it left the crop), and the agreement on the pairs
  with and without one;
- `judge FILE...` (session 41): a learned judge of the prior's frame against the goal, a
  linear score over 13 mask features (coverage and reach percentiles both ways, IoU, log
  area ratio, centroid and torso distances, the shipped measure's d) fitted by pairwise
  logistic regression on the other files' pairs and scored on each file's (leave one file
  out), and the shipped measure plus b times the log area ratio.

    python3 scripts/toy_screens.py measures s39_sp3.jsonl held38.jsonl
"""
import argparse
import itertools
import json
import sys

import numpy as np
from scipy import ndimage

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from measure_screen import fold_distance, nearest, points  # noqa: E402
from ranking import pair_credit  # noqa: E402


def distance(op, gp):
    """The shipped measure's distance d (pixels); an empty outcome is far."""
    if len(op) == 0:
        return 1e3
    return variant_distance(op, gp, 90, 0.5)


def variant_distance(op, gp, percentile, weight):
    """Coverage plus `weight` times the reach at `percentile` (the shipped measure: 90,
    0.5, through `measure_screen.fold_distance`)."""
    tg, to = nearest(op, gp), nearest(gp, op)
    reach = max(np.percentile(tg, percentile), np.percentile(to, percentile))
    if (percentile, weight) == (90, 0.5):
        return fold_distance(to.mean(), reach)
    return (to.mean() + weight * reach) / (1 + weight)


def value(d, side):
    return np.exp(-np.asarray(d) / (0.05 * side))


def states(path, task="toy"):
    for line in open(path):
        st = json.loads(line)
        if st["task"] == task:
            yield st


def agreement(scored):
    """scored: per state, a list of (simulator score, measure score, higher is better)."""
    a = b = 0
    for cands in scored:
        for (si, mi), (sj, mj) in itertools.combinations(cands, 2):
            if abs(si - sj) > ARGS.margin:
                a += pair_credit(mi, mj, si > sj)
                b += 1
    return 100.0 * a / max(b, 1), b


def farthest(pts, k):
    d = ((pts - pts.mean(0)) ** 2).sum(1)
    out = []
    for _ in range(k):
        i = int(np.argmax(d))
        out.append(pts[i])
        d = np.minimum(d, ((pts - pts[i]) ** 2).sum(1))
    return np.array(out)


def parts(bits, w, h):
    a, pts = points(bits, w, h)
    if len(pts) < 8:
        return None
    m = a.reshape(h, w)
    torso = ndimage.binary_erosion(m, iterations=2)
    if not torso.any():
        torso = m
    ty, tx = np.nonzero(torso)
    return dict(pts=pts, torso=np.stack([tx, ty], 1).astype(float), tips=farthest(pts, 6))


def part_terms(o, g):
    tips = nearest(g["tips"], o["tips"])
    back = nearest(o["tips"], g["tips"])
    return {
        "torso centroid": np.linalg.norm(o["torso"].mean(0) - g["torso"].mean(0)),
        "torso coverage": nearest(g["torso"], o["torso"]).mean(),
        "tips, worst": max(tips.max(), back.max()),
        "tips, mean": tips.mean(),
        "goal tips to outcome": nearest(g["tips"], o["pts"]).max(),
    }


def cmd_measures(paths):
    for path in paths:
        rows = {}
        for st in states(path):
            w, h = st["width"], st["height"]
            gp = points(st["goal"], w, h)[1]
            g = parts(st["goal"], w, h)
            per = {}
            for c in st["candidates"]:
                for src in ("true", "prior"):
                    o = parts(c[src], w, h)
                    d = distance(o["pts"] if o else np.zeros((0, 2)), gp)
                    terms = part_terms(o, g) if o else {}
                    cands = {"measure": d}
                    for pct, wt in ((80, 0.5), (95, 0.5), (100, 0.5), (90, 0.0), (90, 1.0),
                                    (90, 2.0)):
                        cands[f"reach p{pct}, weight {wt}"] = (
                            variant_distance(o["pts"], gp, pct, wt) if o else 1e3)
                    for name, t in terms.items():
                        cands[name] = t
                        cands[f"measure + {name} / 4"] = d + 0.25 * t
                        cands[f"max(measure, {name} / 4)"] = max(d, 0.25 * t)
                    for name, v in cands.items():
                        per.setdefault((src, name), []).append((c["sim"], -v if o else -1e9))
            for k, v in per.items():
                rows.setdefault(k, []).append(v)
        print(f"== {path}: agreement %, true frames / prior")
        for name in sorted({n for _, n in rows}, key=lambda n: (n != "measure", n)):
            t, p = agreement(rows[("true", name)]), agreement(rows[("prior", name)])
            print(f"{name:<42} {t[0]:6.1f} {p[0]:6.1f}   ({p[1]} pairs)")


def cmd_ensemble(paths):
    per_file = []
    for spec in paths:
        path, _, source = spec.partition(":")
        d, sims = [], []
        for st in states(path):
            w, h = st["width"], st["height"]
            gp = points(st["goal"], w, h)[1]
            d.append([distance(points(c[source or "prior"], w, h)[1], gp)
                      for c in st["candidates"]])
            sims.append([c["sim"] for c in st["candidates"]])
        per_file.append((np.array(d), np.array(sims), min(w, h)))
    sims = per_file[0][1]
    if not all(np.allclose(s, sims) for _, s, _ in per_file):
        sys.exit("the dumps hold different candidates: run them on the same states and planner")
    side = per_file[0][2]
    for k in range(1, len(paths) + 1):
        for combo in itertools.combinations(range(len(paths)), k):
            v = np.mean([value(per_file[i][0], side) for i in combo], 0)
            a, n = agreement([list(zip(s, m)) for s, m in zip(sims, v)])
            print(f"{a:6.1f}  " + " + ".join(paths[i] for i in combo))


def cmd_jitter(path):
    rows = {}
    for st in states(path):
        w, h = st["width"], st["height"]
        gp = points(st["goal"], w, h)[1]
        before = set(map(tuple, points(st["context"], w, h)[1].astype(int)))
        per = {}
        for c in st["candidates"]:
            pp = points(c["prior"], w, h)[1]
            moved = np.array([tuple(p) not in before for p in pp.astype(int)], bool)
            for r in (0, 1, 2, 3, 4):
                shifts = [(0.0, 0.0)] if r == 0 else [
                    (r * np.cos(a), r * np.sin(a)) for a in np.arange(8) * np.pi / 4]
                for mode in ("object", "moved pixels"):
                    vals = []
                    for dx, dy in shifts:
                        q = pp.copy()
                        if mode == "object":
                            q += (dx, dy)
                        else:
                            q[moved] += (dx, dy)
                        vals.append(value(distance(q, gp), min(w, h)))
                    per.setdefault((r, mode), []).append((c["sim"], float(np.mean(vals))))
        for k, v in per.items():
            rows.setdefault(k, []).append(v)
    for (r, mode), v in sorted(rows.items()):
        print(f"shift {r} px, {mode:<13} {agreement(v)[0]:6.1f}")


def cmd_pooled(paths):
    per_state = []
    for path in paths:
        for st in states(path):
            w, h = st["width"], st["height"]
            gp = points(st["goal"], w, h)[1]
            cands = [(c["sim"], -distance(points(c["prior"], w, h)[1], gp))
                     for c in st["candidates"]]
            a, n = agreement([cands])
            per_state.append((a * n / 100.0, n))
    per_state = np.array(per_state)
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(2000):
        i = rng.integers(0, len(per_state), len(per_state))
        boot.append(per_state[i, 0].sum() / per_state[i, 1].sum())
    lo, hi = 100 * np.percentile(boot, [2.5, 97.5])
    print(f"{len(per_state)} states, {int(per_state[:, 1].sum())} pairs: "
          f"{100 * per_state[:, 0].sum() / per_state[:, 1].sum():.1f}% ({lo:.1f}–{hi:.1f})")


def cmd_flyers(paths):
    for path in paths:
        flyers, with_f, without = [], [], []
        for st in states(path):
            w, h = st["width"], st["height"]
            gp = points(st["goal"], w, h)[1]
            cands = []
            for c in st["candidates"]:
                tp, pp = points(c["true"], w, h)[1], points(c["prior"], w, h)[1]
                gap = np.linalg.norm(tp.mean(0) - pp.mean(0)) if len(tp) and len(pp) else 1e3
                fly = gap > 10 or len(tp) < 0.5 * len(pp)
                if fly:
                    flyers.append(st["seed"])
                cands.append((c["sim"], -distance(pp, gp), fly))
            for a, b in itertools.combinations(cands, 2):
                (with_f if a[2] or b[2] else without).append([(a[0], a[1]), (b[0], b[1])])
        n = sum(1 for _ in states(path)) * 8
        print(f"{path}: {len(flyers)} of {n} candidates fly; agreement without them "
              f"{agreement(without)[0]:.1f}% ({agreement(without)[1]} pairs), on pairs with "
              f"one {agreement(with_f)[0]:.1f}% ({agreement(with_f)[1]} pairs)")


JUDGE_FEATURES = ["coverage", "spill", "to goal p50", "to goal p90", "to goal max",
                  "to outcome p50", "to outcome p90", "to outcome max", "iou",
                  "log area ratio", "centroid distance", "torso distance", "measure d"]


def judge_features(oa, op, ga, gp, w, h):
    """The features of one outcome mask against the goal (None for an empty outcome)."""
    if len(op) == 0:
        return None
    to, tg = nearest(gp, op), nearest(op, gp)
    inter = (oa & ga).sum()

    def centre(m):
        ys, xs = np.nonzero(m)
        return np.array([xs.mean(), ys.mean()]) if len(xs) else None

    co, cg = (centre(ndimage.binary_erosion(m.reshape(h, w), iterations=2)) for m in (oa, ga))
    torso = np.linalg.norm(co - cg) if co is not None and cg is not None else 20.0
    reach = max(np.percentile(tg, 90), np.percentile(to, 90))
    return np.array([
        to.mean(), tg.mean(), np.percentile(to, 50), np.percentile(to, 90), to.max(),
        np.percentile(tg, 50), np.percentile(tg, 90), tg.max(),
        inter / (oa.sum() + ga.sum() - inter), np.log(oa.sum() / ga.sum()),
        np.linalg.norm(op.mean(0) - gp.mean(0)), torso, fold_distance(to.mean(), reach)])


def judge_agreement(per_state, score):
    """Pair agreement (%) of `score(features)` (higher better; an empty outcome lowest)."""
    scored = [[(sim, -1e9 if f is None else score(f)) for sim, f in rows] for rows in per_state]
    return agreement(scored)[0]


def cmd_judge(paths):
    from scipy.optimize import minimize
    data = {}
    for path in paths:
        rows = []
        for st in states(path):
            w, h = st["width"], st["height"]
            ga, gp = points(st["goal"], w, h)
            rows.append([(c["sim"], judge_features(*points(c["prior"], w, h), ga, gp, w, h))
                         for c in st["candidates"]])
        data[path] = rows

    def pairs(per_state):
        x, y = [], []
        for rows in per_state:
            for (sa, fa), (sb, fb) in itertools.combinations(rows, 2):
                if abs(sa - sb) > ARGS.margin and fa is not None and fb is not None:
                    x.append(fa - fb)
                    y.append(1.0 if sa > sb else -1.0)
        return np.array(x), np.array(y)

    def fit(x, y, lam):
        sd = x.std(0) + 1e-9
        z = x / sd
        loss = lambda v: np.logaddexp(0, -y * (z @ v)).mean() + lam * v @ v
        return minimize(loss, np.zeros(z.shape[1]), method="L-BFGS-B").x / sd

    shipped = [judge_agreement(data[p], lambda f: -f[-1]) for p in paths]
    print("shipped measure          " + " ".join(f"{a:5.1f}" for a in shipped)
          + f"  mean {np.mean(shipped):.2f}")
    for lam in (1e-3, 1e-2, 3e-2):
        res = []
        for held in paths:
            x, y = zip(*(pairs(data[p]) for p in paths if p != held))
            v = fit(np.concatenate(x), np.concatenate(y), lam)
            res.append(judge_agreement(data[held], lambda f: f @ v))
        print(f"judge, L2 {lam:<5g} (LOO)    " + " ".join(f"{a:5.1f}" for a in res)
              + f"  mean {np.mean(res):.2f}")
    for b in (0.5, 1, 2, 3, 5):
        res = [judge_agreement(data[p], lambda f: -f[-1] + b * f[9]) for p in paths]
        print(f"measure + {b:<3g} log area     " + " ".join(f"{a:5.1f}" for a in res)
              + f"  mean {np.mean(res):.2f}")


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("screen", choices=["measures", "ensemble", "jitter", "flyers", "pooled", "judge"])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--margin", type=float, default=0.5)
    ARGS = ap.parse_args()
    if ARGS.screen == "measures":
        cmd_measures(ARGS.files)
    elif ARGS.screen == "ensemble":
        cmd_ensemble(ARGS.files)
    elif ARGS.screen == "pooled":
        cmd_pooled(ARGS.files)
    elif ARGS.screen == "jitter":
        cmd_jitter(ARGS.files[0])
    elif ARGS.screen == "judge":
        cmd_judge(ARGS.files)
    else:
        cmd_flyers(ARGS.files)


if __name__ == "__main__":
    main()
