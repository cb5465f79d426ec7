#!/usr/bin/env python3
"""How well `dreamplan check-calibration` tells and mends a hand-eye pose that is off, on a
bag of the built-in world (where the true pose is known): docs/ros2.md, "Check the
hand-eye calibration on a bag".

    dreamplan collect --task rope --episodes 3 --size 512 --planner random --seed 0 --out bag512
    python3 scripts/calibration_probe.py bag512 --frames 16      (NumPy; DREAMPLAN=binary)

For five poses that are off (the camera moved 6 cm; turned 3° about each of its axes; a
mix of both) it runs the check and prints, per pose: the check's pixel offset, the table
tilt it measured, its verdict; and for the given pose, the first-order position
correction and the refined pose, the "table error": the median, over a 7 x 7 grid of the
workspace's table (x 0.35-0.65 m, y -0.15-0.15 m), of how far a pose puts the point the
true camera sees there (what the executor would aim at, from the pixel and the depth).
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

BIN = os.environ.get("DREAMPLAN", "dreamplan")


def qmul(a, b):
    x1, y1, z1, w1 = a
    x2, y2, z2, w2 = b
    return [w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2, w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2, w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2]


def turn(axis, deg):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    h = math.radians(deg) / 2
    return list(axis * math.sin(h)) + [math.cos(h)]


def rot(q):
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def check(bag, out, pose, extra):
    shutil.rmtree(out, ignore_errors=True)
    args = [BIN, "check-calibration", "--bag", bag, "--out", out] + extra
    if pose is not None:
        args += ["--camera-pose", ",".join(map(str, pose))]
    t = time.time()
    o = subprocess.run(args, capture_output=True, text=True)
    if o.returncode == 2:
        sys.exit(o.stderr)
    with open(os.path.join(out, "report.json")) as f:
        return json.load(f), o.returncode, time.time() - t


def main():
    bag, extra = sys.argv[1], sys.argv[2:]
    work = tempfile.mkdtemp()
    r, _, _ = check(bag, os.path.join(work, "truth"), None, extra)
    t0 = np.array(r["base_from_camera"]["xyz"])
    q0 = r["base_from_camera"]["xyzw"]
    r0 = rot(q0)
    grid = np.array([[x, y, 0.0] for x in np.linspace(0.35, 0.65, 7)
                     for y in np.linspace(-0.15, 0.15, 7)])

    def table_error_mm(t, q):
        seen = (r0.T @ (grid - t0).T).T
        return 1000 * np.median(np.linalg.norm((rot(q) @ seen.T).T + t - grid, axis=1))

    print(f"true pose: {r['median_offset_px']:.1f} px, table {r['table'].get('tilt_deg', float('nan')):.2f}°, "
          f"exit {'0' if r['agrees'] else '1'}")
    print("| pose off by | px | table tilt | verdict | given | first-order | refined | refined pose error | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    cases = [("6 cm along y", [0, 0.06, 0], [1, 0, 0], 0),
             ("3° about the camera's x", [0, 0, 0], [1, 0, 0], 3),
             ("3° about its y", [0, 0, 0], [0, 1, 0], 3),
             ("3° about its optical axis", [0, 0, 0], [0, 0, 1], 3),
             ("3° and (3, −2, 2) cm", [0.03, -0.02, 0.02], [1, 2, 0.5], 3)]
    for name, dt, axis, deg in cases:
        q = qmul(q0, turn(axis, deg))
        t = t0 + np.array(dt)
        r, code, secs = check(bag, os.path.join(work, "off"), list(t) + q, extra)
        first = r.get("suggested_base_from_camera_xyz")
        first = f"{table_error_mm(np.array(first), q):.1f} mm" if first else "-"
        ref = (r.get("refined") or {}).get("base_from_camera")
        if ref:
            rq, rt = ref["xyzw"], np.array(ref["xyz"])
            ang = math.degrees(2 * math.acos(min(1.0, abs(float(np.dot(rq, q0))))))
            refined = f"{table_error_mm(rt, rq):.1f} mm"
            pose_err = f"{1000 * np.linalg.norm(rt - t0):.1f} mm, {ang:.2f}°"
        else:
            refined, pose_err = "-", "-"
        tilt = r["table"].get("tilt_deg")
        tilt = f"{tilt:.2f}°" if tilt is not None else "-"
        print(f"| {name} | {r['median_offset_px']:.1f} | {tilt} | exit {code} | "
              f"{table_error_mm(t, q):.1f} mm | {first} | {refined} | {pose_err} | {secs:.1f} |")
        sys.stdout.flush()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
