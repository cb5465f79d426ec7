//! Particle models of the three objects: which particles, masses and radii, which distance
//! constraints (stretch, shear, bending) and the topology the renderer draws.
//!
//! Units: metres, kilograms; compliance in m/N (XPBD's α, the inverse stiffness).

use nalgebra::{Point3, Vector3};

/// What an object is; decides its materials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// A rope: one chain.
    Rope,
    /// A rectangular cloth: a particle grid.
    Cloth,
    /// A plush toy: a torso patch with limb and tail chains.
    Toy,
}

/// An ordered chain of particles (a rope, a limb, a tail), optionally hanging off an anchor
/// particle of a torso. Indices are world particle indices.
#[derive(Clone, Debug, PartialEq)]
pub struct Chain {
    /// `rope`, `front_left`, `front_right`, `back_left`, `back_right`, `tail`.
    pub name: &'static str,
    /// The torso particle the chain hangs off (`None` for a rope).
    pub anchor: Option<usize>,
    /// Particles from the anchor side to the tip.
    pub particles: Vec<usize>,
}

/// A distance constraint `|x_i − x_j| = rest` with compliance α (0 = inextensible).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Distance {
    /// First particle.
    pub i: u32,
    /// Second particle.
    pub j: u32,
    /// Rest length (m).
    pub rest: f64,
    /// Compliance α (m/N).
    pub compliance: f64,
}

/// One object before it enters a world: indices are local (0-based).
#[derive(Clone, Debug)]
pub struct BodySpec {
    /// What it is.
    pub kind: ObjectKind,
    /// Initial positions.
    pub positions: Vec<Point3<f64>>,
    /// Particle masses (kg).
    pub masses: Vec<f64>,
    /// Contact radius of each particle (m): the ground holds centres at `z ≥ r`, two particles
    /// keep `r_i + r_j` apart.
    pub radius: f64,
    /// Coulomb friction coefficient against the table and between particles.
    pub friction: f64,
    /// Constraints.
    pub constraints: Vec<Distance>,
    /// Surface triangles (cloth grid, toy torso), counter-clockwise seen from +z at rest.
    pub triangles: Vec<[usize; 3]>,
    /// Chains (rope, limbs, tail).
    pub chains: Vec<Chain>,
    /// Grid size `(rows, cols)` of the cloth or the torso: particle `r * cols + c`.
    pub grid: Option<(usize, usize)>,
}

/// Materials, chosen so that objects rest on the table without creeping (bending force below
/// static friction at the initial curvatures) yet fold and straighten when pulled.
pub mod material {
    /// Rope: 41 particles × 1 cm, 30 g.
    pub const ROPE_MASS: f64 = 0.03;
    /// Rope thickness radius (m).
    pub const ROPE_RADIUS: f64 = 0.005;
    /// Rope bending compliance (m/N) across two segments.
    pub const ROPE_BEND: f64 = 1.0;
    /// Cloth: 100 g.
    pub const CLOTH_MASS: f64 = 0.1;
    /// Cloth contact radius (m): self-collision keeps layers 1 cm apart.
    pub const CLOTH_RADIUS: f64 = 0.005;
    /// Cloth shear compliance (m/N).
    pub const CLOTH_SHEAR: f64 = 0.01;
    /// Cloth bending compliance (m/N): a towel, limp.
    pub const CLOTH_BEND: f64 = 20.0;
    /// Plush toy radius (m): 1.8 cm thick.
    pub const TOY_RADIUS: f64 = 0.009;
    /// Toy torso bending compliance (m/N): a stuffed body keeps its shape.
    pub const TOY_TORSO_BEND: f64 = 0.001;
    /// Toy limb bending compliance (m/N): floppy.
    pub const TOY_LIMB_BEND: f64 = 0.5;
    /// Friction coefficient of every object on the table.
    pub const FRICTION: f64 = 0.5;
}

fn distance(positions: &[Point3<f64>], i: usize, j: usize, compliance: f64) -> Distance {
    Distance {
        i: i as u32,
        j: j as u32,
        rest: (positions[i] - positions[j]).norm(),
        compliance,
    }
}

