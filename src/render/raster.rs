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
///
/// The sample rays and the leading table primitives' hits are the same in every frame of
/// a scene: they come from a per-thread cache ([`Prepared`]), so a frame pays only for
/// the object and the arm. Frames are bit-identical to casting everything each time (the
/// table is drawn by the same code into a fresh buffer, and every mode that draws the
/// table starts from that buffer; `tests/render.rs` compares with
/// [`render_modes_uncached`]).
pub fn render_modes(
    primitives: &[Primitive],
    camera: &PinholeCamera,
    modes: &[RenderMode],
    options: &RenderOptions,
) -> Vec<Frame> {
    render_modes_with(primitives, camera, modes, options, true)
}

/// [`render_modes`] without the per-thread cache: every ray and primitive cast anew. The
/// reference the cache is tested against (`tests/render.rs`).
#[doc(hidden)]
pub fn render_modes_uncached(
    primitives: &[Primitive],
    camera: &PinholeCamera,
    modes: &[RenderMode],
    options: &RenderOptions,
) -> Vec<Frame> {
    render_modes_with(primitives, camera, modes, options, false)
}

fn render_modes_with(
    primitives: &[Primitive],
    camera: &PinholeCamera,
    modes: &[RenderMode],
    options: &RenderOptions,
    cached: bool,
) -> Vec<Frame> {
    let s = options.supersample.max(1) as usize;
    let n = camera.width as usize * s * camera.height as usize * s;
    let lead = if cached {
        primitives
            .iter()
            .take_while(|p| p.layer == Layer::Table)
            .count()
    } else {
        0
    };
    let prepared = if cached {
        prepared(camera, s, options, &primitives[..lead])
    } else {
        std::rc::Rc::new(Prepared::new(
            camera,
            s,
            options,
            &[],
            sample_rays(camera, s),
        ))
    };
    let view = View::new(camera, s, options, &prepared.dirs);
    // Per mode and sample: nearest ray parameter and its colour, starting from the table's,
    // in this thread's buffers of the last call (fresh ones would cost a page fault per
    // 4 KiB on every frame).
    let mut buffers = SCRATCH.with(|c| std::mem::take(&mut *c.borrow_mut()));
    buffers.resize_with(modes.len().max(buffers.len()), Default::default);
    for (m, (best_t, color)) in modes.iter().zip(buffers.iter_mut()) {
        let bg = m.background();
        best_t.clear();
        color.clear();
        if lead > 0 && m.draws(Layer::Table) {
            best_t.extend_from_slice(&prepared.table_t);
            color.extend(
                prepared
                    .table_t
                    .iter()
                    .zip(&prepared.table_color)
                    .map(|(t, c)| if *t < f64::INFINITY { *c } else { bg }),
            );
        } else {
            best_t.resize(n, f64::INFINITY);
            color.resize(n, bg);
        }
    }
    for prim in &primitives[lead..] {
        let mut targets: Vec<(&mut [f64], &mut [[f32; 3]])> = buffers
            .iter_mut()
            .zip(modes)
            .filter(|(_, m)| m.draws(prim.layer))
            .map(|((t, c), _)| (t.as_mut_slice(), c.as_mut_slice()))
            .collect();
        view.draw(prim, &mut targets);
    }
    let frames = buffers[..modes.len()]
        .iter()
        .map(|(best_t, color)| resolve(camera, s, &prepared.dirs, &view.axis, best_t, color))
        .collect();
    SCRATCH.with(|c| *c.borrow_mut() = buffers);
    frames
}

/// Per mode: each sample's nearest ray parameter and its colour.
type SampleBuffers = Vec<(Vec<f64>, Vec<[f32; 3]>)>;

thread_local! {
    /// The sample buffers of this thread's last [`render_modes`] call.
    static SCRATCH: std::cell::RefCell<SampleBuffers> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// What every primitive's drawing needs of the camera and the options.
struct View<'a> {
    camera: &'a PinholeCamera,
    s: usize,
    origin: Point3<f64>,
    axis: Vector3<f64>,
    light: Vector3<f64>,
    ambient: f32,
    dirs: &'a [Vector3<f64>],
}

