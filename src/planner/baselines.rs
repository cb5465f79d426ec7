//! Planners that are not the VLM, and what every result is compared with: a random keypoint
//! choice, and the keypoint rules the zero-shot model can be taught ([`Rule`]): the coverage
//! rule (the default), the assignment rule, and the other one-step lookups of the prompt's
//! relations ([`Rule::SINGLE_LOOKUP`]).

use crate::sim::rng::Rng;
use crate::vision::Keypoint;

use super::prompt::{relations, Relation};

use super::grammar::{Lookup, Side, Via};
use super::KeypointChoice;

/// A uniformly random keypoint on each image.
pub fn random_choice(
    current: &[Keypoint],
    goal: &[Keypoint],
    rng: &mut Rng,
) -> Option<KeypointChoice> {
    if current.is_empty() || goal.is_empty() {
        return None;
    }
    let pick = (rng.unit() * current.len() as f64).floor() as usize;
    let place = (rng.unit() * goal.len() as f64).floor() as usize;
    Some(KeypointChoice {
        pick: current[pick.min(current.len() - 1)].id,
        place: goal[place.min(goal.len() - 1)].id,
    })
}

/// A physics-blind keypoint rule the zero-shot model is taught ([`Rule::choice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// [`coverage_choice`]: drag the nearest part of the object into the part of the goal
    /// it covers least.
    Coverage,
    /// [`correspondence_choice`]: one-to-one least-distance matching, move the keypoint
    /// farthest from its match.
    Assignment,
    /// [`fold_choice`]: pick the current keypoint farthest from the goal shape (current
    /// rank 1), place it at the goal keypoint farthest from it (its `far`). On cloth it is
    /// the keypoint oracle's action in 50 of 50 training scenes (docs/stage3.md), so as a
    /// planner it is a ceiling found by looking at outcomes; as a member of the
    /// single-lookup family ([`Rule::SINGLE_LOOKUP`]) it is one generic rule among five.
    Fold,
    /// Pick current rank 1, place it at the goal keypoint nearest to it (its `near`).
    Reach,
    /// Pick current rank 1, place it at goal rank 1 (the goal keypoint farthest from the
    /// current shape).
    Ranks,
    /// Place at goal rank 1, pick the current keypoint farthest from it (coverage's
    /// place, the other end of the object).
    Stretch,
}

impl Rule {
    /// Every rule that reads one relation the prompt writes out (`near`, `far`, `rank`,
    /// docs/planner.md) from a rank-1 anchor: the place is goal rank 1 and the pick its
    /// `near` (coverage) or `far` (stretch), or the pick is current rank 1 and the place its
    /// `near` (reach), its `far` (fold) or goal rank 1 (ranks). An enumeration of the
    /// prompt's one-step lookups, not a choice by outcome: what a zero-shot model taught
    /// all of them can propose, and preferences can choose among per task.
    pub const SINGLE_LOOKUP: [Rule; 5] = [
        Rule::Coverage,
        Rule::Stretch,
        Rule::Reach,
        Rule::Fold,
        Rule::Ranks,
    ];

    /// The rule's answer ([`farthest_match`] of [`Rule::matches`]); `None` when either side
    /// has no keypoints.
    pub fn choice(self, current: &[Keypoint], goal: &[Keypoint]) -> Option<KeypointChoice> {
        farthest_match(current, goal, &self.matches(current, goal))
    }

    /// The rule as one lookup in the prompt's relations ([`relations`], ties as the model
    /// is shown them): the reasoning line of [`crate::planner::grammar::AnswerForm::Reasoned`]
    /// answers. Coverage reads goal rank 1's `near` (on these relations; on pixel
    /// positions [`Rule::choice`] can break a tie differently), stretch its `far`, reach and
    /// fold current rank 1's `near` and `far`, ranks current rank 1 to goal rank 1. `None`
    /// for assignment (no one lookup) or when either side has no keypoints.
    pub fn lookup(self, current: &[Keypoint], goal: &[Keypoint]) -> Option<Lookup> {
        if current.is_empty() || goal.is_empty() {
            return None;
        }
        let (rc, rg) = (relations(current, goal), relations(goal, current));
        let rank1 = |kps: &[Keypoint], rel: &[Relation]| {
            rel.iter()
                .position(|r| r.rank == 1)
                .map(|i| (kps[i].id, rel[i]))
        };
        let (side, via) = match self {
            Rule::Coverage => (Side::Goal, Via::Near),
            Rule::Stretch => (Side::Goal, Via::Far),
            Rule::Reach => (Side::Current, Via::Near),
            Rule::Fold => (Side::Current, Via::Far),
            Rule::Ranks => (Side::Current, Via::Rank),
            Rule::Assignment => return None,
        };
        let (anchor, rel) = match side {
            Side::Current => rank1(current, &rc)?,
            Side::Goal => rank1(goal, &rg)?,
        };
        let value = match via {
            Via::Near => rel.near,
            Via::Far => rel.far,
            Via::Rank => match side {
                Side::Current => rank1(goal, &rg)?.0,
                Side::Goal => rank1(current, &rc)?.0,
            },
        };
        Some(Lookup {
            side,
            anchor,
            via,
            value,
        })
    }