/// A rope through `points` (consecutive points one segment apart). Bending constraints
/// (across two) rest at twice the segment length: a rope left alone tends to straight, held
/// by friction.
pub fn rope(points: Vec<Point3<f64>>, segment: f64) -> BodySpec {
    let n = points.len();
    let mut constraints = Vec::new();
    for i in 0..n - 1 {
        constraints.push(Distance {
            i: i as u32,
            j: i as u32 + 1,
            rest: segment,
            compliance: 0.0,
        });
    }
    for i in 0..n.saturating_sub(2) {
        constraints.push(Distance {
            i: i as u32,
            j: i as u32 + 2,
            rest: 2.0 * segment,
            compliance: material::ROPE_BEND,
        });
    }
    BodySpec {
        kind: ObjectKind::Rope,
        masses: vec![material::ROPE_MASS / n as f64; n],
        radius: material::ROPE_RADIUS,
        friction: material::FRICTION,
        constraints,
        triangles: Vec::new(),
        chains: vec![Chain {
            name: "rope",
            anchor: None,
            particles: (0..n).collect(),
        }],
        grid: Some((1, n)),
        positions: points,
    }
}

/// Structural, shear and bending constraints and triangles of a `rows × cols` grid.
fn grid_constraints(
    positions: &[Point3<f64>],
    rows: usize,
    cols: usize,
    shear: f64,
    bend: f64,
    out: &mut Vec<Distance>,
    triangles: &mut Vec<[usize; 3]>,
) {
    let id = |r: usize, c: usize| r * cols + c;
    for r in 0..rows {
        for c in 0..cols {
            if c + 1 < cols {
                out.push(distance(positions, id(r, c), id(r, c + 1), 0.0));
            }
            if r + 1 < rows {
                out.push(distance(positions, id(r, c), id(r + 1, c), 0.0));
            }
        }
    }
    for r in 0..rows.saturating_sub(1) {
        for c in 0..cols.saturating_sub(1) {
            out.push(distance(positions, id(r, c), id(r + 1, c + 1), shear));
            out.push(distance(positions, id(r + 1, c), id(r, c + 1), shear));
            triangles.push([id(r, c), id(r, c + 1), id(r + 1, c + 1)]);
            triangles.push([id(r, c), id(r + 1, c + 1), id(r + 1, c)]);
        }
    }
    for r in 0..rows {
        for c in 0..cols {
            if c + 2 < cols {
                out.push(distance(positions, id(r, c), id(r, c + 2), bend));
            }
            if r + 2 < rows {
                out.push(distance(positions, id(r, c), id(r + 2, c), bend));
            }
        }
    }
}

/// A flat cloth of `rows × cols` particles at `origin + r·along_rows + c·along_cols`.
pub fn cloth(
    origin: Point3<f64>,
    along_rows: Vector3<f64>,
    along_cols: Vector3<f64>,
    rows: usize,
    cols: usize,
) -> BodySpec {
    let mut positions = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            positions.push(origin + along_rows * r as f64 + along_cols * c as f64);
        }
    }
    let mut constraints = Vec::new();
    let mut triangles = Vec::new();
    grid_constraints(
        &positions,
        rows,
        cols,
        material::CLOTH_SHEAR,
        material::CLOTH_BEND,
        &mut constraints,
        &mut triangles,
    );
    let n = positions.len();
    BodySpec {
        kind: ObjectKind::Cloth,
        masses: vec![material::CLOTH_MASS / n as f64; n],
        radius: material::CLOTH_RADIUS,
        friction: material::FRICTION,
        constraints,
        triangles,
        chains: Vec::new(),
        grid: Some((rows, cols)),
        positions,
    }
}