impl<'a> View<'a> {
    fn new(
        camera: &'a PinholeCamera,
        s: usize,
        options: &RenderOptions,
        dirs: &'a [Vector3<f64>],
    ) -> Self {
        Self {
            camera,
            s,
            origin: Point3::from(camera.world_from_camera.translation.vector),
            axis: camera.world_from_camera.rotation * Vector3::z(),
            light: options.light.normalize(),
            ambient: options.ambient,
            dirs,
        }
    }

    /// Casts the samples in `prim`'s screen bounds against it; where it is nearer than
    /// what a target holds, the target takes its depth and shaded colour.
    fn draw(&self, prim: &Primitive, targets: &mut [(&mut [f64], &mut [[f32; 3]])]) {
        if targets.is_empty() {
            return;
        }
        let (camera, s) = (self.camera, self.s);
        let (sw, sh) = (camera.width as usize * s, camera.height as usize * s);
        let (center, radius) = prim.shape.bounds();
        // Screen bounds of the bounding sphere, exact: along u, the two planes through the
        // camera's centre and its y axis that touch the ball (the same along v). A ball off
        // the optical axis projects to an ellipse stretched outwards; before session 53 the
        // bounds were the on-axis disc, and a user camera's wide view lost rows of a
        // primitive near the image's edge. An axis whose touching planes do not both lie in
        // front of the camera (the ball reaches it or beside it) is bounded by the image.
        let p = camera.world_from_camera.inverse_transform_point(&center);
        if p.z + radius <= 0.0 {
            return;
        }
        let extent = |a: f64, f: f64, c: f64, n: usize| -> (usize, usize) {
            let rho = a.hypot(p.z);
            let limit = std::f64::consts::FRAC_PI_2 - 1e-3;
            if rho > radius * (1.0 + 1e-9) {
                let (mid, half) = (a.atan2(p.z), (radius / rho).asin());
                if mid - half > -limit && mid + half < limit {
                    let clamp = |a: f64| (a * s as f64).floor().clamp(0.0, n as f64) as usize;
                    let (lo, hi) = (c + f * (mid - half).tan(), c + f * (mid + half).tan());
                    return (clamp(lo - 1.0), clamp(hi + 2.0));
                }
            }
            (0, n)
        };
        let (x0, x1) = extent(p.x, camera.fx, camera.cx, sw);
        let (y0, y1) = extent(p.y, camera.fy, camera.cy, sh);
        for y in y0..y1 {
            for x in x0..x1 {
                let i = y * sw + x;
                if let Some((t, n)) = prim.shape.intersect(&self.origin, &self.dirs[i]) {
                    for (best_t, color) in targets.iter_mut() {
                        if t < best_t[i] {
                            best_t[i] = t;
                            let lambert = n.dot(&self.light).max(0.0) as f32;
                            let l = self.ambient + (1.0 - self.ambient) * lambert;
                            color[i] = [prim.color[0] * l, prim.color[1] * l, prim.color[2] * l];
                        }
                    }
                }
            }
        }
    }
}

/// What stays the same from frame to frame of one scene: the sample rays of a camera at a
/// supersampling factor, and the hits of the scene's leading table primitives.
struct Prepared {
    camera: PinholeCamera,
    s: usize,
    dirs: Vec<Vector3<f64>>,
    /// The table primitives, light and ambient the table buffers were made with, as bits.
    table_key: Vec<u64>,
    /// Per sample: the table's ray parameter (infinite where no table primitive is hit)
    /// and its shaded colour (meaningful where the parameter is finite).
    table_t: Vec<f64>,
    table_color: Vec<[f32; 3]>,
}

