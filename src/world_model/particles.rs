//! The particle prior: the current frame's object pixels as a chain of particles that the
//! gripper lifts, carries and lowers, the rest following only where pulled taut
//! (`Config::prior_model = particles`).
//!
//! The carry prior ([`super::prior::carry`]) moves pixels by a blob around the pick, so a
//! dragged rope is smeared toward the place instead of following it, and a grasp beside the
//! object still moves what is near it. Both made its imagined outcomes rank the wrong
//! actions first (docs/stage3.md, session 21). This prior keeps the material connected:
//!
//! - every object pixel of the current frame (the same segmentation as the carry prior's)
//!   is a particle at its centre, on the table (`z = 0`), joined to the object pixels
//!   1, √2 or 2 px away (so a 1-px gap in a thin rope does not cut the chain) at their
//!   distance;
//! - the gripper holds the particles within `prior_grasp_px` of the pick, or nothing (a
//!   grasp beside the object moves nothing, as in the simulator, whose fingers hold only
//!   what lies between them);
//! - it rises to `prior_lift_px`, follows the path's offsets, lowers at the place and lets
//!   go; in sub-steps of at most a pixel, every stretched join is pulled back to its rest
//!   length, in passes over the joins in order of their hop count from the held
//!   particles, forward then backward, each end moving by how freely it can (a held one
//!   not at all, one lying on the table by `prior_table_mobility`); whatever a pass leaves
//!   longer than `prior_max_stretch` then follows its nearer end (follow-the-leader).
//!   Tension only, no push, so what lies on the table stays unless pulled — friction
//!   without dynamics. A lifted corner thus hangs below
//!   the gripper and is laid down behind it along the carry (a fold); a dragged rope
//!   trails its path. With `prior_min_length > 0` (session 37) neighbour joins also push
//!   apart below that fraction of their rest length: without it a dragged body's rows
//!   pile onto each other behind the pull, and a toy's torso shrank to a few pixels;
//!   the 2-px joins never push, so material still bends and folds;
//! - after the release every particle drops to the table; what was higher is drawn over
//!   what was lower, each particle as its pixel's square moved with it, the middle of
//!   each join under them so that a chain stretched diagonally keeps no gaps (every
//!   join's, also at rest, which thickens a thin diagonal line by a few pixels: drawing
//!   only stretched joins' moved rope and toy ranking by 0.1 point, so it stays). With
//!   `prior_spread_px > 0` (session 39) a carried particle that lands on a pixel already
//!   covered slides to the nearest free pixel within that distance, lowest first: a
//!   hanging limb lowered onto the table lies beside itself, where the drop alone heaped
//!   it into a few pixels (the simulator's toy keeps 92% of its area through a move, the
//!   prior without the spread 78%).
//!
//! No gravity, mass, stiffness or self-contact beyond that spread: it is a kinematic guess
//! that the network corrects, reading only what a real robot has (a segmented frame and
//! its own gripper path), never the simulator's state. Written here: no crate offers image-space rope or
//! cloth kinematics, and the whole model is a graph sweep over a few hundred pixels.

use super::prior::{background, is_object, GripPath, Phase};
use super::Config;

/// Neighbours at these squared pixel distances are joined (1, √2, and 2 straight across, so
/// that a 1-px gap in a thin rope does not cut the chain).
const JOIN_D2: [i64; 3] = [1, 2, 4];
/// Joins shorter at rest than this (pixels: the straight and diagonal neighbours, not the
/// 2-px bending joins) resist compression when `prior_min_length > 0`.
const PUSHED_BELOW_PX: f32 = 1.5;
/// The gripper moves at most this many pixels per sub-step.
const SUB_STEP_PX: f32 = 1.0;

