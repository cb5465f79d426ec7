//! The particle world: XPBD with small steps (many substeps, one constraint pass each),
//! a table plane with Coulomb friction, particle–particle contacts and a kinematic gripper.

use super::bodies::{BodySpec, Chain, Distance, ObjectKind};
use super::collide::ContactFinder;
use nalgebra::{Point3, Vector3};
use std::ops::Range;

/// Solver settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SimParams {
    /// Substeps per [`World::step`].
    pub substeps: usize,
    /// Constraint passes per substep.
    pub iterations: usize,
    /// Gravity (m/s², along −z).
    pub gravity: f64,
    /// Linear velocity damping (1/s): air drag and internal friction.
    pub damping: f64,
    /// Speed cap (m/s), a guard against explosions.
    pub max_speed: f64,
    /// Whether particles of all objects collide with each other (cloth self-collision).
    pub self_collision: bool,
    /// Sleeping (m/s): once nothing is held and every particle has moved slower than this
    /// for [`SLEEP_AFTER_STEPS`] steps, steps only advance time until the gripper holds
    /// something again (at rest a step moves nothing; the arm's approach, retreat and the
    /// settling tail of an episode then cost nothing). 0 disables it.
    pub sleep_speed: f64,
}

/// Steps at rest before a world sleeps (see [`SimParams::sleep_speed`]).
pub const SLEEP_AFTER_STEPS: u32 = 10;

impl Default for SimParams {
    fn default() -> Self {
        Self {
            substeps: 16,
            iterations: 1,
            gravity: 9.81,
            damping: 1.0,
            max_speed: 5.0,
            self_collision: true,
            sleep_speed: 1e-4,
        }
    }
}

/// One object's slice of the world's particles and its topology (world indices).
#[derive(Clone, Debug)]
pub struct Object {
    /// What it is.
    pub kind: ObjectKind,
    /// Its particles.
    pub particles: Range<usize>,
    /// Surface triangles (cloth grid, toy torso).
    pub triangles: Vec<[usize; 3]>,
    /// Chains (rope, toy limbs and tail).
    pub chains: Vec<Chain>,
    /// `(rows, cols)` of the cloth or the toy torso (row-major from `particles.start`); a rope
    /// is `(1, n)`.
    pub grid: Option<(usize, usize)>,
    /// Contact radius (m) of its particles.
    pub radius: f64,
}

/// The kinematic gripper point and what it holds.
#[derive(Clone, Debug)]
struct Gripper {
    at: Point3<f64>,
    target: Point3<f64>,
    /// Held particles and their offsets from the gripper point.
    held: Vec<(usize, Vector3<f64>)>,
}

/// A deterministic deformable world on a table (the `z = 0` plane, metres, z up).
#[derive(Clone, Debug)]
pub struct World {
    params: SimParams,
    pos: Vec<Point3<f64>>,
    prev: Vec<Point3<f64>>,
    vel: Vec<Vector3<f64>>,
    inv_mass: Vec<f64>,
    /// `inv_mass`, with 0 for held particles.
    w: Vec<f64>,
    radius: Vec<f64>,
    friction: Vec<f64>,
    constraints: Vec<Distance>,
    lambda: Vec<f64>,
    objects: Vec<Object>,
    gripper: Gripper,
    contacts: ContactFinder,
    time: f64,
    /// Consecutive steps at rest with nothing held.
    rest_steps: u32,
    /// Fastest particle speed (m/s) after the last step: velocities change only in
    /// [`World::step`], so the broad phase and sleeping share this one scan.
    max_speed: f64,
}

impl World {
    /// An empty world.
    pub fn new(params: SimParams) -> Self {
        Self {
            params,
            pos: Vec::new(),
            prev: Vec::new(),
            vel: Vec::new(),
            inv_mass: Vec::new(),
            w: Vec::new(),
            radius: Vec::new(),
            friction: Vec::new(),
            constraints: Vec::new(),
            lambda: Vec::new(),
            objects: Vec::new(),
            gripper: Gripper {
                at: Point3::new(0.55, 0.0, 0.3),
                target: Point3::new(0.55, 0.0, 0.3),
                held: Vec::new(),
            },
            contacts: ContactFinder::default(),
            time: 0.0,
            rest_steps: 0,
            max_speed: 0.0,
        }
    }