impl Prepared {
    fn new(
        camera: &PinholeCamera,
        s: usize,
        options: &RenderOptions,
        table: &[Primitive],
        dirs: Vec<Vector3<f64>>,
    ) -> Self {
        let n = dirs.len();
        let mut table_t = vec![f64::INFINITY; n];
        let mut table_color = vec![[0.0f32; 3]; n];
        let view = View::new(camera, s, options, &dirs);
        for prim in table {
            view.draw(prim, &mut [(&mut table_t[..], &mut table_color[..])]);
        }
        Self {
            camera: camera.clone(),
            s,
            table_key: table_key(table, options),
            dirs,
            table_t,
            table_color,
        }
    }
}

/// The unit ray of every sample (row-major, `s`×`s` per pixel).
fn sample_rays(camera: &PinholeCamera, s: usize) -> Vec<Vector3<f64>> {
    let (sw, sh) = (camera.width as usize * s, camera.height as usize * s);
    (0..sh)
        .flat_map(|y| (0..sw).map(move |x| (x, y)))
        .map(|(x, y)| {
            camera
                .ray((x as f64 + 0.5) / s as f64, (y as f64 + 0.5) / s as f64)
                .1
        })
        .collect()
}

thread_local! {
    static PREPARED: std::cell::RefCell<Option<std::rc::Rc<Prepared>>> =
        const { std::cell::RefCell::new(None) };
}

/// Every number a table buffer depends on, as bits: an exact key.
fn table_key(table: &[Primitive], options: &RenderOptions) -> Vec<u64> {
    let mut key: Vec<u64> = vec![
        options.light.x.to_bits(),
        options.light.y.to_bits(),
        options.light.z.to_bits(),
        u64::from(options.ambient.to_bits()),
    ];
    for p in table {
        let coords: Vec<f64> = match p.shape {
            Shape::Sphere { center, radius } => vec![0.0, center.x, center.y, center.z, radius],
            Shape::Capsule { a, b, radius } => vec![1.0, a.x, a.y, a.z, b.x, b.y, b.z, radius],
            Shape::Triangle { corners } => std::iter::once(2.0)
                .chain(corners.iter().flat_map(|c| [c.x, c.y, c.z]))
                .collect(),
        };
        key.extend(coords.iter().map(|v| v.to_bits()));
        key.extend(p.color.iter().map(|c| u64::from(c.to_bits())));
    }
    key
}

/// This thread's [`Prepared`] for the camera, factor and table, made anew when any differs.
fn prepared(
    camera: &PinholeCamera,
    s: usize,
    options: &RenderOptions,
    table: &[Primitive],
) -> std::rc::Rc<Prepared> {
    let key = table_key(table, options);
    PREPARED.with(|cell| {
        let mut slot = cell.borrow_mut();
        if let Some(p) = slot
            .as_ref()
            .filter(|p| p.s == s && p.camera == *camera && p.table_key == key)
        {
            return p.clone();
        }
        // Reuse the rays when only the table changed.
        let dirs = match slot.take() {
            Some(p) if p.s == s && p.camera == *camera => {
                std::rc::Rc::try_unwrap(p).map_or_else(|p| p.dirs.clone(), |p| p.dirs)
            }
            _ => sample_rays(camera, s),
        };
        let p = std::rc::Rc::new(Prepared::new(camera, s, options, table, dirs));
        *slot = Some(p.clone());
        p
    })
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
    // Most pixels repeat their neighbour's colour (background, flat table): per channel,
    // the last conversion is remembered (`powf` is most of this loop otherwise).
    let mut last: [Option<(u32, u8)>; 3] = [None; 3];
    let mut srgb = |ch: usize, c: f32| -> u8 {
        match last[ch] {
            Some((bits, v)) if bits == c.to_bits() => v,
            _ => {
                let v = to_srgb8(c);
                last[ch] = Some((c.to_bits(), v));
                v
            }
        }
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
            rgb[o] = srgb(0, acc[0] / n);
            rgb[o + 1] = srgb(1, acc[1] / n);
            rgb[o + 2] = srgb(2, acc[2] / n);
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