    /// The rule's matching as `(current index, goal index)` pairs: for coverage, every goal
    /// keypoint with its nearest current keypoint ([`nearest_matches`]); for assignment,
    /// [`correspondence_matches`]; for the anchored single-lookup rules, their one pair.
    pub fn matches(self, current: &[Keypoint], goal: &[Keypoint]) -> Vec<(usize, usize)> {
        match self {
            Rule::Coverage => nearest_matches(current, goal),
            Rule::Assignment => correspondence_matches(current, goal),
            Rule::Fold | Rule::Reach | Rule::Ranks | Rule::Stretch => {
                anchored_matches(self, current, goal)
            }
        }
    }
}

/// The coverage rule, blind to physics: place at the goal keypoint farthest from every
/// current keypoint (the part of the goal shape the object covers least), and pick the
/// current keypoint nearest to that goal keypoint (the part of the object closest to it).
/// Each goal keypoint looks for its nearest current keypoint ([`nearest_matches`]): a
/// many-to-one visual correspondence. Deterministic: ties go to the lower keypoint numbers.
pub fn coverage_choice(current: &[Keypoint], goal: &[Keypoint]) -> Option<KeypointChoice> {
    Rule::Coverage.choice(current, goal)
}

/// What both rules do with their matching: pick the current keypoint of the pair whose
/// points are farthest apart and place it at the goal keypoint of that pair; ties go to the
/// first such pair in `matches`. `None` for no pairs.
pub fn farthest_match(
    current: &[Keypoint],
    goal: &[Keypoint],
    matches: &[(usize, usize)],
) -> Option<KeypointChoice> {
    matches
        .iter()
        .map(|&(i, j)| (dist(&current[i], &goal[j]), i, j))
        .fold(None::<(f32, usize, usize)>, |best, m| match best {
            Some(b) if b.0 >= m.0 => Some(b),
            _ => Some(m),
        })
        .map(|(_, i, j)| KeypointChoice {
            pick: current[i].id,
            place: goal[j].id,
        })
}

/// Every goal keypoint with its nearest current keypoint, as `(current index, goal index)`
/// pairs in goal order (ties: the lower index). Empty when either side is.
pub fn nearest_matches(current: &[Keypoint], goal: &[Keypoint]) -> Vec<(usize, usize)> {
    if current.is_empty() {
        return Vec::new();
    }
    goal.iter()
        .enumerate()
        .map(|(j, g)| {
            let i = (0..current.len())
                .min_by(|&a, &b| dist(&current[a], g).total_cmp(&dist(&current[b], g)))
                .expect("current is not empty");
            (i, j)
        })
        .collect()
}

/// The generic visual-correspondence skill, blind to physics: match current keypoints to
/// goal keypoints one to one with the least total distance (exact assignment up to 8
/// points per image, greedy closest-first beyond), then pick the current keypoint that is
/// farthest from its match and place it there. Deterministic: ties go to the lower
/// keypoint numbers.
pub fn correspondence_choice(current: &[Keypoint], goal: &[Keypoint]) -> Option<KeypointChoice> {
    Rule::Assignment.choice(current, goal)
}

/// The rule's one-to-one matching of current to goal keypoints, as `(current index, goal
/// index)` pairs (`min(n, m)` of them) in current-keypoint order: least total image
/// distance, exact up to 8 points per image, greedy closest-first beyond. Empty when either
/// side is.
pub fn correspondence_matches(current: &[Keypoint], goal: &[Keypoint]) -> Vec<(usize, usize)> {
    if current.is_empty() || goal.is_empty() {
        return Vec::new();
    }
    let mut pairs = if current.len() <= 8 && goal.len() <= 8 {
        best_assignment(current.len(), goal.len(), &|i, j| {
            dist(&current[i], &goal[j])
        })
    } else {
        greedy_assignment(current, goal, &dist)
    };
    // In current order, so that `farthest_match` breaks ties by the lower current number.
    pairs.sort_unstable();
    pairs
}

