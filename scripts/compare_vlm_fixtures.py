#!/usr/bin/env python3
"""Compare a fresh run of the VLM fixture generators with the committed fixtures.

    python scripts/compare_vlm_fixtures.py NEW tests/fixtures/vlm [--atol 5e-5]

NEW comes from `gen_vlm_fixtures.py NEW` then `check_peft_adapter.py make NEW` (what
`.ci/run` does). Every file must exist on both sides. Files other than safetensors, and
every tensor that is not a float, must be byte-identical: the tokenizer, the configs, the
seeded weights, the images, the preprocessed pixels, the position ids, the PEFT adapter.
Float tensors that torch computes with a forward pass (the logits) depend on the CPU's
summation order (thread count, SIMD width), so they must agree within --atol instead;
a regeneration in session 26 differed from the committed logits by at most 1.0e-5
(magnitude ~15). The largest difference per file is printed either way.

Uses only the standard library and safetensors' numpy reader (in the HF venv).
"""

import argparse
import os
import sys

import numpy as np
from safetensors.numpy import load_file


def files(root):
    out = set()
    for d, _, names in os.walk(root):
        for n in names:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("new")
    ap.add_argument("committed")
    ap.add_argument("--atol", type=float, default=5e-5)
    a = ap.parse_args()
    new, old = files(a.new), files(a.committed)
    failures = []
    for f in sorted(new ^ old):
        failures.append(f"{f}: only in {a.new if f in new else a.committed}")
    identical = 0
    for f in sorted(new & old):
        pa, pb = os.path.join(a.new, f), os.path.join(a.committed, f)
        with open(pa, "rb") as x, open(pb, "rb") as y:
            if x.read() == y.read():
                identical += 1
                continue
        if not f.endswith(".safetensors"):
            failures.append(f"{f}: bytes differ")
            continue
        ta, tb = load_file(pa), load_file(pb)
        if set(ta) != set(tb):
            failures.append(f"{f}: tensors {sorted(ta)} vs {sorted(tb)}")
            continue
        worst = 0.0
        for k in sorted(ta):
            x, y = ta[k], tb[k]
            if x.dtype != y.dtype or x.shape != y.shape:
                failures.append(f"{f}:{k}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
                continue
            if not np.issubdtype(x.dtype, np.floating):
                if not np.array_equal(x, y):
                    failures.append(f"{f}:{k}: {x.dtype} values differ")
                continue
            d = float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()) if x.size else 0.0
            worst = max(worst, d)
            if not d <= a.atol:
                failures.append(f"{f}:{k}: max |difference| {d:.3g} > {a.atol:.3g}")
        print(f"{f}: float tensors within {worst:.3g} (tolerance {a.atol:.3g})")
    print(f"{identical} of {len(new & old)} files byte-identical")
    if failures:
        print("\n".join(["FAILED:"] + failures), file=sys.stderr)
        sys.exit(1)
    print("OK: the VLM fixtures regenerate from transformers and PEFT")


if __name__ == "__main__":
    main()