/// Gauss–Seidel passes over the joins per sub-step at most (each forward, then backward).
const ITERATIONS: usize = 10;
/// The passes stop early once no join was stretched by more than this (pixels): most of a
/// body lies slack most of the time.
const SETTLED_PX: f32 = 0.02;
// Three constants are the config's, so that `fit-prior` can fit them from bags:
// `prior_max_stretch` (after the passes no join stays longer than this times its rest
// length), `prior_sag_px` (how far an unheld particle above the table sinks per sub-step
// before the joins pull it back: what makes a lifted flap drape instead of floating) and
// `prior_table_mobility` (a particle lying on the table moves this fraction as readily as
// a hanging one: table friction as a heavier mass, so that a taut chain tilts its hanging
// part before it drags what lies on the table).

struct Body {
    pos: Vec<[f32; 3]>,
    col: Vec<[u8; 3]>,
    /// Joins (a, b, rest length) between particles the gripper can reach, in order of the
    /// nearer end's hop count from the held particles.
    joins: Vec<(usize, usize, f32)>,
    /// Held particles and their offsets from the gripper.
    held: Vec<(usize, [f32; 3])>,
    is_held: Vec<bool>,
    /// The highest each particle has been: the drawing order after the drop.
    top: Vec<f32>,
    /// `prior_table_mobility`, `prior_sag_px`, `prior_max_stretch`, `prior_min_length`.
    table_mobility: f32,
    sag_px: f32,
    max_stretch: f32,
    min_length: f32,
    /// `prior_spread_px`.
    spread: f32,
    /// The frame's width and height (pixels): the spread keeps particles on it.
    size: (i64, i64),
}

impl Body {
    fn new(context: &[u8], pick: [f32; 2], cfg: &Config) -> Self {
        let (w, h) = (cfg.width, cfg.height);
        let bg = background(context, w, h);
        let mut index = vec![usize::MAX; w * h];
        let (mut pos, mut col) = (Vec::new(), Vec::new());
        for y in 0..h {
            for x in 0..w {
                let i = (y * w + x) * 3;
                let p = &context[i..i + 3];
                if is_object(p, bg) {
                    index[y * w + x] = pos.len();
                    pos.push([x as f32 + 0.5, y as f32 + 0.5, 0.0]);
                    col.push([p[0], p[1], p[2]]);
                }
            }
        }
        let n = pos.len();
        let mut near: Vec<Vec<(usize, f32)>> = vec![Vec::new(); n];
        for (i, p) in pos.iter().enumerate() {
            let (x, y) = (p[0] as i64, p[1] as i64);
            for dy in -2..=2i64 {
                for dx in -2..=2i64 {
                    let d2 = dx * dx + dy * dy;
                    if !JOIN_D2.contains(&d2) {
                        continue;
                    }
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = index[ny as usize * w + nx as usize];
                    if j != usize::MAX {
                        near[i].push((j, (d2 as f32).sqrt()));
                    }
                }
            }
        }
        let r2 = (cfg.prior_grasp_px as f32).powi(2);
        let held: Vec<(usize, [f32; 3])> = pos
            .iter()
            .enumerate()
            .filter(|(_, p)| (p[0] - pick[0]).powi(2) + (p[1] - pick[1]).powi(2) <= r2)
            .map(|(i, p)| (i, [p[0] - pick[0], p[1] - pick[1], 0.0]))
            .collect();
        let mut is_held = vec![false; n];
        // Hop counts from the held particles (breadth first); the joins in that order.
        let mut hops = vec![usize::MAX; n];
        let mut queue = std::collections::VecDeque::new();
        for &(i, _) in &held {
            is_held[i] = true;
            hops[i] = 0;
            queue.push_back(i);
        }
        let mut joins = Vec::new();
        while let Some(i) = queue.pop_front() {
            for &(j, rest) in &near[i] {
                if hops[j] == usize::MAX {
                    hops[j] = hops[i] + 1;
                    queue.push_back(j);
                }
                if hops[j] > hops[i] || (hops[j] == hops[i] && j > i) {
                    joins.push((i, j, rest));
                }
            }
        }
        Self {
            top: vec![0.0; n],
            table_mobility: cfg.prior_table_mobility as f32,
            sag_px: cfg.prior_sag_px as f32,
            max_stretch: cfg.prior_max_stretch as f32,
            min_length: cfg.prior_min_length as f32,
            spread: cfg.prior_spread_px as f32,
            size: (w as i64, h as i64),
            pos,
            col,
            joins,
            held,
            is_held,
        }
    }

