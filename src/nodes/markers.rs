//! What the executor shows RViz of each action (`visualization_msgs/MarkerArray` on the
//! executor's `topics.markers`): where the gripper will close and open, the path its tool
//! point takes, what was decided, and where the executor believes the camera is. On a
//! new arm this is how a hand-eye pose or a table height that is off shows before the
//! arm moves (with the executor's `dry_run`, nothing moves at all).
//!
//! Every marker is in the arm's base frame (the executor's `base_frame`), the frame the
//! executor computes in, so RViz needs that frame in its TF tree and nothing else.

use nalgebra::{Isometry3, Point3, UnitQuaternion, Vector3};

use crate::msg::builtin_interfaces::Time;
use crate::msg::geometry_msgs::{Point, Pose, Quaternion};
use crate::msg::std_msgs::{ColorRGBA, Header};
use crate::msg::visualization_msgs::{Marker, MarkerArray};

/// The markers' namespace (RViz lists it under the display).
pub const NAMESPACE: &str = "dreamplan";

/// Marker ids, one per shape: each action's array replaces the last one's.
pub mod id {
    /// Where the gripper closes.
    pub const PICK: i32 = 1;
    /// Where it opens.
    pub const PLACE: i32 = 2;
    /// The tool point's path over the whole motion.
    pub const PATH: i32 = 3;
    /// What was decided, as text above the pick.
    pub const LABEL: i32 = 4;
    /// The camera's optical axis.
    pub const CAMERA: i32 = 5;
}

/// What became of the action shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Planned and sent to the arm.
    Sent,
    /// Planned and checked, not sent (the executor's `dry_run`).
    DryRun,
    /// Refused (the envelope, the plan, the depth): the points in red, no path.
    Refused,
}

/// One action as RViz is shown it: `pick` and `place` (m, base frame), the tool point's
/// `path` (empty when refused), the `label`, and the camera pose the executor uses.
pub struct ActionView<'a> {
    /// The base frame's name (the markers' `frame_id`).
    pub frame: &'a str,
    /// The markers' stamp (the executor's clock).
    pub stamp: Time,
    /// Where the gripper closes.
    pub pick: Point3<f64>,
    /// Where it opens.
    pub place: Point3<f64>,
    /// The tool point at each trajectory point.
    pub path: &'a [Point3<f64>],
    /// What became of it.
    pub shown: Shown,
    /// The text above the pick.
    pub label: &'a str,
    /// The camera's optical frame in the base frame.
    pub base_from_camera: &'a Isometry3<f64>,
}

fn rgba(r: f32, g: f32, b: f32) -> ColorRGBA {
    ColorRGBA { r, g, b, a: 1.0 }
}

fn point(p: &Point3<f64>) -> Point {
    Point {
        x: p.x,
        y: p.y,
        z: p.z,
    }
}

fn pose(at: &Point3<f64>, rotation: &UnitQuaternion<f64>) -> Pose {
    let q = rotation.quaternion();
    Pose {
        position: point(at),
        orientation: Quaternion {
            x: q.i,
            y: q.j,
            z: q.k,
            w: q.w,
        },
    }
}

