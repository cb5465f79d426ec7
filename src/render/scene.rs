//! Turns the simulated world and the arm's link poses into renderer primitives.

use nalgebra::{Isometry3, Point3};

use super::raster::{table, Layer, Primitive, Shape};
use crate::sim::bodies::ObjectKind;
use crate::sim::World;

/// Table-top extent drawn (world frame, metres) and its colour.
pub const TABLE_X: (f64, f64) = (0.05, 1.0);
/// See [`TABLE_X`].
pub const TABLE_Y: (f64, f64) = (-0.6, 0.6);
const TABLE_COLOR: [f32; 3] = [0.52, 0.43, 0.33];

fn object_color(kind: ObjectKind) -> [f32; 3] {
    match kind {
        ObjectKind::Rope => [0.80, 0.12, 0.10],
        ObjectKind::Cloth => [0.15, 0.35, 0.80],
        ObjectKind::Toy => [0.85, 0.62, 0.20],
    }
}

/// The table and every object of `world`: chains as capsules, surfaces as triangles.
pub fn world_primitives(world: &World) -> Vec<Primitive> {
    let mut prims = table(TABLE_X, TABLE_Y, 0.0, TABLE_COLOR);
    let pos = world.positions();
    for obj in world.objects() {
        let color = object_color(obj.kind);
        let r = obj.radius.max(0.002);
        for tri in &obj.triangles {
            let corners = [pos[tri[0]], pos[tri[1]], pos[tri[2]]];
            prims.push(Primitive {
                shape: Shape::Triangle { corners },
                color,
                layer: Layer::Object,
            });
        }
        for chain in &obj.chains {
            let mut pts: Vec<Point3<f64>> = Vec::with_capacity(chain.particles.len() + 1);
            if let Some(a) = chain.anchor {
                pts.push(pos[a]);
            }
            pts.extend(chain.particles.iter().map(|&i| pos[i]));
            for w in pts.windows(2) {
                prims.push(Primitive {
                    shape: Shape::Capsule {
                        a: w[0],
                        b: w[1],
                        radius: r,
                    },
                    color,
                    layer: Layer::Object,
                });
            }
            if pts.len() == 1 {
                prims.push(Primitive {
                    shape: Shape::Sphere {
                        center: pts[0],
                        radius: r,
                    },
                    color,
                    layer: Layer::Object,
                });
            }
        }
        if obj.triangles.is_empty() && obj.chains.is_empty() {
            for i in obj.particles.clone() {
                prims.push(Primitive {
                    shape: Shape::Sphere {
                        center: pos[i],
                        radius: r,
                    },
                    color,
                    layer: Layer::Object,
                });
            }
        }
    }
    prims
}

/// Capsules along the arm: one per consecutive pair of link origins (world frame), with
/// radii tapering from base to hand, plus two finger pads at the TCP.
pub fn arm_primitives(world_from_links: &[Isometry3<f64>], gripper_open: bool) -> Vec<Primitive> {
    const ARM: [f32; 3] = [0.93, 0.93, 0.93];
    const JOINT: [f32; 3] = [0.25, 0.25, 0.28];
    let mut prims = Vec::new();
    let n = world_from_links.len();
    let origins: Vec<Point3<f64>> = world_from_links
        .iter()
        .map(|p| Point3::from(p.translation.vector))
        .collect();
    for (k, w) in origins.windows(2).enumerate() {
        if (w[1] - w[0]).norm() < 1e-6 {
            continue;
        }
        let radius = 0.06 - 0.03 * k as f64 / n.max(1) as f64;
        prims.push(Primitive {
            shape: Shape::Capsule {
                a: w[0],
                b: w[1],
                radius,
            },
            color: ARM,
            layer: Layer::Arm,
        });
        prims.push(Primitive {
            shape: Shape::Sphere {
                center: w[0],
                radius: radius * 1.05,
            },
            color: JOINT,
            layer: Layer::Arm,
        });
    }
    if let Some(tcp) = world_from_links.last() {
        let opening = if gripper_open { 0.04 } else { 0.01 };
        for side in [-1.0, 1.0] {
            let a = tcp * Point3::new(0.0, side * opening, -0.05);
            let b = tcp * Point3::new(0.0, side * opening, 0.0);
            prims.push(Primitive {
                shape: Shape::Capsule {
                    a,
                    b,
                    radius: 0.008,
                },
                color: JOINT,
                layer: Layer::Arm,
            });
        }
    }
    prims
}

/// The built-in world's camera: in front of the table, opposite the arm, looking down at
/// the work area (the arm's base is at the world origin, the table top at z = 0). The
/// whole region objects and actions use (`sim::tasks::TABLE_X/Y` plus 2 cm) is in view
/// up to 5 cm above the table, with at least 4 px to spare at 256×256: an action there is
/// never off the image (`tests/render.rs`).
pub fn default_camera(width: u32, height: u32) -> super::PinholeCamera {
    super::PinholeCamera::look_at(
        width,
        height,
        54.0,
        Point3::new(1.0, 0.0, 0.8),
        Point3::new(0.5, 0.0, 0.0),
        nalgebra::Vector3::z(),
    )
}

/// Everything at once: world, and the arm at joint positions `q` of `model`.
pub fn full_scene(
    world: &World,
    model: &crate::robot::ArmModel,
    q: &[f64],
    gripper_open: bool,
) -> Vec<Primitive> {
    let mut prims = world_primitives(world);
    let poses: Vec<Isometry3<f64>> = model.link_poses(q).into_iter().map(|(_, p)| p).collect();
    prims.extend(arm_primitives(&poses, gripper_open));
    prims
}