    /// How readily a particle moves: held ones not at all, those on the table reluctantly.
    fn mobility(&self, i: usize) -> f32 {
        if self.is_held[i] {
            0.0
        } else if self.pos[i][2] <= 1e-3 {
            self.table_mobility
        } else {
            1.0
        }
    }

    /// Pulls the two ends of a stretched join back to its rest length.
    /// Returns how far it was stretched (0 when slack or immovable).
    fn project(&mut self, (a, b, rest): (usize, usize, f32)) -> f32 {
        let (pa, pb) = (self.pos[a], self.pos[b]);
        let d = [pa[0] - pb[0], pa[1] - pb[1], pa[2] - pb[2]];
        let len2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
        // Joins pull back to their rest length; a neighbour join (not the 2-px bending
        // ones) also pushes apart below `min_length` of it. Coincident particles have no
        // direction to push along.
        let target = if len2 > rest * rest {
            rest
        } else if rest < PUSHED_BELOW_PX && len2 > 1e-12 && len2 < (rest * self.min_length).powi(2)
        {
            rest * self.min_length
        } else {
            return 0.0;
        };
        let (wa, wb) = (self.mobility(a), self.mobility(b));
        if wa + wb == 0.0 {
            return 0.0;
        }
        let len = len2.sqrt();
        let k = (len - target) / (len * (wa + wb));
        for (c, dc) in d.iter().enumerate() {
            self.pos[a][c] -= dc * k * wa;
            self.pos[b][c] += dc * k * wb;
        }
        self.pos[a][2] = self.pos[a][2].max(0.0);
        self.pos[b][2] = self.pos[b][2].max(0.0);
        (len - target).abs()
    }

    /// Puts the held particles at the gripper `g`, lets the rest sag, and pulls the joins
    /// taut again.
    fn follow(&mut self, g: [f32; 3]) {
        for &(i, off) in &self.held {
            self.pos[i] = [g[0] + off[0], g[1] + off[1], (g[2] + off[2]).max(0.0)];
        }
        for (p, held) in self.pos.iter_mut().zip(&self.is_held) {
            if !held {
                p[2] = (p[2] - self.sag_px).max(0.0);
            }
        }
        for _ in 0..ITERATIONS {
            let mut worst = 0.0f32;
            for k in 0..self.joins.len() {
                worst = worst.max(self.project(self.joins[k]));
            }
            for k in (0..self.joins.len()).rev() {
                worst = worst.max(self.project(self.joins[k]));
            }
            if worst < SETTLED_PX {
                break;
            }
        }
        // What the passes left stretched beyond `prior_max_stretch` (a long drag converges slowly
        // against the table's friction): the farther end follows the nearer, from the
        // gripper outwards, so the material never lengthens by more than that.
        for k in 0..self.joins.len() {
            let (a, b, rest) = self.joins[k];
            let limit = rest * self.max_stretch;
            let (pa, pb) = (self.pos[a], self.pos[b]);
            let d = [pb[0] - pa[0], pb[1] - pa[1], pb[2] - pa[2]];
            let len2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
            if len2 > limit * limit && !self.is_held[b] {
                let k = limit / len2.sqrt();
                self.pos[b] = [
                    pa[0] + d[0] * k,
                    pa[1] + d[1] * k,
                    (pa[2] + d[2] * k).max(0.0),
                ];
            }
        }
        for (top, p) in self.top.iter_mut().zip(&self.pos) {
            *top = top.max(p[2]);
        }
    }

    /// Moves the gripper from `from` to `to` in sub-steps; returns `to`.
    fn travel(&mut self, from: [f32; 3], to: [f32; 3]) -> [f32; 3] {
        let d = (0..3)
            .map(|k| (to[k] - from[k]).powi(2))
            .sum::<f32>()
            .sqrt();
        let steps = (d / SUB_STEP_PX).ceil().max(1.0) as usize;
        for s in 1..=steps {
            let t = s as f32 / steps as f32;
            self.follow([
                from[0] + (to[0] - from[0]) * t,
                from[1] + (to[1] - from[1]) * t,
                from[2] + (to[2] - from[2]) * t,
            ]);
        }
        to
    }

