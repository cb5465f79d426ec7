//! A serial chain read from URDF: joint origins, axes and limits, and its forward
//! kinematics and geometric Jacobian.

use std::collections::HashMap;
use std::path::Path;

use nalgebra::{
    Isometry3, Matrix6xX, Point3, Translation3, Unit, UnitQuaternion, Vector3, Vector6,
};

/// Why a URDF could not become an [`ArmModel`]; each variant names the offending element.
#[derive(Debug, thiserror::Error)]
pub enum UrdfError {
    /// The XML is not a URDF that `urdf-rs` can read (or the file could not be read).
    #[error("cannot parse URDF: {0}")]
    Parse(String),
    /// A link named by the caller or by a joint does not exist.
    #[error("no link named `{0}` in the URDF")]
    UnknownLink(String),
    /// The tip is not below the base in the kinematic tree.
    #[error("`{tip}` is not a descendant of `{base}`: no serial chain between them")]
    NotAChain {
        /// Requested base link.
        base: String,
        /// Requested tip link.
        tip: String,
    },
    /// A link is the child of more than one joint, or the joints form a cycle.
    #[error("link `{0}` has more than one parent joint or lies on a cycle")]
    NotATree(String),
    /// A joint type the chain does not support (floating, planar, spherical).
    #[error("joint `{joint}` has unsupported type `{kind}` (revolute, continuous, prismatic and fixed are supported)")]
    UnsupportedJoint {
        /// Joint name.
        joint: String,
        /// Its URDF type.
        kind: String,
    },
    /// A movable joint whose axis has zero (or non-finite) length.
    #[error("joint `{0}` has a zero or non-finite axis")]
    BadAxis(String),
    /// A non-finite origin, or limits with lower > upper.
    #[error("joint `{joint}`: {what}")]
    BadValue {
        /// Joint name.
        joint: String,
        /// What is wrong.
        what: String,
    },
}

/// How a joint moves its child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JointKind {
    /// Rotation about the axis by q radians (URDF revolute and continuous).
    Revolute,
    /// Translation along the axis by q metres.
    Prismatic,
    /// No motion.
    Fixed,
}

/// One joint of the chain, parent to child.
#[derive(Debug, Clone)]
pub struct ChainJoint {
    /// Joint name from the URDF.
    pub name: String,
    /// Revolute, prismatic or fixed.
    pub kind: JointKind,
    /// The joint's origin: parent link frame from the joint frame at q = 0.
    pub parent_from_joint: Isometry3<f64>,
    /// Motion axis in the joint frame (unit length).
    pub axis: Unit<Vector3<f64>>,
    /// Position limits (rad or m); ±∞ for continuous joints or when absent.
    pub lower: f64,
    /// Upper position limit.
    pub upper: f64,
    /// Velocity limit (rad/s or m/s); ∞ when the URDF gives none.
    pub velocity: f64,
    /// The link this joint moves.
    pub child_link: String,
}

impl ChainJoint {
    /// joint frame at q = 0 from the child link frame at q.
    fn motion(&self, q: f64) -> Isometry3<f64> {
        match self.kind {
            JointKind::Revolute => Isometry3::from_parts(
                Translation3::identity(),
                UnitQuaternion::from_axis_angle(&self.axis, q),
            ),
            JointKind::Prismatic => Isometry3::from_parts(
                Translation3::from(self.axis.into_inner() * q),
                UnitQuaternion::identity(),
            ),
            JointKind::Fixed => Isometry3::identity(),
        }
    }
}

/// A serial chain from `base_link` to `tip_link`; q holds one value per movable joint,
/// in chain order.
#[derive(Debug, Clone)]
pub struct ArmModel {
    base_link: String,
    tip_link: String,
    joints: Vec<ChainJoint>,
    /// Indices into `joints` of the movable ones, in order.
    movable: Vec<usize>,
}

impl ArmModel {
    /// Reads a URDF file and extracts the chain `base_link` → `tip_link`.
    pub fn from_urdf_file(
        path: impl AsRef<Path>,
        base_link: &str,
        tip_link: &str,
    ) -> Result<Self, UrdfError> {
        let robot = urdf_rs::read_file(path.as_ref())
            .map_err(|e| UrdfError::Parse(format!("{}: {e}", path.as_ref().display())))?;
        Self::from_robot(&robot, base_link, tip_link)
    }

