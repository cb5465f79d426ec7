//! A small ray-casting renderer: anti-aliased, shaded RGB and metric depth of scenes made
//! of spheres, capsules and triangles (rope segments, cloth triangles, toy limbs, arm links,
//! the table).
//!
//! Why our own: the scenes are a few hundred primitives at 256–640 px, rendered headless,
//! deterministically and bit-identically for a seed, with per-layer masks (arm only,
//! object only) that the world model needs. A GPU rasteriser (wgpu) or a bound engine
//! would add a display/driver dependency CI lacks and break bit-exactness across machines;
//! per-primitive screen bounds keep a CPU ray caster fast enough (see the bench).

use nalgebra::{Point3, Vector3};

use super::camera::PinholeCamera;

/// Which part of the scene a primitive belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The table and the floor.
    Table,
    /// The deformable object.
    Object,
    /// The robot arm.
    Arm,
}

/// Geometry of one primitive (world frame, metres).
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// A ball.
    Sphere {
        /// Centre.
        center: Point3<f64>,
        /// Radius.
        radius: f64,
    },
    /// A segment with a radius (rope segments, limbs, arm links).
    Capsule {
        /// One end.
        a: Point3<f64>,
        /// Other end.
        b: Point3<f64>,
        /// Radius.
        radius: f64,
    },
    /// A double-sided triangle.
    Triangle {
        /// Corners.
        corners: [Point3<f64>; 3],
    },
}

/// A shape with a colour and a layer.
#[derive(Debug, Clone, Copy)]
pub struct Primitive {
    /// Geometry.
    pub shape: Shape,
    /// Linear RGB in [0, 1].
    pub color: [f32; 3],
    /// Which layer it is drawn in.
    pub layer: Layer,
}

/// What to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderMode {
    /// Everything: what the camera sees.
    Full,
    /// The arm alone on a white background (the world model's conditioning video).
    ArmOnWhite,
    /// Table and object without the arm (the world model's object-only frames).
    ObjectOnly,
}

impl RenderMode {
    fn draws(self, layer: Layer) -> bool {
        match self {
            RenderMode::Full => true,
            RenderMode::ArmOnWhite => layer == Layer::Arm,
            RenderMode::ObjectOnly => layer != Layer::Arm,
        }
    }

    fn background(self) -> [f32; 3] {
        match self {
            RenderMode::ArmOnWhite => [1.0, 1.0, 1.0],
            _ => [0.18, 0.19, 0.21],
        }
    }
}

/// A rendered image: rgb8 pixels, row-major, and depth in metres along the optical axis
/// (`f32::INFINITY` where nothing was hit).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub rgb: Vec<u8>,
    /// `width * height` depths.
    pub depth: Vec<f32>,
}

/// Rendering options.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// Supersampling factor per axis (2 → 4 samples per pixel).
    pub supersample: u32,
    /// Direction towards the light (world frame).
    pub light: Vector3<f64>,
    /// Ambient light fraction.
    pub ambient: f32,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            supersample: 2,
            light: Vector3::new(0.3, -0.4, 1.0).normalize(),
            ambient: 0.35,
        }
    }
}

fn ray_sphere(
    o: &Point3<f64>,
    d: &Vector3<f64>,
    c: &Point3<f64>,
    r: f64,
) -> Option<(f64, Vector3<f64>)> {
    let oc = o - c;
    let b = oc.dot(d);
    let h = b * b - (oc.norm_squared() - r * r);
    if h < 0.0 {
        return None;
    }
    let t = -b - h.sqrt();
    (t > 0.0).then(|| (t, (o + d * t - c) / r))
}

/// Ray against a capsule: the cylinder body first, then the end spheres.
fn ray_capsule(
    o: &Point3<f64>,
    d: &Vector3<f64>,
    pa: &Point3<f64>,
    pb: &Point3<f64>,
    r: f64,
) -> Option<(f64, Vector3<f64>)> {
    let ba = pb - pa;
    let oa = o - pa;
    let baba = ba.norm_squared();
    if baba < 1e-18 {
        return ray_sphere(o, d, pa, r);
    }
    let bard = ba.dot(d);
    let baoa = ba.dot(&oa);
    let rdoa = d.dot(&oa);
    let oaoa = oa.norm_squared();
    let a = baba - bard * bard;
    let b = baba * rdoa - baoa * bard;
    let c = baba * oaoa - baoa * baoa - r * r * baba;
    let h = b * b - a * c;
    if h < 0.0 {
        return None;
    }
    if a.abs() > 1e-12 {
        let t = (-b - h.sqrt()) / a;
        let y = baoa + t * bard;
        if t > 0.0 && y > 0.0 && y < baba {
            let n = (oa + d * t - ba * (y / baba)) / r;
            return Some((t, n));
        }
    }
    // End caps: whichever sphere the ray reaches first.
    [ray_sphere(o, d, pa, r), ray_sphere(o, d, pb, r)]
        .into_iter()
        .flatten()
        .min_by(|x, y| x.0.total_cmp(&y.0))
}