    /// Lets go: everything lies on the table again.
    fn drop_all(&mut self) {
        self.held.clear();
        self.is_held.iter_mut().for_each(|h| *h = false);
        for p in &mut self.pos {
            p[2] = 0.0;
        }
        if self.spread > 0.0 {
            self.spread_heaps();
        }
    }

    /// Lets every carried particle that landed on a covered pixel slide to the nearest
    /// free pixel of the frame within `spread`: the lowest first, what lay on the table
    /// never.
    fn spread_heaps(&mut self) {
        let r = self.spread.ceil() as i64;
        let r2 = self.spread * self.spread;
        let key = |p: &[f32; 3]| (p[0].floor() as i64, p[1].floor() as i64);
        let mut taken = std::collections::HashSet::new();
        let mut order: Vec<usize> = (0..self.pos.len()).collect();
        order.sort_by(|&a, &b| self.top[a].total_cmp(&self.top[b]));
        for i in order {
            let (x, y) = key(&self.pos[i]);
            if self.top[i] <= 1e-3 || !taken.contains(&(x, y)) {
                taken.insert((x, y));
                continue;
            }
            let (fx, fy) = (self.pos[i][0] - 0.5, self.pos[i][1] - 0.5);
            let mut best: Option<((i64, i64), f32)> = None;
            for dy in -r..=r {
                for dx in -r..=r {
                    let c = (x + dx, y + dy);
                    if c.0 < 0 || c.1 < 0 || c.0 >= self.size.0 || c.1 >= self.size.1 {
                        continue;
                    }
                    let d2 = (c.0 as f32 - fx).powi(2) + (c.1 as f32 - fy).powi(2);
                    if d2 <= r2 && !taken.contains(&c) && best.is_none_or(|(_, b)| d2 < b) {
                        best = Some((c, d2));
                    }
                }
            }
            if let Some(((bx, by), _)) = best {
                self.pos[i][0] = bx as f32 + 0.5;
                self.pos[i][1] = by as f32 + 0.5;
                taken.insert((bx, by));
            }
        }
    }

    /// The body as an rgb8 frame over the background `bg`, the highest-carried on top.
    fn render(&self, bg: [u8; 3], w: usize, h: usize) -> Vec<u8> {
        let mut out: Vec<u8> = bg.iter().copied().cycle().take(w * h * 3).collect();
        let mut put = |u: f32, v: f32, col: &[u8; 3]| {
            // Written so that a NaN falls outside too.
            if !(u >= 0.0 && v >= 0.0 && u < w as f32 && v < h as f32) {
                return;
            }
            let k = (v as usize * w + u as usize) * 3;
            out[k..k + 3].copy_from_slice(col);
        };
        // The middle of every join first: a chain stretched diagonally keeps no gaps.
        for &(a, b, _) in &self.joins {
            let (pa, pb) = (self.pos[a], self.pos[b]);
            put((pa[0] + pb[0]) / 2.0, (pa[1] + pb[1]) / 2.0, &self.col[a]);
        }
        let mut ids: Vec<usize> = (0..self.pos.len()).collect();
        ids.sort_by(|&a, &b| self.top[a].total_cmp(&self.top[b]));
        for i in ids {
            let [u, v, _] = self.pos[i];
            for (su, sv) in [(-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25)] {
                put(u + su, v + sv, &self.col[i]);
            }
        }
        out
    }
}

/// Where the gripper goes for a path point `xy`: a point that is not finite leaves it at
/// `at`, and one far off the frame (a tip projected from near the camera's plane) is
/// brought to within one frame size of it, so that the sub-steps stay bounded (at most
/// about 3·(w + h) per move).
fn on_stage(xy: [f32; 2], at: [f32; 2], w: usize, h: usize) -> [f32; 2] {
    if !(xy[0].is_finite() && xy[1].is_finite()) {
        return at;
    }
    let (w, h) = (w as f32, h as f32);
    [xy[0].clamp(-w, 2.0 * w), xy[1].clamp(-h, 2.0 * h)]
}