    /// Parses URDF XML text and extracts the chain `base_link` → `tip_link`.
    pub fn from_urdf_str(xml: &str, base_link: &str, tip_link: &str) -> Result<Self, UrdfError> {
        let robot = urdf_rs::read_from_string(xml).map_err(|e| UrdfError::Parse(e.to_string()))?;
        Self::from_robot(&robot, base_link, tip_link)
    }

    /// Extracts the chain `base_link` → `tip_link` from a parsed URDF.
    pub fn from_robot(
        robot: &urdf_rs::Robot,
        base_link: &str,
        tip_link: &str,
    ) -> Result<Self, UrdfError> {
        let links: std::collections::HashSet<&str> =
            robot.links.iter().map(|l| l.name.as_str()).collect();
        for name in [base_link, tip_link] {
            if !links.contains(name) {
                return Err(UrdfError::UnknownLink(name.to_string()));
            }
        }
        let mut parent_joint: HashMap<&str, &urdf_rs::Joint> = HashMap::new();
        for j in &robot.joints {
            for link in [&j.parent.link, &j.child.link] {
                if !links.contains(link.as_str()) {
                    return Err(UrdfError::UnknownLink(link.clone()));
                }
            }
            if parent_joint.insert(j.child.link.as_str(), j).is_some() {
                return Err(UrdfError::NotATree(j.child.link.clone()));
            }
        }
        // Walk up from the tip; at most one step per joint, more means a cycle.
        let mut path = Vec::new();
        let mut link = tip_link;
        while link != base_link {
            let Some(j) = parent_joint.get(link) else {
                return Err(UrdfError::NotAChain {
                    base: base_link.to_string(),
                    tip: tip_link.to_string(),
                });
            };
            if path.len() > robot.joints.len() {
                return Err(UrdfError::NotATree(link.to_string()));
            }
            path.push(*j);
            link = j.parent.link.as_str();
        }
        path.reverse();
        let joints = path
            .into_iter()
            .map(chain_joint)
            .collect::<Result<Vec<_>, _>>()?;
        let movable = (0..joints.len())
            .filter(|&i| joints[i].kind != JointKind::Fixed)
            .collect();
        Ok(Self {
            base_link: base_link.to_string(),
            tip_link: tip_link.to_string(),
            joints,
            movable,
        })
    }

    /// The root link of a URDF (the one link that is no joint's child), if unique.
    pub fn root_link(robot: &urdf_rs::Robot) -> Result<String, UrdfError> {
        let children: std::collections::HashSet<&str> =
            robot.joints.iter().map(|j| j.child.link.as_str()).collect();
        let mut roots = robot
            .links
            .iter()
            .filter(|l| !children.contains(l.name.as_str()));
        match (roots.next(), roots.next()) {
            (Some(root), None) => Ok(root.name.clone()),
            (Some(_), Some(second)) => Err(UrdfError::NotATree(second.name.clone())),
            (None, _) => Err(UrdfError::Parse("the URDF has no root link".into())),
        }
    }

    /// Number of movable joints (the length of q).
    pub fn dof(&self) -> usize {
        self.movable.len()
    }

    /// The chain's base link (the frame every pose is expressed in).
    pub fn base_link(&self) -> &str {
        &self.base_link
    }

    /// The chain's tip link.
    pub fn tip_link(&self) -> &str {
        &self.tip_link
    }

    /// Every joint of the chain, fixed ones included, base to tip.
    pub fn joints(&self) -> &[ChainJoint] {
        &self.joints
    }

