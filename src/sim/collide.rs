//! Broad phase for particle–particle contacts: a uniform grid built by sorting, so the pair
//! list (and hence the solve order) depends only on positions, never on hashing order.
//!
//! Written here rather than taken from a crate: the solver needs the pairs in one fixed
//! order that depends on nothing but the positions (the world is bitwise deterministic),
//! with constrained neighbours left out, and it runs once per step on a few hundred
//! particles, where building a general-purpose structure would cost more than the search.
//!
//! Cells are `2 r_max + margin` wide. Particles are sorted by (column, layer), where a column
//! is a cell's (x, y); the cells below, at and above a particle are then one key range of its
//! column. Columns are found through a dense table over the particles' bounding box (the
//! common case: a cloth on a table spans some hundreds of columns); a bounding box too large
//! for a table (an exploding simulation) falls back to a binary search of the sorted keys,
//! with the same pairs.

use nalgebra::Point3;

/// Most columns a dense start table may have; beyond, columns are binary-searched.
const DENSE_COLUMNS: u64 = 1 << 22;

/// Finds candidate contact pairs once per step; pairs joined by a constraint are skipped
/// (neighbours in a chain or grid are held apart by the constraint itself).
#[derive(Clone, Debug, Default)]
pub struct ContactFinder {
    /// Constrained pairs `(min << 32) | max`, sorted once pairs are searched.
    excluded: Vec<u64>,
    excluded_sorted: bool,
    /// `excluded[excluded_from[i]..excluded_from[i + 1]]` are the pairs whose smaller
    /// particle is `i` (built with the sort, for the particle count of the last search).
    excluded_from: Vec<u32>,
    /// Each particle's cell `(x, y, z)`.
    coords: Vec<(i64, i64, i64)>,
    /// `(key, particle)`, sorted: the key orders by column, then layer.
    cells: Vec<(u64, u32)>,
    /// Dense path: where each column's entries start in `cells` (one more at the end).
    starts: Vec<u32>,
    /// Candidate pairs `(i, j)`, `i < j`, in increasing order.
    pub pairs: Vec<(u32, u32)>,
}

fn key(i: usize, j: usize) -> u64 {
    let (a, b) = if i < j { (i, j) } else { (j, i) };
    ((a as u64) << 32) | b as u64
}

/// The sparse path's cell key: 21 bits per axis, offset so cells of ~1 cm cover ±10 km
/// without wrapping, which keeps `(x, y, z − 1)`, `(x, y, z)`, `(x, y, z + 1)` consecutive.
fn sparse_key(x: i64, y: i64, z: i64) -> u64 {
    let m = (1u64 << 21) - 1;
    let o = 1i64 << 20;
    ((((x + o) as u64) & m) << 42) | ((((y + o) as u64) & m) << 21) | (((z + o) as u64) & m)
}

impl ContactFinder {
    /// Never report `(i, j)` as a contact.
    pub fn exclude(&mut self, i: usize, j: usize) {
        self.excluded.push(key(i, j));
        self.excluded_sorted = false;
    }

    /// Fills [`Self::pairs`] with the pairs closer than `r_i + r_j + margin`.
    pub fn find(&mut self, pos: &[Point3<f64>], radius: &[f64], margin: f64) {
        self.find_with(pos, radius, margin, DENSE_COLUMNS);
    }

    fn prepare_excluded(&mut self, n: usize) {
        if !self.excluded_sorted {
            self.excluded.sort_unstable();
            self.excluded.dedup();
            self.excluded_sorted = true;
            self.excluded_from.clear();
        }
        if self.excluded_from.len() != n + 1 {
            self.excluded_from.clear();
            let mut k = 0;
            for i in 0..=n {
                while k < self.excluded.len() && (self.excluded[k] >> 32) < i as u64 {
                    k += 1;
                }
                self.excluded_from.push(k as u32);
            }
        }
    }

