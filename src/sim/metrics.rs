//! Measures of a world state used by tests and scoring.

use super::World;

/// Area (m²) of the union of an object's triangles projected onto the table, rasterised on a
/// `cell` grid (cell centres inside any triangle count).
pub fn covered_area(world: &World, object: usize, cell: f64) -> f64 {
    let obj = &world.objects()[object];
    let pos = world.positions();
    let pts = &pos[obj.particles.clone()];
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for p in pts {
        x0 = x0.min(p.x);
        y0 = y0.min(p.y);
        x1 = x1.max(p.x);
        y1 = y1.max(p.y);
    }
    if obj.triangles.is_empty() || x1 < x0 {
        return 0.0;
    }
    let nx = ((x1 - x0) / cell).ceil() as usize + 1;
    let ny = ((y1 - y0) / cell).ceil() as usize + 1;
    let mut covered = vec![false; nx * ny];
    for t in &obj.triangles {
        let [a, b, c] = [pos[t[0]], pos[t[1]], pos[t[2]]];
        let cross = |p: (f64, f64), q: (f64, f64), r: (f64, f64)| {
            (q.0 - p.0) * (r.1 - p.1) - (q.1 - p.1) * (r.0 - p.0)
        };
        let (pa, pb, pc) = ((a.x, a.y), (b.x, b.y), (c.x, c.y));
        let area = cross(pa, pb, pc);
        if area.abs() < 1e-14 {
            continue;
        }
        let lo_x = ((a.x.min(b.x).min(c.x) - x0) / cell).floor().max(0.0) as usize;
        let hi_x = (((a.x.max(b.x).max(c.x) - x0) / cell).ceil() as usize).min(nx - 1);
        let lo_y = ((a.y.min(b.y).min(c.y) - y0) / cell).floor().max(0.0) as usize;
        let hi_y = (((a.y.max(b.y).max(c.y) - y0) / cell).ceil() as usize).min(ny - 1);
        for ix in lo_x..=hi_x {
            for iy in lo_y..=hi_y {
                let p = (x0 + (ix as f64 + 0.5) * cell, y0 + (iy as f64 + 0.5) * cell);
                let (u, v, w) = (cross(pa, pb, p), cross(pb, pc, p), cross(pc, pa, p));
                let inside = if area > 0.0 {
                    u >= 0.0 && v >= 0.0 && w >= 0.0
                } else {
                    u <= 0.0 && v <= 0.0 && w <= 0.0
                };
                if inside {
                    covered[ix * ny + iy] = true;
                }
            }
        }
    }
    covered.iter().filter(|&&c| c).count() as f64 * cell * cell
}
