"""Where a prior's ranking goes wrong, by where each candidate picks.

Reads a `dreamplan wm-eval --dump-masks` file (session 37 on: it holds the current frame's
mask and each candidate's gripper path) and, for one task, splits the clearly different
pairs by whether each candidate picks the object's thick core (a pixel whose 3x3
neighbourhood is all object, within 2 px of the pick: a toy's torso) or a thin part (a
limb). Per kind it prints how often the prior's final frame and the true final frame
order the pair as the simulator does, with the session-30 measure; and the correlation of
the prior's measure with the true frame's over all candidates.

    python3 scripts/wm_pairs_by_pick.py masks.jsonl toy

NumPy only.
"""

import argparse
import json

import numpy as np

from measure_screen import features, measures, points


def value(bits, goal, w, h):
    f = features(points(bits, w, h), goal)
    return None if f is None else measures(f, min(w, h))["fold"]


def core(mask):
    """Object pixels whose 3x3 neighbourhood is all object."""
    p = np.pad(mask, 1)
    h, w = mask.shape
    out = np.ones_like(mask)
    for dy in range(3):
        for dx in range(3):
            out &= p[dy:dy + h, dx:dx + w]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("masks")
    ap.add_argument("task")
    ap.add_argument("--margin", type=float, default=0.5)
    args = ap.parse_args()
    kinds, pv_all, tv_all = {}, [], []
    for line in open(args.masks):
        st = json.loads(line)
        if st["task"] != args.task:
            continue
        if "context" not in st:
            raise SystemExit("this dump has no current-frame mask: made before session 37")
        w, h = st["width"], st["height"]
        goal = points(st["goal"], w, h)
        ctx = (np.frombuffer(st["context"].encode(), np.uint8) == ord("1")).reshape(h, w)
        ys, xs = np.nonzero(core(ctx))
        rows = []
        for c in st["candidates"]:
            px, py = c["grip"]["pick"]
            near = len(xs) > 0 and np.min(np.hypot(xs + 0.5 - px, ys + 0.5 - py)) <= 2.0
            pv, tv = value(c["prior"], goal, w, h), value(c["true"], goal, w, h)
            rows.append(("core" if near else "thin", c["sim"], pv, tv))
            if pv is not None and tv is not None:
                pv_all.append(pv)
                tv_all.append(tv)
        for i in range(len(rows)):
            for j in range(i + 1, len(rows)):
                (ki, si, pi, ti), (kj, sj, pj, tj) = rows[i], rows[j]
                if abs(si - sj) <= args.margin:
                    continue
                key = "/".join(sorted([ki, kj]))
                k = kinds.setdefault(key, [0, 0, 0])
                better = si > sj
                k[0] += ((pi if pi is not None else -1) > (pj if pj is not None else -1)) == better
                k[1] += ((ti if ti is not None else -1) > (tj if tj is not None else -1)) == better
                k[2] += 1
    print(f"{args.task}: measure of the prior's final frame vs the true one's, correlation "
          f"{np.corrcoef(pv_all, tv_all)[0, 1]:.2f} over {len(pv_all)} candidates")
    print("picks       pairs  prior agrees  true frames agree")
    for key, (p, t, n) in sorted(kinds.items()):
        print(f"{key:<10} {n:>6}  {100 * p / n:>11.1f}%  {100 * t / n:>16.1f}%")


if __name__ == "__main__":
    main()
