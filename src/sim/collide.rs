//! Broad phase for particle–particle contacts: a spatial hash built by sorting, so the pair
//! list (and hence the solve order) depends only on positions, never on hashing order.

use nalgebra::Point3;

/// Finds candidate contact pairs once per step; pairs joined by a constraint are skipped
/// (neighbours in a chain or grid are held apart by the constraint itself).
#[derive(Clone, Debug, Default)]
pub struct ContactFinder {
    /// Constrained pairs `(min << 32) | max`, sorted once pairs are searched.
    excluded: Vec<u64>,
    excluded_sorted: bool,
    cells: Vec<(u64, u32)>,
    /// Candidate pairs `(i, j)`, `i < j`, in increasing order.
    pub pairs: Vec<(u32, u32)>,
}

fn key(i: usize, j: usize) -> u64 {
    let (a, b) = if i < j { (i, j) } else { (j, i) };
    ((a as u64) << 32) | b as u64
}

fn cell_key(x: i64, y: i64, z: i64) -> u64 {
    // 21 bits per axis (cells of ~1 cm cover ±10 km).
    let m = (1u64 << 21) - 1;
    (((x as u64) & m) << 42) | (((y as u64) & m) << 21) | ((z as u64) & m)
}

impl ContactFinder {
    /// Never report `(i, j)` as a contact.
    pub fn exclude(&mut self, i: usize, j: usize) {
        self.excluded.push(key(i, j));
        self.excluded_sorted = false;
    }

    /// Fills [`Self::pairs`] with the pairs closer than `r_i + r_j + margin`.
    pub fn find(&mut self, pos: &[Point3<f64>], radius: &[f64], margin: f64) {
        if !self.excluded_sorted {
            self.excluded.sort_unstable();
            self.excluded.dedup();
            self.excluded_sorted = true;
        }
        self.pairs.clear();
        let max_r = radius.iter().copied().fold(0.0, f64::max);
        let cell = 2.0 * max_r + margin;
        if pos.is_empty() || cell <= 0.0 {
            return;
        }
        let coord = |p: &Point3<f64>| {
            (
                (p.x / cell).floor() as i64,
                (p.y / cell).floor() as i64,
                (p.z / cell).floor() as i64,
            )
        };
        self.cells.clear();
        for (i, p) in pos.iter().enumerate() {
            let (x, y, z) = coord(p);
            self.cells.push((cell_key(x, y, z), i as u32));
        }
        self.cells.sort_unstable();
        for (i, p) in pos.iter().enumerate() {
            let (x, y, z) = coord(p);
            for dx in -1..=1 {
                for dy in -1..=1 {
                    for dz in -1..=1 {
                        let k = cell_key(x + dx, y + dy, z + dz);
                        let start = self.cells.partition_point(|c| c.0 < k);
                        for &(ck, j) in &self.cells[start..] {
                            if ck != k {
                                break;
                            }
                            let j = j as usize;
                            if j <= i {
                                continue;
                            }
                            let reach = radius[i] + radius[j] + margin;
                            if (pos[i] - pos[j]).norm_squared() < reach * reach
                                && self.excluded.binary_search(&key(i, j)).is_err()
                            {
                                self.pairs.push((i as u32, j as u32));
                            }
                        }
                    }
                }
            }
        }
        self.pairs.sort_unstable();
    }
}