    fn find_with(&mut self, pos: &[Point3<f64>], radius: &[f64], margin: f64, dense_max: u64) {
        let n = pos.len();
        self.prepare_excluded(n);
        self.pairs.clear();
        let max_r = radius.iter().copied().fold(0.0, f64::max);
        let cell = 2.0 * max_r + margin;
        if n == 0 || cell <= 0.0 {
            return;
        }
        self.coords.clear();
        self.coords.extend(pos.iter().map(|p| {
            (
                (p.x / cell).floor() as i64,
                (p.y / cell).floor() as i64,
                (p.z / cell).floor() as i64,
            )
        }));
        let (mut lo, mut hi) = (
            (i64::MAX, i64::MAX, i64::MAX),
            (i64::MIN, i64::MIN, i64::MIN),
        );
        for &(x, y, z) in &self.coords {
            lo = (lo.0.min(x), lo.1.min(y), lo.2.min(z));
            hi = (hi.0.max(x), hi.1.max(y), hi.2.max(z));
        }
        // Columns of the dense table (a one-column margin on every side, so neighbours of
        // border particles index it without a bounds check), and layers (one margin each).
        let span = |a: i64, b: i64| (b as i128 - a as i128 + 3) as u128;
        let (w, h, layers) = (span(lo.0, hi.0), span(lo.1, hi.1), span(lo.2, hi.2));
        let dense = w * h <= dense_max as u128 && layers < 1 << 24;
        let (w, h) = (w as u64, h as u64);
        let column = |x: i64, y: i64| (x - lo.0 + 1) as u64 * h + (y - lo.1 + 1) as u64;
        let layer = |z: i64| (z - lo.2 + 1) as u64;
        self.cells.clear();
        for (i, &(x, y, z)) in self.coords.iter().enumerate() {
            let k = if dense {
                (column(x, y) << 24) | layer(z)
            } else {
                sparse_key(x, y, z)
            };
            self.cells.push((k, i as u32));
        }
        self.cells.sort_unstable();
        if dense {
            self.starts.clear();
            self.starts.resize((w * h + 1) as usize, 0);
            for &(k, _) in &self.cells {
                self.starts[(k >> 24) as usize + 1] += 1;
            }
            for c in 1..self.starts.len() {
                self.starts[c] += self.starts[c - 1];
            }
        }
        for i in 0..n {
            let (x, y, z) = self.coords[i];
            let excluded =
                &self.excluded[self.excluded_from[i] as usize..self.excluded_from[i + 1] as usize];
            for dx in -1..=1 {
                for dy in -1..=1 {
                    // The cells below, at and above in this column: one key range.
                    let (entries, first, last) = if dense {
                        let c = column(x + dx, y + dy);
                        let range =
                            self.starts[c as usize] as usize..self.starts[c as usize + 1] as usize;
                        (
                            &self.cells[range],
                            (c << 24) | (layer(z) - 1),
                            (c << 24) | (layer(z) + 1),
                        )
                    } else {
                        let (a, b) = (
                            sparse_key(x + dx, y + dy, z - 1),
                            sparse_key(x + dx, y + dy, z + 1),
                        );
                        let start = self.cells.partition_point(|e| e.0 < a);
                        (&self.cells[start..], a, b)
                    };
                    for &(k, j) in entries {
                        if k > last {
                            break;
                        }
                        let j = j as usize;
                        if k < first || j <= i {
                            continue;
                        }
                        let reach = radius[i] + radius[j] + margin;
                        if (pos[i] - pos[j]).norm_squared() < reach * reach
                            && !excluded.contains(&key(i, j))
                        {
                            self.pairs.push((i as u32, j as u32));
                        }
                    }
                }
            }
        }
        self.pairs.sort_unstable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rng::Rng;

    /// Every pair closer than its reach, not excluded, by checking all pairs.
    fn brute_force(
        pos: &[Point3<f64>],
        radius: &[f64],
        margin: f64,
        excluded: &[(usize, usize)],
    ) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for i in 0..pos.len() {
            for j in i + 1..pos.len() {
                let reach = radius[i] + radius[j] + margin;
                if (pos[i] - pos[j]).norm_squared() < reach * reach
                    && !excluded
                        .iter()
                        .any(|&(a, b)| (a.min(b), a.max(b)) == (i, j))
                {
                    out.push((i as u32, j as u32));
                }
            }
        }
        out
    }

    /// The dense table, the sparse search and checking every pair agree, on clouds around
    /// the origin (negative cells too), in a thin layer, and spread so wide that the
    /// default finder takes the sparse path.
    #[test]
    fn dense_and_sparse_searches_find_exactly_the_pairs_in_reach() {
        let mut rng = Rng::new(3, 7);
        for (n, extent, thickness) in [
            (300, 0.1, 0.1),
            (400, 0.3, 0.01),
            (200, 0.05, 0.05),
            (150, 2e5, 1.0),
        ] {
            let pos: Vec<Point3<f64>> = (0..n)
                .map(|_| {
                    Point3::new(
                        rng.uniform(-extent, extent),
                        rng.uniform(-extent, extent),
                        rng.uniform(-thickness, thickness),
                    )
                })
                .collect();
            let radius: Vec<f64> = (0..n)
                .map(|i| if i % 3 == 0 { 0.008 } else { 0.005 })
                .collect();
            let excluded: Vec<(usize, usize)> = (0..n - 1).step_by(2).map(|i| (i + 1, i)).collect();
            let margin = 0.004;
            let want = brute_force(&pos, &radius, margin, &excluded);
            let mut dense = ContactFinder::default();
            let mut sparse = ContactFinder::default();
            for &(i, j) in &excluded {
                dense.exclude(i, j);
                sparse.exclude(i, j);
            }
            dense.find(&pos, &radius, margin);
            sparse.find_with(&pos, &radius, margin, 0);
            assert_eq!(dense.pairs, want, "dense, {n} particles over ±{extent} m");
            assert_eq!(sparse.pairs, want, "sparse, {n} particles over ±{extent} m");
            if extent < 1.0 {
                assert!(!want.is_empty(), "a cloud of ±{extent} m has contacts");
            }
            // The finder is reused every step: a second search after the particles moved
            // and one more constraint was added agrees too.
            let moved: Vec<Point3<f64>> = pos
                .iter()
                .map(|p| p + nalgebra::Vector3::new(0.003, -0.002, 0.001))
                .collect();
            let (a, b) = want
                .first()
                .map_or((0, 1), |&(a, b)| (a as usize, b as usize));
            dense.exclude(a, b);
            let mut excluded = excluded.clone();
            excluded.push((a, b));
            dense.find(&moved, &radius, margin);
            assert_eq!(dense.pairs, brute_force(&moved, &radius, margin, &excluded));
        }
    }
}