    /// Adds an object at rest; returns its index in [`World::objects`].
    pub fn add(&mut self, spec: BodySpec) -> usize {
        let base = self.pos.len();
        let n = spec.positions.len();
        self.rest_steps = 0;
        self.pos.extend_from_slice(&spec.positions);
        self.prev.extend_from_slice(&spec.positions);
        self.vel.extend(std::iter::repeat_n(Vector3::zeros(), n));
        self.inv_mass.extend(spec.masses.iter().map(|m| 1.0 / m));
        self.w.extend(spec.masses.iter().map(|m| 1.0 / m));
        self.radius.extend(std::iter::repeat_n(spec.radius, n));
        self.friction.extend(std::iter::repeat_n(spec.friction, n));
        for c in &spec.constraints {
            self.constraints.push(Distance {
                i: c.i + base as u32,
                j: c.j + base as u32,
                ..*c
            });
            // Only pairs whose rest length is inside their contact distance skip contacts
            // (the constraint holds them apart; a contact would fight it). Longer ones, such
            // as bending pairs across two links, keep their contacts: without them a soft
            // limb folds onto itself and the two particles jitter at the speed cap.
            if c.rest < 2.0 * spec.radius + 1e-9 {
                self.contacts
                    .exclude(c.i as usize + base, c.j as usize + base);
            }
        }
        self.lambda.resize(self.constraints.len(), 0.0);
        let shift = |v: &[usize]| v.iter().map(|i| i + base).collect::<Vec<_>>();
        self.objects.push(Object {
            kind: spec.kind,
            particles: base..base + n,
            triangles: spec
                .triangles
                .iter()
                .map(|t| [t[0] + base, t[1] + base, t[2] + base])
                .collect(),
            chains: spec
                .chains
                .iter()
                .map(|c| Chain {
                    name: c.name,
                    anchor: c.anchor.map(|a| a + base),
                    particles: shift(&c.particles),
                })
                .collect(),
            grid: spec.grid,
            radius: spec.radius,
        });
        self.objects.len() - 1
    }

    /// All particle positions (world frame, metres), objects one after another.
    pub fn positions(&self) -> &[Point3<f64>] {
        &self.pos
    }

    /// The objects (particle ranges and topology for the renderer and scoring).
    pub fn objects(&self) -> &[Object] {
        &self.objects
    }

    /// The positions of one object's particles.
    pub fn object_positions(&self, object: usize) -> &[Point3<f64>] {
        &self.pos[self.objects[object].particles.clone()]
    }

    /// Particle velocities (m/s).
    pub fn velocities(&self) -> &[Vector3<f64>] {
        &self.vel
    }

    /// Simulated time (s) since the world was made.
    pub fn time(&self) -> f64 {
        self.time
    }

    /// The gripper point (where the last [`World::step`] left it).
    pub fn gripper(&self) -> Point3<f64> {
        self.gripper.at
    }