    /// The movable joints in q order.
    pub fn movable_joints(&self) -> impl Iterator<Item = &ChainJoint> + '_ {
        self.movable.iter().map(|&i| &self.joints[i])
    }

    /// Names of the movable joints in q order (a JointTrajectory's `joint_names`).
    pub fn joint_names(&self) -> Vec<String> {
        self.movable_joints().map(|j| j.name.clone()).collect()
    }

    /// Gives the movable joints other names, in q order (an arm whose driver names them
    /// otherwise than this URDF, e.g. with a prefix). Refused unless there is one distinct,
    /// non-empty name per movable joint.
    pub fn rename_joints(&mut self, names: &[String]) -> Result<(), String> {
        if names.len() != self.movable.len() {
            return Err(format!(
                "{} joint names given, the arm has {} movable joints ({})",
                names.len(),
                self.movable.len(),
                self.joint_names().join(", ")
            ));
        }
        let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
        if distinct.len() != names.len() || names.iter().any(|n| n.trim().is_empty()) {
            return Err(format!(
                "joint names must be distinct and non-empty: {names:?}"
            ));
        }
        for (&i, n) in self.movable.iter().zip(names) {
            self.joints[i].name = n.clone();
        }
        Ok(())
    }

    /// Clamps q into the position limits.
    pub fn clamp(&self, q: &mut [f64]) {
        for (qi, j) in q.iter_mut().zip(self.movable_joints()) {
            *qi = qi.clamp(j.lower, j.upper);
        }
    }

    /// base_from_tip at joint positions q.
    ///
    /// # Panics
    /// If `q.len() != self.dof()` (a programming error; check user input first).
    pub fn fk(&self, q: &[f64]) -> Isometry3<f64> {
        self.check_len(q);
        let mut qs = q.iter();
        self.joints.iter().fold(Isometry3::identity(), |acc, j| {
            let qi = if j.kind == JointKind::Fixed {
                0.0
            } else {
                qs.next().copied().unwrap_or(0.0)
            };
            acc * j.parent_from_joint * j.motion(qi)
        })
    }

    /// base_from_link for every link of the chain, base first, tip last (for rendering).
    ///
    /// # Panics
    /// If `q.len() != self.dof()`.
    pub fn link_poses(&self, q: &[f64]) -> Vec<(&str, Isometry3<f64>)> {
        self.check_len(q);
        let mut out = Vec::with_capacity(self.joints.len() + 1);
        out.push((self.base_link.as_str(), Isometry3::identity()));
        let mut base_from_link = Isometry3::identity();
        let mut qs = q.iter();
        for j in &self.joints {
            let qi = if j.kind == JointKind::Fixed {
                0.0
            } else {
                qs.next().copied().unwrap_or(0.0)
            };
            base_from_link = base_from_link * j.parent_from_joint * j.motion(qi);
            out.push((j.child_link.as_str(), base_from_link));
        }
        out
    }

    /// Geometric Jacobian (6 × dof) of the tip in the base frame: rows 0..3 map q̇ to the
    /// tip origin's linear velocity, rows 3..6 to the angular velocity.
    ///
    /// # Panics
    /// If `q.len() != self.dof()`.
    pub fn jacobian(&self, q: &[f64]) -> Matrix6xX<f64> {
        self.fk_and_jacobian(q).1
    }

    /// base_from_tip and the Jacobian in one pass (what IK needs per iteration).
    pub(crate) fn fk_and_jacobian(&self, q: &[f64]) -> (Isometry3<f64>, Matrix6xX<f64>) {
        self.check_len(q);
        // (axis in base, joint origin in base, kind) of each movable joint.
        let mut axes: Vec<(Vector3<f64>, Point3<f64>, JointKind)> = Vec::with_capacity(self.dof());
        let mut base_from_link = Isometry3::identity();
        let mut qs = q.iter();
        for j in &self.joints {
            let base_from_joint = base_from_link * j.parent_from_joint;
            let qi = if j.kind == JointKind::Fixed {
                0.0
            } else {
                let axis = base_from_joint.rotation * j.axis.into_inner();
                axes.push((
                    axis,
                    Point3::from(base_from_joint.translation.vector),
                    j.kind,
                ));
                qs.next().copied().unwrap_or(0.0)
            };
            base_from_link = base_from_joint * j.motion(qi);
        }
        let tip = Point3::from(base_from_link.translation.vector);
        let mut jac = Matrix6xX::zeros(self.dof());
        for (c, (axis, origin, kind)) in axes.into_iter().enumerate() {
            let col = match kind {
                JointKind::Revolute => {
                    let lin = axis.cross(&(tip - origin));
                    Vector6::new(lin.x, lin.y, lin.z, axis.x, axis.y, axis.z)
                }
                _ => Vector6::new(axis.x, axis.y, axis.z, 0.0, 0.0, 0.0),
            };
            jac.set_column(c, &col);
        }
        (base_from_link, jac)
    }

    /// The first movable joint's origin in the base frame and an upper bound on how far
    /// the tip can be from it (sum of the link offsets after it, plus prismatic travel).
    pub(crate) fn reach(&self) -> (Point3<f64>, f64) {
        let mut base_from_link = Isometry3::identity();
        let mut iter = self.joints.iter();
        let mut origin = None;
        for j in iter.by_ref() {
            let base_from_joint = base_from_link * j.parent_from_joint;
            if j.kind != JointKind::Fixed {
                origin = Some((Point3::from(base_from_joint.translation.vector), j));
                break;
            }
            base_from_link = base_from_joint;
        }
        let Some((origin, first)) = origin else {
            let p = Point3::from(base_from_link.translation.vector);
            return (p, 0.0);
        };
        let travel = |j: &ChainJoint| match j.kind {
            JointKind::Prismatic => j.lower.abs().max(j.upper.abs()),
            _ => 0.0,
        };
        let reach = travel(first)
            + iter
                .map(|j| j.parent_from_joint.translation.vector.norm() + travel(j))
                .sum::<f64>();
        (origin, reach)
    }

    fn check_len(&self, q: &[f64]) {
        assert_eq!(
            q.len(),
            self.dof(),
            "q has {} values, the chain {} → {} has {} movable joints",
            q.len(),
            self.base_link,
            self.tip_link,
            self.dof()
        );
    }
}

