"""How the screening scripts count a ranking against the simulator's: the rule `dreamplan
wm-eval` uses (`pair_credit` and `top1` in src/bin/dreamplan/world_model.rs), standard
library only. Before session 44 the scripts credited a tied pair only when the later
candidate was the better one, and took the first of tied best candidates.
"""


def pair_credit(a, b, truth_order):
    """How far scores a and b order a pair as the truth does (truth_order: the first is
    truly better): 1, 0, or 1/2 when they tie. wm-eval's rule since session 43; before it
    these scripts credited a tie only when the later candidate was the better one."""
    if a == b:
        return 0.5
    return 1.0 if (a > b) == truth_order else 0.0


def tied_top(scores):
    """Indices of the candidates tied at the highest score (a pick among them at random)."""
    top = max(scores)
    return [i for i, s in enumerate(scores) if s == top]


if __name__ == "__main__":
    # The rule's cases (CI runs this): a tie is half right whichever candidate comes first.
    assert pair_credit(0.3, 0.3, True) == pair_credit(0.3, 0.3, False) == 0.5
    assert pair_credit(0.4, 0.3, True) == 1.0 and pair_credit(0.4, 0.3, False) == 0.0
    assert pair_credit(0.2, 0.3, False) == 1.0
    assert tied_top([0.1, 0.5, 0.5]) == [1, 2] and tied_top([2.0]) == [0]
    print("ranking: OK")