    /// Indices of the held particles.
    pub fn held(&self) -> impl Iterator<Item = usize> + '_ {
        self.gripper.held.iter().map(|h| h.0)
    }

    /// Solver settings.
    pub fn params(&self) -> &SimParams {
        &self.params
    }

    /// Puts the gripper at `at` (no motion) and attaches the particles within `radius` of it
    /// (at least the nearest one), keeping their offsets. Returns how many are held.
    pub fn grasp(&mut self, at: Point3<f64>, radius: f64) -> usize {
        self.gripper.at = at;
        self.gripper.target = at;
        let mut chosen: Vec<usize> = (0..self.pos.len())
            .filter(|&i| (self.pos[i] - at).norm() <= radius)
            .collect();
        if chosen.is_empty() {
            let nearest = (0..self.pos.len()).min_by(|&a, &b| {
                (self.pos[a] - at)
                    .norm_squared()
                    .total_cmp(&(self.pos[b] - at).norm_squared())
            });
            chosen.extend(nearest);
        }
        self.grasp_particles(&chosen)
    }

    /// Attaches the given particles to the gripper at their current offsets from it (e.g.
    /// two corners of a cloth edge held by one bar). Returns how many are held in all.
    pub fn grasp_particles(&mut self, particles: &[usize]) -> usize {
        for &i in particles {
            if self.gripper.held.iter().all(|h| h.0 != i) {
                self.gripper.held.push((i, self.pos[i] - self.gripper.at));
                self.w[i] = 0.0;
            }
        }
        self.gripper.held.len()
    }

    /// Sets where the gripper will be at the end of the next [`World::step`]; it moves there
    /// in a straight line over the step, carrying what it holds.
    pub fn move_gripper(&mut self, to: Point3<f64>) {
        self.gripper.target = to;
    }

    /// Puts the gripper at `at` at once, without stepping (held particles jump with it).
    pub fn teleport_gripper(&mut self, at: Point3<f64>) {
        self.gripper.at = at;
        self.gripper.target = at;
        for &(i, offset) in &self.gripper.held {
            self.pos[i] = at + offset;
            self.prev[i] = self.pos[i];
        }
    }

    /// Lets go of everything; released particles keep their velocity.
    pub fn release(&mut self) {
        for (i, _) in self.gripper.held.drain(..) {
            self.w[i] = self.inv_mass[i];
        }
    }

    /// Advances by `dt` seconds.
    pub fn step(&mut self, dt: f64) {
        let n_sub = self.params.substeps.max(1);
        let h = dt / n_sub as f64;
        let from = self.gripper.at;
        let to = self.gripper.target;
        if self.asleep() {
            self.gripper.at = to;
            self.time += dt;
            return;
        }
        if self.params.self_collision {
            let max_speed = self.max_speed;
            let gripper_speed = if self.gripper.held.is_empty() {
                0.0
            } else {
                (to - from).norm() / dt
            };
            // Pairs that can touch within this step: contact distance plus how far two
            // particles can close in in one step, capped at 1 cm (a contact-resolution
            // velocity spike would otherwise make every pair a candidate; faster approaches
            // are caught at the next step).
            let margin = (2.0 * max_speed.max(gripper_speed) * dt).min(0.01) + 1e-3;
            self.contacts.find(&self.pos, &self.radius, margin);
        }
        let gravity = Vector3::new(0.0, 0.0, -self.params.gravity);
        let keep = (-self.params.damping * h).exp();
        for s in 1..=n_sub {
            let grip = from + (to - from) * (s as f64 / n_sub as f64);
            for i in 0..self.pos.len() {
                self.prev[i] = self.pos[i];
                if self.w[i] > 0.0 {
                    self.vel[i] = (self.vel[i] + gravity * h) * keep;
                    self.pos[i] += self.vel[i] * h;
                }
            }
            for &(i, offset) in &self.gripper.held {
                self.pos[i] = grip + offset;
            }
            for it in 0..self.params.iterations {
                if it == 0 {
                    self.lambda.iter_mut().for_each(|l| *l = 0.0);
                }
                // Alternate the sweep direction so no end of a chain is favoured.
                let forward = (s + it) % 2 == 0;
                self.solve_distances(h, forward);
            }
            if self.params.self_collision {
                self.solve_contacts();
            }
            self.solve_ground();
            let cap = self.params.max_speed;
            for i in 0..self.pos.len() {
                let mut v = (self.pos[i] - self.prev[i]) / h;
                let speed = v.norm();
                if speed > cap {
                    v *= cap / speed;
                }
                self.vel[i] = v;
            }
        }
        self.gripper.at = to;
        self.time += dt;
        self.max_speed = self.vel.iter().map(|v| v.norm()).fold(0.0, f64::max);
        if self.gripper.held.is_empty() && self.max_speed < self.params.sleep_speed {
            self.rest_steps = self.rest_steps.saturating_add(1);
        } else {
            self.rest_steps = 0;
        }
    }

    /// Replaces the solver settings (the state is kept).
    pub fn set_params(&mut self, params: SimParams) {
        self.params = params;
        self.rest_steps = 0;
    }

    /// Makes the next step simulate even at rest (benchmarks time the physics with it).
    pub fn wake(&mut self) {
        self.rest_steps = 0;
    }

    /// Whether steps currently skip the physics (see [`SimParams::sleep_speed`]).
    pub fn asleep(&self) -> bool {
        self.gripper.held.is_empty() && self.rest_steps >= SLEEP_AFTER_STEPS
    }

    fn solve_distances(&mut self, h: f64, forward: bool) {
        let n = self.constraints.len();
        let inv_h2 = 1.0 / (h * h);
        for k in 0..n {
            let k = if forward { k } else { n - 1 - k };
            let c = self.constraints[k];
            let (i, j) = (c.i as usize, c.j as usize);
            let (wi, wj) = (self.w[i], self.w[j]);
            let d = self.pos[i] - self.pos[j];
            let len = d.norm();
            if wi + wj == 0.0 || len < 1e-12 {
                continue;
            }
            let alpha = c.compliance * inv_h2;
            let dl = (-(len - c.rest) - alpha * self.lambda[k]) / (wi + wj + alpha);
            self.lambda[k] += dl;
            let n = d / len;
            self.pos[i] += n * (wi * dl);
            self.pos[j] -= n * (wj * dl);
        }
    }

    /// Particle–particle contacts: push apart to `r_i + r_j`, with Coulomb friction on the
    /// relative tangential motion of the substep (position-based friction).
    fn solve_contacts(&mut self) {
        for k in 0..self.contacts.pairs.len() {
            let (i, j) = self.contacts.pairs[k];
            let (i, j) = (i as usize, j as usize);
            let (wi, wj) = (self.w[i], self.w[j]);
            let wsum = wi + wj;
            if wsum == 0.0 {
                continue;
            }
            let d = self.pos[i] - self.pos[j];
            let dist = d.norm();
            let min = self.radius[i] + self.radius[j];
            if dist >= min || dist < 1e-12 {
                continue;
            }
            let n = d / dist;
            let pen = min - dist;
            self.pos[i] += n * (pen * wi / wsum);
            self.pos[j] -= n * (pen * wj / wsum);
            let rel = (self.pos[i] - self.prev[i]) - (self.pos[j] - self.prev[j]);
            let tangential = rel - n * rel.dot(&n);
            let t = tangential.norm();
            if t > 1e-15 {
                let mu = 0.5 * (self.friction[i] + self.friction[j]);
                let fix = tangential * (mu * pen / t).min(1.0);
                self.pos[i] -= fix * (wi / wsum);
                self.pos[j] += fix * (wj / wsum);
            }
        }
    }

    /// The table: centres stay at `z ≥ r`; friction removes up to `μ · penetration` of the
    /// substep's sliding (Coulomb friction in position form: `μ g h²` per substep at rest).
    fn solve_ground(&mut self) {
        for i in 0..self.pos.len() {
            let r = self.radius[i];
            if self.w[i] == 0.0 || self.pos[i].z >= r {
                continue;
            }
            let pen = r - self.pos[i].z;
            self.pos[i].z = r;
            let dx = self.pos[i].x - self.prev[i].x;
            let dy = self.pos[i].y - self.prev[i].y;
            let slide = (dx * dx + dy * dy).sqrt();
            if slide > 0.0 {
                let f = (self.friction[i] * pen / slide).min(1.0);
                self.pos[i].x -= dx * f;
                self.pos[i].y -= dy * f;
            }
        }
    }
}