fn chain_joint(j: &urdf_rs::Joint) -> Result<ChainJoint, UrdfError> {
    let bad = |what: String| UrdfError::BadValue {
        joint: j.name.clone(),
        what,
    };
    let kind = match j.joint_type {
        urdf_rs::JointType::Revolute | urdf_rs::JointType::Continuous => JointKind::Revolute,
        urdf_rs::JointType::Prismatic => JointKind::Prismatic,
        urdf_rs::JointType::Fixed => JointKind::Fixed,
        ref other => {
            return Err(UrdfError::UnsupportedJoint {
                joint: j.name.clone(),
                kind: format!("{other:?}").to_lowercase(),
            })
        }
    };
    let xyz = j.origin.xyz.0;
    let rpy = j.origin.rpy.0;
    if xyz.iter().chain(rpy.iter()).any(|v| !v.is_finite()) {
        return Err(bad("origin has a non-finite value".into()));
    }
    // URDF rpy: fixed-axis roll about x, then pitch about y, then yaw about z.
    let parent_from_joint = Isometry3::from_parts(
        Translation3::new(xyz[0], xyz[1], xyz[2]),
        UnitQuaternion::from_euler_angles(rpy[0], rpy[1], rpy[2]),
    );
    let a = Vector3::from(j.axis.xyz.0);
    let axis = if kind == JointKind::Fixed {
        Vector3::z_axis()
    } else {
        let n = a.norm();
        if !n.is_finite() || n < 1e-12 {
            return Err(UrdfError::BadAxis(j.name.clone()));
        }
        Unit::new_unchecked(a / n)
    };
    let (mut lower, mut upper) = (j.limit.lower, j.limit.upper);
    let continuous = j.joint_type == urdf_rs::JointType::Continuous;
    // URDF < 1.2 gives 0/0 for an absent <limit>: that means "no limit" only for
    // continuous joints; for revolute/prismatic it is what the file says.
    if continuous || kind == JointKind::Fixed {
        lower = f64::NEG_INFINITY;
        upper = f64::INFINITY;
    }
    if lower.is_nan() || upper.is_nan() || lower > upper {
        return Err(bad(format!("limits lower {lower} > upper {upper}")));
    }
    let velocity = if j.limit.velocity > 0.0 {
        j.limit.velocity
    } else {
        f64::INFINITY
    };
    Ok(ChainJoint {
        name: j.name.clone(),
        kind,
        parent_from_joint,
        axis,
        lower,
        upper,
        velocity,
        child_link: j.child.link.clone(),
    })
}