/// The plush toy's shape in its own frame (x towards the head, y to its left, metres).
pub mod toy_shape {
    /// Torso grid: rows along x, columns along y.
    pub const TORSO_ROWS: usize = 5;
    /// Torso columns.
    pub const TORSO_COLS: usize = 4;
    /// Torso particle spacing (m): an 8 × 6 cm body.
    pub const TORSO_SPACING: f64 = 0.02;
    /// Particles per limb (excluding the torso anchor).
    pub const LIMB_PARTICLES: usize = 4;
    /// Limb link length (m).
    pub const LIMB_LINK: f64 = 0.018;
    /// Particles in the tail.
    pub const TAIL_PARTICLES: usize = 3;
    /// Tail link length (m).
    pub const TAIL_LINK: f64 = 0.014;
    /// Torso particle mass (kg).
    pub const TORSO_MASS: f64 = 0.005;
    /// Limb particle mass (kg).
    pub const LIMB_MASS: f64 = 0.003;
    /// Chains: name, anchor (row, col) on the torso, canonical direction (radians from +x).
    pub const CHAINS: [(&str, (usize, usize), f64); 5] = [
        ("front_left", (4, 3), 1.0),
        ("front_right", (4, 0), -1.0),
        ("back_left", (0, 3), 2.2),
        ("back_right", (0, 0), -2.2),
        ("tail", (0, 1), std::f64::consts::PI),
    ];
}

/// A plush toy: torso centre `centre`, heading `yaw` (radians), and per chain the angle
/// offset from its canonical direction and a curl (radians per link).
pub fn toy(centre: Point3<f64>, yaw: f64, poses: &[(f64, f64); 5]) -> BodySpec {
    use toy_shape::*;
    let (s, c) = yaw.sin_cos();
    let to_world = |x: f64, y: f64| centre + Vector3::new(c * x - s * y, s * x + c * y, 0.0);
    let mut positions = Vec::new();
    let mut masses = Vec::new();
    for r in 0..TORSO_ROWS {
        for col in 0..TORSO_COLS {
            let x = (r as f64 - (TORSO_ROWS - 1) as f64 / 2.0) * TORSO_SPACING;
            let y = (col as f64 - (TORSO_COLS - 1) as f64 / 2.0) * TORSO_SPACING;
            positions.push(to_world(x, y));
            masses.push(TORSO_MASS);
        }
    }
    let mut constraints = Vec::new();
    let mut triangles = Vec::new();
    grid_constraints(
        &positions,
        TORSO_ROWS,
        TORSO_COLS,
        material::TOY_TORSO_BEND,
        material::TOY_TORSO_BEND,
        &mut constraints,
        &mut triangles,
    );
    let mut chains = Vec::new();
    for (k, &(name, (ar, ac), dir)) in CHAINS.iter().enumerate() {
        let anchor = ar * TORSO_COLS + ac;
        let (links, link) = if name == "tail" {
            (TAIL_PARTICLES, TAIL_LINK)
        } else {
            (LIMB_PARTICLES, LIMB_LINK)
        };
        let (offset, curl) = poses[k];
        let mut angle = yaw + dir + offset;
        let mut p = positions[anchor];
        let mut particles = Vec::new();
        let mut prev2 = None;
        let mut prev = anchor;
        for _ in 0..links {
            p += Vector3::new(angle.cos(), angle.sin(), 0.0) * link;
            angle += curl;
            let idx = positions.len();
            positions.push(p);
            masses.push(LIMB_MASS);
            constraints.push(Distance {
                i: prev as u32,
                j: idx as u32,
                rest: link,
                compliance: 0.0,
            });
            // Bending rests straight: a limb left alone keeps its pose by friction only.
            if let Some(p2) = prev2 {
                constraints.push(Distance {
                    i: p2 as u32,
                    j: idx as u32,
                    rest: 2.0 * link,
                    compliance: material::TOY_LIMB_BEND,
                });
            }
            prev2 = Some(prev);
            prev = idx;
            particles.push(idx);
        }
        chains.push(Chain {
            name,
            anchor: Some(anchor),
            particles,
        });
    }
    BodySpec {
        kind: ObjectKind::Toy,
        positions,
        masses,
        radius: material::TOY_RADIUS,
        friction: material::FRICTION,
        constraints,
        triangles,
        chains,
        grid: Some((TORSO_ROWS, TORSO_COLS)),
    }
}