/// The marker array for one action: a DELETEALL first (so a refused action's array does
/// not leave the last path standing), then the pick and place spheres, the path, the
/// label and the camera's axis.
pub fn action_markers(v: &ActionView) -> MarkerArray {
    let header = Header {
        stamp: v.stamp.clone(),
        frame_id: v.frame.to_string(),
    };
    let base = Marker {
        header: header.clone(),
        ns: NAMESPACE.into(),
        pose: pose(&Point3::origin(), &UnitQuaternion::identity()),
        ..Default::default()
    };
    let (pick_colour, place_colour) = match v.shown {
        Shown::Refused => (rgba(1.0, 0.1, 0.1), rgba(1.0, 0.1, 0.1)),
        Shown::Sent | Shown::DryRun => (rgba(0.1, 0.9, 0.2), rgba(0.2, 0.4, 1.0)),
    };
    let sphere = |id, at: &Point3<f64>, color| Marker {
        id,
        r#type: Marker::SPHERE,
        action: Marker::ADD,
        pose: pose(at, &UnitQuaternion::identity()),
        scale: crate::msg::geometry_msgs::Vector3 {
            x: 0.02,
            y: 0.02,
            z: 0.02,
        },
        color,
        ..base.clone()
    };
    let mut markers = vec![
        Marker {
            action: Marker::DELETEALL,
            ..base.clone()
        },
        sphere(id::PICK, &v.pick, pick_colour),
        sphere(id::PLACE, &v.place, place_colour),
    ];
    if !v.path.is_empty() {
        markers.push(Marker {
            id: id::PATH,
            r#type: Marker::LINE_STRIP,
            action: Marker::ADD,
            // A line strip's width is scale.x.
            scale: crate::msg::geometry_msgs::Vector3 {
                x: 0.004,
                y: 0.0,
                z: 0.0,
            },
            color: match v.shown {
                Shown::DryRun => rgba(1.0, 0.6, 0.0),
                _ => rgba(1.0, 0.9, 0.1),
            },
            points: v.path.iter().map(point).collect(),
            ..base.clone()
        });
    }
    markers.push(Marker {
        id: id::LABEL,
        r#type: Marker::TEXT_VIEW_FACING,
        action: Marker::ADD,
        pose: pose(
            &(v.pick + Vector3::new(0.0, 0.0, 0.08)),
            &UnitQuaternion::identity(),
        ),
        // A text's height is scale.z.
        scale: crate::msg::geometry_msgs::Vector3 {
            x: 0.0,
            y: 0.0,
            z: 0.03,
        },
        color: rgba(1.0, 1.0, 1.0),
        text: v.label.to_string(),
        ..base.clone()
    });
    // An arrow points along its pose's x axis; the optical axis is the camera's z, which
    // a quarter turn about y brings x onto.
    let to_optical_axis =
        UnitQuaternion::from_axis_angle(&Vector3::y_axis(), -std::f64::consts::FRAC_PI_2);
    markers.push(Marker {
        id: id::CAMERA,
        r#type: Marker::ARROW,
        action: Marker::ADD,
        pose: pose(
            &Point3::from(v.base_from_camera.translation.vector),
            &(v.base_from_camera.rotation * to_optical_axis),
        ),
        scale: crate::msg::geometry_msgs::Vector3 {
            x: 0.15,
            y: 0.01,
            z: 0.01,
        },
        color: rgba(0.8, 0.2, 0.9),
        ..base
    });
    MarkerArray { markers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Message;

    fn at(m: &Marker) -> Point3<f64> {
        Point3::new(m.pose.position.x, m.pose.position.y, m.pose.position.z)
    }

    fn view<'a>(
        shown: Shown,
        path: &'a [Point3<f64>],
        camera: &'a Isometry3<f64>,
    ) -> ActionView<'a> {
        ActionView {
            frame: "fr3_link0",
            stamp: Time { sec: 3, nanosec: 5 },
            pick: Point3::new(0.5, 0.1, 0.02),
            place: Point3::new(0.4, -0.1, 0.03),
            path,
            shown,
            label: "pick 3 place 5",
            base_from_camera: camera,
        }
    }

    /// Every marker is in the base frame with the action's stamp; the array clears the
    /// last one's first; the spheres sit on the points; the path is the tool's; a refusal
    /// shows red points and no path; the camera's arrow points along its optical axis.
    #[test]
    fn an_action_is_shown_at_its_points_in_the_base_frame() {
        let camera = Isometry3::from_parts(
            nalgebra::Translation3::new(0.5, 0.0, 1.0),
            // Looking straight down: optical z along the base's −z.
            UnitQuaternion::from_axis_angle(&Vector3::x_axis(), std::f64::consts::PI),
        );
        let path = [
            Point3::new(0.3, 0.0, 0.4),
            Point3::new(0.5, 0.1, 0.02),
            Point3::new(0.4, -0.1, 0.03),
        ];
        let a = action_markers(&view(Shown::Sent, &path, &camera));
        assert!(a.markers.iter().all(|m| m.header.frame_id == "fr3_link0"
            && m.header.stamp.sec == 3
            && m.ns == NAMESPACE));
        assert_eq!(a.markers[0].action, Marker::DELETEALL);
        let by_id = |id| {
            a.markers
                .iter()
                .find(|m| m.id == id && m.action == Marker::ADD)
                .unwrap()
        };
        assert_eq!(at(by_id(id::PICK)), Point3::new(0.5, 0.1, 0.02));
        assert_eq!(at(by_id(id::PLACE)), Point3::new(0.4, -0.1, 0.03));
        assert_eq!(by_id(id::PICK).r#type, Marker::SPHERE);
        let strip = by_id(id::PATH);
        assert_eq!(strip.r#type, Marker::LINE_STRIP);
        assert_eq!(strip.points.len(), 3);
        assert_eq!(strip.points[1].z, 0.02);
        assert_eq!(by_id(id::LABEL).text, "pick 3 place 5");
        assert!(by_id(id::LABEL).pose.position.z > 0.02);
        let arrow = by_id(id::CAMERA);
        let o = &arrow.pose.orientation;
        let r = UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(o.w, o.x, o.y, o.z));
        let along = r * Vector3::x();
        assert!(
            (along - Vector3::new(0.0, 0.0, -1.0)).norm() < 1e-9,
            "{along:?}"
        );
        assert_eq!(at(arrow), Point3::new(0.5, 0.0, 1.0));

        let refused = action_markers(&view(Shown::Refused, &[], &camera));
        assert!(refused.markers.iter().all(|m| m.id != id::PATH));
        let pick = refused.markers.iter().find(|m| m.id == id::PICK).unwrap();
        assert!(pick.color.r > 0.9 && pick.color.g < 0.2, "{:?}", pick.color);
        // The same through the CDR codec (what RViz receives).
        let back = MarkerArray::from_cdr(&refused.to_cdr()).unwrap();
        assert_eq!(back, refused);
    }
}
