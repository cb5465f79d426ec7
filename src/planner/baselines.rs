//! Planners that are not the VLM, and what every result is compared with: a random keypoint
//! choice, and the physics-blind correspondence rule the zero-shot model is taught.

use crate::sim::rng::Rng;
use crate::vision::Keypoint;

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

/// The generic visual-correspondence skill, blind to physics: match every current keypoint
/// to a goal keypoint (greedily, closest pairs first, each goal keypoint used once), then
/// pick the current keypoint that is farthest from its match and place it there.
/// Deterministic: ties go to the lower keypoint numbers.
pub fn correspondence_choice(current: &[Keypoint], goal: &[Keypoint]) -> Option<KeypointChoice> {
    let d2 = |a: &Keypoint, b: &Keypoint| (a.u - b.u).powi(2) + (a.v - b.v).powi(2);
    let mut pairs: Vec<(f32, usize, usize)> = current
        .iter()
        .enumerate()
        .flat_map(|(i, a)| goal.iter().enumerate().map(move |(j, b)| (d2(a, b), i, j)))
        .collect();
    pairs.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let (mut used_c, mut used_g) = (vec![false; current.len()], vec![false; goal.len()]);
    let mut matches = Vec::new();
    for (d, i, j) in pairs {
        if !used_c[i] && !used_g[j] {
            used_c[i] = true;
            used_g[j] = true;
            matches.push((d, i, j));
        }
    }
    // Farthest match; on ties the lowest current keypoint.
    matches
        .into_iter()
        .fold(None::<(f32, usize, usize)>, |best, m| match best {
            Some(b) if b.0 > m.0 || (b.0 == m.0 && b.1 < m.1) => Some(b),
            _ => Some(m),
        })
        .map(|(_, i, j)| KeypointChoice {
            pick: current[i].id,
            place: goal[j].id,
        })
}