fn ray_triangle(
    o: &Point3<f64>,
    d: &Vector3<f64>,
    tri: &[Point3<f64>; 3],
) -> Option<(f64, Vector3<f64>)> {
    let e1 = tri[1] - tri[0];
    let e2 = tri[2] - tri[0];
    let p = d.cross(&e2);
    let det = e1.dot(&p);
    if det.abs() < 1e-14 {
        return None;
    }
    let inv = 1.0 / det;
    let s = o - tri[0];
    let u = s.dot(&p) * inv;
    if !(0.0..=1.0).contains(&u) {
        return None;
    }
    let q = s.cross(&e1);
    let v = d.dot(&q) * inv;
    if v < 0.0 || u + v > 1.0 {
        return None;
    }
    let t = e2.dot(&q) * inv;
    if t <= 0.0 {
        return None;
    }
    let mut n = e1.cross(&e2).normalize();
    if n.dot(d) > 0.0 {
        n = -n; // double-sided: face the viewer
    }
    Some((t, n))
}

impl Shape {
    fn bounds(&self) -> (Point3<f64>, f64) {
        match *self {
            Shape::Sphere { center, radius } => (center, radius),
            Shape::Capsule { a, b, radius } => {
                (nalgebra::center(&a, &b), 0.5 * (b - a).norm() + radius)
            }
            Shape::Triangle { corners: [a, b, c] } => {
                let m = Point3::from((a.coords + b.coords + c.coords) / 3.0);
                let r = [a, b, c].iter().map(|p| (p - m).norm()).fold(0.0, f64::max);
                (m, r)
            }
        }
    }

    fn intersect(&self, o: &Point3<f64>, d: &Vector3<f64>) -> Option<(f64, Vector3<f64>)> {
        match self {
            Shape::Sphere { center, radius } => ray_sphere(o, d, center, *radius),
            Shape::Capsule { a, b, radius } => ray_capsule(o, d, a, b, *radius),
            Shape::Triangle { corners } => ray_triangle(o, d, corners),
        }
    }
}

/// Renders `primitives` seen by `camera`.
pub fn render(
    primitives: &[Primitive],
    camera: &PinholeCamera,
    mode: RenderMode,
    options: &RenderOptions,
) -> Frame {
    render_modes(primitives, camera, &[mode], options)
        .pop()
        .expect("one frame per mode")
}