/// The particle prior's future frames (rgb8, the model's size) for the gripper's `path`.
pub fn particles(context: &[u8], path: &GripPath, cfg: &Config) -> Vec<Vec<u8>> {
    let (w, h) = (cfg.width, cfg.height);
    let bg = background(context, w, h);
    let mut body = Body::new(context, path.pick, cfg);
    let lift = cfg.prior_lift_px as f32;
    let (px, py) = (path.pick[0], path.pick[1]);
    let mut g = [px, py, 0.0];
    let (mut up, mut released) = (false, false);
    let last = path.offsets.len().saturating_sub(1);
    path.offsets
        .iter()
        .enumerate()
        .map(|(f, off)| {
            let phase = path.phases.get(f).copied().unwrap_or(if f == last {
                Phase::After
            } else {
                Phase::Held
            });
            if !body.held.is_empty() && !released && phase != Phase::Before {
                if !up {
                    g = body.travel(g, [g[0], g[1], lift]);
                    up = true;
                }
                let xy = on_stage([px + off[0], py + off[1]], [g[0], g[1]], w, h);
                g = body.travel(g, [xy[0], xy[1], lift]);
                if phase == Phase::After {
                    body.travel(g, [xy[0], xy[1], 0.0]);
                    body.drop_all();
                    released = true;
                }
            }
            body.render(bg, w, h)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: [u8; 3] = [190, 180, 160];
    const RED: [u8; 3] = [200, 40, 40];

    fn cfg() -> Config {
        Config {
            prior: true,
            prior_model: super::super::PriorModel::Particles,
            ..Config::cpu()
        }
    }

    /// A frame of the table with the given pixels painted.
    fn frame(cfg: &Config, pixels: impl Iterator<Item = (usize, usize)>) -> Vec<u8> {
        let mut f: Vec<u8> = TABLE
            .iter()
            .copied()
            .cycle()
            .take(cfg.width * cfg.height * 3)
            .collect();
        for (x, y) in pixels {
            let i = (y * cfg.width + x) * 3;
            f[i..i + 3].copy_from_slice(&RED);
        }
        f
    }

    fn object(cfg: &Config, f: &[u8]) -> Vec<(usize, usize)> {
        (0..cfg.height)
            .flat_map(|y| (0..cfg.width).map(move |x| (x, y)))
            .filter(|&(x, y)| f[(y * cfg.width + x) * 3] == RED[0])
            .collect()
    }

    /// Grasp at `pick`, carried in a straight line to `place` over four frames.
    fn path(pick: [f32; 2], place: [f32; 2]) -> GripPath {
        let at = |t: f32| {
            [
                pick[0] + (place[0] - pick[0]) * t,
                pick[1] + (place[1] - pick[1]) * t,
            ]
        };
        GripPath::new(
            pick,
            place,
            &[
                (Phase::Held, at(0.3)),
                (Phase::Held, at(0.6)),
                (Phase::Held, at(1.0)),
                (Phase::After, place),
            ],
        )
    }

    #[test]
    fn a_rope_dragged_by_its_end_follows_as_a_chain_where_the_carry_prior_smears_it() {
        let cfg = cfg();
        // A straight rope, 2 px thick, x 20..60 at y 30–31; pulled 25 px further along +x.
        let ctx = frame(&cfg, (20..60).flat_map(|x| [(x, 30), (x, 31)]));
        let p = path([59.5, 31.0], [84.5, 31.0]);
        let last = particles(&ctx, &p, &cfg).pop().unwrap();
        let obj = object(&cfg, &last);
        let (x0, x1) = (
            obj.iter().map(|p| p.0).min().unwrap(),
            obj.iter().map(|p| p.0).max().unwrap(),
        );
        // The whole rope moved (its tail too), and it kept its length within 4 px.
        assert!((80..=86).contains(&x1), "head at {x1}");
        assert!(x0 >= 40, "tail left behind at {x0}");
        assert!(
            (x1 - x0) as i64 >= 35 && (x1 - x0) <= 44,
            "length {}",
            x1 - x0
        );
        // The carry prior leaves the tail where it was and stretches the rope instead.
        let carry = super::super::prior::carry(&ctx, &p, &cfg).pop().unwrap();
        let obj_c = object(&cfg, &carry);
        assert!(obj_c.iter().map(|p| p.0).min().unwrap() <= 21);
    }

    /// The fitted constants act as their names say: a stiff stretch limit drags a rope's
    /// tail along where a loose one leaves it lying longer; a table that holds what lies on
    /// it less lets a pulled cloth slide whole instead of stretching out from its corner.
    #[test]
    fn the_fitted_constants_change_the_material_as_their_names_say() {
        let x_range = |cfg: &Config, f: &[u8]| {
            let obj = object(cfg, f);
            (
                obj.iter().map(|p| p.0).min().unwrap(),
                obj.iter().map(|p| p.0).max().unwrap(),
            )
        };
        // A rope pulled by its end: with no stretch allowed the chain keeps its length.
        let rope = |stretch: f64| {
            let cfg = Config {
                prior_max_stretch: stretch,
                ..cfg()
            };
            let ctx = frame(&cfg, (20..60).flat_map(|x| [(x, 30), (x, 31)]));
            let last = particles(&ctx, &path([59.5, 31.0], [84.5, 31.0]), &cfg)
                .pop()
                .unwrap();
            x_range(&cfg, &last)
        };
        let (tight, loose) = (rope(1.0), rope(1.5));
        assert!(tight.1 - tight.0 < loose.1 - loose.0, "{tight:?} {loose:?}");
        // A cloth corner lifted and carried over the cloth: on a table that holds less,
        // the part lying on it is pulled along more, so less of the cloth stays put.
        let cloth = |mobility: f64| {
            let cfg = Config {
                prior_table_mobility: mobility,
                prior_max_stretch: 1.5,
                ..cfg()
            };
            let ctx = frame(&cfg, (20..40).flat_map(|y| (40..60).map(move |x| (x, y))));
            let last = particles(&ctx, &path([40.5, 20.5], [58.5, 38.5]), &cfg)
                .pop()
                .unwrap();
            let before = object(&cfg, &ctx);
            object(&cfg, &last)
                .iter()
                .filter(|p| before.contains(p))
                .count()
        };
        let (sticky, slippery) = (cloth(0.03), cloth(1.0));
        assert!(
            slippery < sticky,
            "still covered: {sticky} sticky, {slippery} slippery"
        );
        // Sag: a flap lifted high drapes lower with more sag, so the fold it lands as
        // differs.
        let fold = |sag: f64| {
            let cfg = Config {
                prior_sag_px: sag,
                ..cfg()
            };
            let ctx = frame(&cfg, (20..40).flat_map(|y| (40..60).map(move |x| (x, y))));
            particles(&ctx, &path([40.5, 20.5], [58.5, 38.5]), &cfg)
                .pop()
                .unwrap()
        };
        assert_ne!(fold(0.0), fold(1.5));
    }

    #[test]
    fn a_compression_limit_keeps_a_dragged_body_from_collapsing_onto_the_path() {
        // A toy-like body: a 10×10 torso with a 12-px limb, dragged by the limb's tip far
        // to the right. Joins that only pull let the torso's rows fold onto each other
        // behind the limb; with a compression limit the torso keeps most of its area.
        let torso = (25..35).flat_map(|y| (30..40).map(move |x| (x, y)));
        let limb = (40..52).map(|x| (x, 30));
        let area = |min_length: f64| {
            let cfg = Config {
                prior_min_length: min_length,
                prior_table_mobility: 0.3,
                prior_max_stretch: 1.2,
                ..cfg()
            };
            let ctx = frame(&cfg, torso.clone().chain(limb.clone()));
            let last = particles(&ctx, &path([51.5, 30.5], [95.5, 30.5]), &cfg)
                .pop()
                .unwrap();
            (object(&cfg, &ctx).len(), object(&cfg, &last).len())
        };
        let (before, pulled_only) = area(0.0);
        let (_, pushed) = area(0.9);
        assert!(
            pushed as f64 > 2.0 * pulled_only as f64 && pushed as f64 > 0.5 * before as f64,
            "area {before} at rest, {pulled_only} with pull only, {pushed} with the limit"
        );
    }

    #[test]
    fn a_spread_lays_a_lowered_heap_beside_itself() {
        // A toy-like body: a 10×10 torso with a 12-px limb, picked in the torso and
        // carried away. The lifted material hangs below the gripper and lands in a heap;
        // with a spread the heap's particles slide to free pixels nearby.
        let torso = (25..35).flat_map(|y| (30..40).map(move |x| (x, y)));
        let limb = (40..52).flat_map(|x| [(x, 30), (x, 31)]);
        let run = |spread: f64| {
            let cfg = Config {
                prior_min_length: 0.9,
                prior_table_mobility: 0.1,
                prior_sag_px: 1.5,
                prior_spread_px: spread,
                ..cfg()
            };
            let ctx = frame(&cfg, torso.clone().chain(limb.clone()));
            let last = particles(&ctx, &path([34.5, 29.5], [60.5, 40.5]), &cfg)
                .pop()
                .unwrap();
            (object(&cfg, &ctx), object(&cfg, &last))
        };
        let (before, heaped) = run(0.0);
        let (_, spread) = run(3.0);
        let near = |p: &(usize, usize), q: &[(usize, usize)], r: usize| {
            q.iter()
                .any(|o| o.0.abs_diff(p.0) <= r && o.1.abs_diff(p.1) <= r)
        };
        // Measured: 124 at rest, 62 heaped, 106 spread.
        let msg = format!(
            "area {} at rest, {} heaped, {} spread",
            before.len(),
            heaped.len(),
            spread.len()
        );
        assert!(spread.len() > heaped.len() + 20, "{msg}");
        assert!(spread.len() <= before.len(), "{msg}");
        assert!(
            spread.iter().all(|p| near(p, &heaped, 3)),
            "a particle slid farther than the spread"
        );
    }

    #[test]
    fn the_spread_keeps_a_heap_at_the_border_on_the_frame() {
        // A torso with a limb carried to the frame's left edge: the heap it lowers there
        // spreads onto free pixels of the frame, never off it (where nothing is drawn).
        let cfg = Config {
            prior_min_length: 0.9,
            prior_sag_px: 1.5,
            ..cfg()
        };
        let ctx = frame(
            &cfg,
            (25..35)
                .flat_map(|y| (30..40).map(move |x| (x, y)))
                .chain((40..52).flat_map(|x| [(x, 30), (x, 31)])),
        );
        let mut body = Body::new(&ctx, [34.5, 29.5], &cfg);
        let g = body.travel([34.5, 29.5, 0.0], [34.5, 29.5, 8.0]);
        let g = body.travel(g, [0.5, 30.5, 8.0]);
        body.travel(g, [0.5, 30.5, 0.0]);
        body.drop_all();
        let on = |p: &[f32; 3]| {
            p[0] >= 0.0 && p[1] >= 0.0 && p[0] < cfg.width as f32 && p[1] < cfg.height as f32
        };
        let before = body.pos.clone();
        let heaped = before.iter().filter(|p| p[0] < 4.0).count();
        assert!(heaped > 20, "only {heaped} particles lie at the edge");
        body.spread = 3.0;
        body.spread_heaps();
        let left = (0..before.len())
            .filter(|&i| on(&before[i]) && !on(&body.pos[i]))
            .count();
        assert_eq!(left, 0, "{left} particles spread off the frame");
    }

    #[test]
    fn a_path_off_the_frame_or_not_finite_stays_bounded() {
        let cfg = cfg();
        let ctx = frame(&cfg, (20..60).flat_map(|x| [(x, 30), (x, 31)]));
        let area = object(&cfg, &ctx).len();
        let held = |tip: [f32; 2]| {
            GripPath::new(
                [40.5, 30.5],
                tip,
                &[(Phase::Held, tip), (Phase::After, tip)],
            )
        };
        // A tip projected from near the camera's plane: the move is cut at a frame's
        // size (unbounded, it took 1e9 sub-steps), and the rope is carried off the frame.
        let (w, h) = (cfg.width as f32, cfg.height as f32);
        assert_eq!(
            on_stage([1e9, 30.5], [40.5, 30.5], cfg.width, cfg.height),
            [2.0 * w, 30.5]
        );
        assert_eq!(
            on_stage([5.0, -1e9], [40.5, 30.5], cfg.width, cfg.height),
            [5.0, -h]
        );
        assert_eq!(
            on_stage([f32::NAN, 3.0], [40.5, 30.5], cfg.width, cfg.height),
            [40.5, 30.5]
        );
        let far = particles(&ctx, &held([1e9, 30.5]), &cfg);
        let shown = object(&cfg, &far[1]).len();
        assert!(shown < area / 2, "{shown} of {area} pixels still shown");
        // A tip that is not a number: the gripper stays where it is, and nothing is drawn
        // in column 0 (a NaN coordinate passed the old bounds check as pixel 0).
        for tip in [[f32::NAN, f32::NAN], [f32::NAN, 30.5]] {
            for f in &particles(&ctx, &held(tip), &cfg) {
                let obj = object(&cfg, f);
                assert!(obj.iter().all(|p| p.0 > 0), "drawn at column 0: {tip:?}");
                assert!(obj.len() > area / 2);
            }
        }
    }

    #[test]
    fn a_grasp_beside_the_object_moves_nothing() {
        let cfg = cfg();
        let ctx = frame(&cfg, (20..60).flat_map(|x| [(x, 30), (x, 31)]));
        let frames = particles(&ctx, &path([40.0, 36.0], [80.0, 50.0]), &cfg);
        for f in &frames {
            assert_eq!(object(&cfg, f), object(&cfg, &ctx));
        }
    }

    #[test]
    fn a_cloth_corner_carried_over_the_cloth_folds_it() {
        let cfg = cfg();
        // A 20×20 cloth at x 40..60, y 20..40; its corner (40, 20) carried to (58, 38).
        let ctx = frame(&cfg, (20..40).flat_map(|y| (40..60).map(move |x| (x, y))));
        let last = particles(&ctx, &path([40.5, 20.5], [58.5, 38.5]), &cfg)
            .pop()
            .unwrap();
        let obj = object(&cfg, &last);
        let area = obj.len() as f64;
        // Folded over itself: about half the area shows, the far corner has not moved,
        // the picked corner lies at the place and the cloth stays near where it was.
        assert!(area < 0.8 * 400.0 && area > 0.3 * 400.0, "area {area}");
        assert!(obj.contains(&(59, 39)), "far corner moved");
        assert!(obj.contains(&(58, 38)), "nothing at the place");
        assert!(!obj.contains(&(40, 20)), "the picked corner did not leave");
        assert!(obj
            .iter()
            .all(|&(x, y)| (36..66).contains(&x) && (16..46).contains(&y)));
    }

    #[test]
    fn frames_before_the_grasp_show_the_object_at_rest() {
        let cfg = cfg();
        let ctx = frame(&cfg, (20..60).flat_map(|x| [(x, 30), (x, 31)]));
        let p = GripPath::new(
            [59.5, 31.0],
            [84.5, 31.0],
            &[
                (Phase::Before, [70.0, 10.0]),
                (Phase::Held, [70.0, 31.0]),
                (Phase::Held, [84.5, 31.0]),
                (Phase::After, [84.5, 31.0]),
            ],
        );
        let frames = particles(&ctx, &p, &cfg);
        assert_eq!(frames[0], ctx);
        assert_ne!(frames[1], ctx);
    }
}