/// The cloth fold read off the simulator's best actions: pick the current keypoint whose
/// nearest goal keypoint is farthest away (the corner the goal shape covers least; rank 1 in
/// the prompt's numbering), place it at the goal keypoint farthest from it (its `far`).
/// Deterministic: ties go to the lower index. `None` when either side has no keypoints.
pub fn fold_choice(current: &[Keypoint], goal: &[Keypoint]) -> Option<KeypointChoice> {
    Rule::Fold.choice(current, goal)
}

/// The one pair `(current index, goal index)` of an anchored single-lookup rule
/// ([`Rule::SINGLE_LOOKUP`] but coverage), read from the prompt's own relations
/// ([`relations`]: the same `near`, `far` and `rank`, ties included, as the model is
/// shown); empty when either side is, or for a rule that is not anchored.
fn anchored_matches(rule: Rule, current: &[Keypoint], goal: &[Keypoint]) -> Vec<(usize, usize)> {
    let (rc, rg) = (relations(current, goal), relations(goal, current));
    let rank1 = |rel: &[Relation]| rel.iter().position(|r| r.rank == 1);
    let index = |kps: &[Keypoint], id: u32| kps.iter().position(|k| k.id == id);
    let pair = || -> Option<(usize, usize)> {
        Some(match rule {
            Rule::Fold => {
                let i = rank1(&rc)?;
                (i, index(goal, rc[i].far)?)
            }
            Rule::Reach => {
                let i = rank1(&rc)?;
                (i, index(goal, rc[i].near)?)
            }
            Rule::Ranks => (rank1(&rc)?, rank1(&rg)?),
            Rule::Stretch => {
                let j = rank1(&rg)?;
                (index(current, rg[j].far)?, j)
            }
            Rule::Coverage | Rule::Assignment => return None,
        })
    };
    pair().into_iter().collect()
}

fn dist(a: &Keypoint, b: &Keypoint) -> f32 {
    ((a.u - b.u).powi(2) + (a.v - b.v).powi(2)).sqrt()
}

/// The least-total-cost one-to-one matching of `min(n, m)` pairs, by depth-first search
/// with pruning (n, m ≤ 8: at most 8! leaves). Ties keep the first found, which prefers
/// lower indices.
fn best_assignment(n: usize, m: usize, cost: &dyn Fn(usize, usize) -> f32) -> Vec<(usize, usize)> {
    // Match the smaller side completely.
    let swap = n > m;
    let (rows, cols) = if swap { (m, n) } else { (n, m) };
    let c = |r: usize, k: usize| if swap { cost(k, r) } else { cost(r, k) };
    struct Search<'a> {
        rows: usize,
        cols: usize,
        cost: &'a dyn Fn(usize, usize) -> f32,
        used: Vec<bool>,
        path: Vec<usize>,
        best: (f32, Vec<usize>),
    }
    impl Search<'_> {
        fn dfs(&mut self, r: usize, acc: f32) {
            if acc >= self.best.0 {
                return;
            }
            if r == self.rows {
                self.best = (acc, self.path.clone());
                return;
            }
            for k in 0..self.cols {
                if !self.used[k] {
                    self.used[k] = true;
                    self.path.push(k);
                    let step = (self.cost)(r, k);
                    self.dfs(r + 1, acc + step);
                    self.path.pop();
                    self.used[k] = false;
                }
            }
        }
    }
    let mut search = Search {
        rows,
        cols,
        cost: &c,
        used: vec![false; cols],
        path: Vec::with_capacity(rows),
        best: (f32::INFINITY, Vec::new()),
    };
    search.dfs(0, 0.0);
    let best = search.best;
    best.1
        .into_iter()
        .enumerate()
        .map(|(r, k)| if swap { (k, r) } else { (r, k) })
        .collect()
}

fn greedy_assignment(
    current: &[Keypoint],
    goal: &[Keypoint],
    dist: &dyn Fn(&Keypoint, &Keypoint) -> f32,
) -> Vec<(usize, usize)> {
    let mut pairs: Vec<(f32, usize, usize)> = current
        .iter()
        .enumerate()
        .flat_map(|(i, a)| {
            goal.iter()
                .enumerate()
                .map(move |(j, b)| (dist(a, b), i, j))
        })
        .collect();
    pairs.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let (mut used_c, mut used_g) = (vec![false; current.len()], vec![false; goal.len()]);
    let mut out = Vec::new();
    for (_, i, j) in pairs {
        if !used_c[i] && !used_g[j] {
            used_c[i] = true;
            used_g[j] = true;
            out.push((i, j));
        }
    }
    out
}
