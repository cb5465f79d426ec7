#!/usr/bin/env python3
"""ORPO reference numbers, computed the way TRL's ORPOTrainer.odds_ratio_loss does (plain
Python floats, f64), for tests/stage3.rs.

Input (stdin): JSON {"lambda": l, "chosen": [mean token log-probs], "rejected": [...]}.
Output (stdout): JSON {"loss", "nll", "log_sigmoid_ratio", "log_odds_ratio": [...]} where
  log_odds = (c - r) - (log1p(-exp(c)) - log1p(-exp(r)))   # TRL
  ratio    = logsigmoid(log_odds)
  loss     = mean(-c) - lambda * mean(ratio)                # NLL of chosen - beta * ratio
"""
import json
import math
import sys


def logsigmoid(z):
    return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def main():
    d = json.load(sys.stdin)
    lam, c, r = d["lambda"], d["chosen"], d["rejected"]
    odds = [(a - b) - (math.log1p(-math.exp(a)) - math.log1p(-math.exp(b))) for a, b in zip(c, r)]
    ratio = [logsigmoid(z) for z in odds]
    nll = -sum(c) / len(c)
    out = {
        "loss": nll - lam * sum(ratio) / len(ratio),
        "nll": nll,
        "log_sigmoid_ratio": sum(ratio) / len(ratio),
        "log_odds_ratio": odds,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