/// Renders `primitives` once per mode in `modes`, casting each ray once: the simulator's
/// camera frame and object-only frame cost little more than one frame.
pub fn render_modes(
    primitives: &[Primitive],
    camera: &PinholeCamera,
    modes: &[RenderMode],
    options: &RenderOptions,
) -> Vec<Frame> {
    let s = options.supersample.max(1) as usize;
    let (w, h) = (camera.width as usize, camera.height as usize);
    let (sw, sh) = (w * s, h * s);
    let origin = Point3::from(camera.world_from_camera.translation.vector);
    let axis = camera.world_from_camera.rotation * Vector3::z();
    // Per mode and sample: nearest ray parameter and its colour.
    let mut best_t = vec![vec![f64::INFINITY; sw * sh]; modes.len()];
    let mut color: Vec<Vec<[f32; 3]>> = modes
        .iter()
        .map(|m| vec![m.background(); sw * sh])
        .collect();
    let dirs: Vec<Vector3<f64>> = (0..sh)
        .flat_map(|y| (0..sw).map(move |x| (x, y)))
        .map(|(x, y)| {
            camera
                .ray((x as f64 + 0.5) / s as f64, (y as f64 + 0.5) / s as f64)
                .1
        })
        .collect();
    let light = options.light.normalize();
    for prim in primitives {
        let drawn: Vec<usize> = (0..modes.len())
            .filter(|&k| modes[k].draws(prim.layer))
            .collect();
        if drawn.is_empty() {
            continue;
        }
        let (center, radius) = prim.shape.bounds();
        // Screen bounds of the bounding sphere (whole image when it reaches the camera).
        let (x0, x1, y0, y1) = match camera.project(&center) {
            Some((u, v, z)) if z - radius > 1e-3 => {
                let ru = camera.fx * radius / (z - radius) + 1.0;
                let rv = camera.fy * radius / (z - radius) + 1.0;
                let clamp =
                    |a: f64, hi: usize| (a * s as f64).floor().clamp(0.0, hi as f64) as usize;
                (
                    clamp(u - ru, sw),
                    clamp(u + ru + 1.0, sw),
                    clamp(v - rv, sh),
                    clamp(v + rv + 1.0, sh),
                )
            }
            Some(_) | None if (center - origin).dot(&axis) + radius > 0.0 => (0, sw, 0, sh),
            _ => continue,
        };
        for y in y0..y1 {
            for x in x0..x1 {
                let i = y * sw + x;
                if let Some((t, n)) = prim.shape.intersect(&origin, &dirs[i]) {
                    for &k in &drawn {
                        if t < best_t[k][i] {
                            best_t[k][i] = t;
                            let lambert = n.dot(&light).max(0.0) as f32;
                            let l = options.ambient + (1.0 - options.ambient) * lambert;
                            color[k][i] = [prim.color[0] * l, prim.color[1] * l, prim.color[2] * l];
                        }
                    }
                }
            }
        }
    }
    best_t
        .iter()
        .zip(&color)
        .map(|(best_t, color)| resolve(camera, s, &dirs, &axis, best_t, color))
        .collect()
}

/// Averages the s×s samples of each pixel (anti-aliasing); depth from the sample nearest
/// the pixel centre so silhouettes get no blended "flying" depths.
fn resolve(
    camera: &PinholeCamera,
    s: usize,
    dirs: &[Vector3<f64>],
    axis: &Vector3<f64>,
    best_t: &[f64],
    color: &[[f32; 3]],
) -> Frame {
    let (w, h) = (camera.width as usize, camera.height as usize);
    let sw = w * s;
    let mut rgb = vec![0u8; w * h * 3];
    let mut depth = vec![f32::INFINITY; w * h];
    let to_srgb8 = |c: f32| -> u8 {
        let c = c.clamp(0.0, 1.0);
        let s = if c <= 0.003_130_8 {
            12.92 * c
        } else {
            1.055 * c.powf(1.0 / 2.4) - 0.055
        };
        (s * 255.0 + 0.5) as u8
    };
    let mid = s / 2;
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for sy in 0..s {
                for sx in 0..s {
                    let c = color[(y * s + sy) * sw + x * s + sx];
                    acc[0] += c[0];
                    acc[1] += c[1];
                    acc[2] += c[2];
                }
            }
            let n = (s * s) as f32;
            let o = (y * w + x) * 3;
            rgb[o] = to_srgb8(acc[0] / n);
            rgb[o + 1] = to_srgb8(acc[1] / n);
            rgb[o + 2] = to_srgb8(acc[2] / n);
            let i = (y * s + mid) * sw + x * s + mid;
            if best_t[i].is_finite() {
                depth[y * w + x] = (best_t[i] * dirs[i].dot(axis)) as f32;
            }
        }
    }
    Frame {
        width: camera.width,
        height: camera.height,
        rgb,
        depth,
    }
}

/// The table top as two triangles plus a floor far below, in the table layer.
pub fn table(x: (f64, f64), y: (f64, f64), z: f64, color: [f32; 3]) -> Vec<Primitive> {
    let c = [
        Point3::new(x.0, y.0, z),
        Point3::new(x.1, y.0, z),
        Point3::new(x.1, y.1, z),
        Point3::new(x.0, y.1, z),
    ];
    vec![
        Primitive {
            shape: Shape::Triangle {
                corners: [c[0], c[1], c[2]],
            },
            color,
            layer: Layer::Table,
        },
        Primitive {
            shape: Shape::Triangle {
                corners: [c[0], c[2], c[3]],
            },
            color,
            layer: Layer::Table,
        },
    ]
}
