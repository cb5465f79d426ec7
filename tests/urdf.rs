//! urdf/franka_like.urdf as ROS tools read it: it parses, every moving joint has limits,
//! every link with geometry has a physical inertial, the ros2_control joints exist and
//! move, and the camera frames sit where the built-in world's renderer puts its camera.

use std::collections::{BTreeMap, BTreeSet};

use nalgebra::{Isometry3, Translation3, UnitQuaternion};

fn urdf_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/urdf/franka_like.urdf"
    ))
    .unwrap()
}

fn pose(o: &urdf_rs::Pose) -> Isometry3<f64> {
    Isometry3::from_parts(
        Translation3::new(o.xyz[0], o.xyz[1], o.xyz[2]),
        // URDF rpy: R = Rz(yaw) Ry(pitch) Rx(roll), as nalgebra's euler angles.
        UnitQuaternion::from_euler_angles(o.rpy[0], o.rpy[1], o.rpy[2]),
    )
}

#[test]
fn joints_have_limits_links_have_inertials_and_ros2_control_joints_exist() {
    let robot = urdf_rs::read_from_string(&urdf_text()).unwrap();
    let mut moving = BTreeSet::new();
    for j in &robot.joints {
        if matches!(j.joint_type, urdf_rs::JointType::Fixed) {
            continue;
        }
        let l = &j.limit;
        assert!(
            l.lower < l.upper && l.velocity > 0.0 && l.effort > 0.0,
            "{}: limits {l:?}",
            j.name
        );
        moving.insert(j.name.clone());
    }
    assert_eq!(moving.len(), 7, "{moving:?}");
    let mut frames = Vec::new();
    for link in &robot.links {
        if link.visual.is_empty() && link.collision.is_empty() {
            // A frame (world, flange, TCP, camera): nothing to simulate.
            frames.push(link.name.as_str());
            continue;
        }
        let i = &link.inertial;
        let m = i.inertia.clone();
        let tensor = nalgebra::Matrix3::new(
            m.ixx, m.ixy, m.ixz, m.ixy, m.iyy, m.iyz, m.ixz, m.iyz, m.izz,
        );
        let eig = tensor.symmetric_eigenvalues();
        assert!(i.mass.value > 0.0, "{}: mass {}", link.name, i.mass.value);
        assert!(
            eig.iter().all(|&e| e > 0.0),
            "{}: inertia {eig:?}",
            link.name
        );
        // The triangle inequality of a physical body's principal moments.
        let (a, b, c) = (eig[0], eig[1], eig[2]);
        assert!(
            a + b >= c - 1e-12 && b + c >= a - 1e-12 && a + c >= b - 1e-12,
            "{}: principal moments {eig:?} are not a body's",
            link.name
        );
    }
    assert_eq!(
        frames,
        [
            "world",
            "panda_link8",
            "panda_tcp",
            "camera_link",
            "camera_color_optical_frame"
        ]
    );

    // The <ros2_control> block (urdf-rs skips it): its joints exist and move, and each
    // takes position commands within its URDF limits.
    let text = urdf_text();
    let block = &text[text.find("<ros2_control").unwrap()..text.find("</ros2_control>").unwrap()];
    let mut reader = quick_xml::Reader::from_str(block);
    let mut joints = BTreeMap::new();
    let mut current = None;
    let mut param = None;
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                let name = e
                    .try_get_attribute("name")
                    .unwrap()
                    .map(|a| a.unescape_value().unwrap().into_owned());
                match e.name().as_ref() {
                    b"joint" => {
                        current = name.clone();
                        joints.insert(name.unwrap(), BTreeMap::new());
                    }
                    b"param" => param = name,
                    _ => {}
                }
            }
            quick_xml::events::Event::Text(t) => {
                if let (Some(j), Some(p)) = (&current, param.take()) {
                    let v: f64 = t.decode().unwrap().trim().parse().unwrap();
                    joints.get_mut(j).unwrap().insert(p, v);
                }
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    assert_eq!(joints.keys().cloned().collect::<BTreeSet<_>>(), moving);
    for (name, params) in &joints {
        let j = robot.joints.iter().find(|j| &j.name == name).unwrap();
        assert_eq!(params.get("min"), Some(&j.limit.lower), "{name}");
        assert_eq!(params.get("max"), Some(&j.limit.upper), "{name}");
        let init = params["initial_value"];
        assert!(
            j.limit.lower <= init && init <= j.limit.upper,
            "{name}: {init}"
        );
    }
}

#[test]
fn the_camera_frames_are_the_renderers_camera() {
    let robot = urdf_rs::read_from_string(&urdf_text()).unwrap();
    // world → camera_color_optical_frame through the fixed joints.
    let mut chain = Vec::new();
    let mut link = "camera_color_optical_frame".to_string();
    while link != "world" {
        let j = robot
            .joints
            .iter()
            .find(|j| j.child.link == link)
            .unwrap_or_else(|| panic!("no joint to {link}"));
        assert!(matches!(j.joint_type, urdf_rs::JointType::Fixed));
        chain.push(pose(&j.origin));
        link = j.parent.link.clone();
    }
    let world_from_optical = chain.iter().rev().fold(Isometry3::identity(), |a, b| a * b);
    let cam = dreamplan::render::scene::default_camera(256, 256).world_from_camera;
    let dt = (world_from_optical.translation.vector - cam.translation.vector).norm();
    let da = world_from_optical.rotation.angle_to(&cam.rotation);
    assert!(dt < 1e-9 && da < 1e-9, "off by {dt} m and {da} rad");
    // REP-103: camera_link looks along its x axis, z up-ish.
    let j = robot
        .joints
        .iter()
        .find(|j| j.name == "camera_joint")
        .unwrap();
    let body = pose(&j.origin).rotation;
    let forward = body * nalgebra::Vector3::x();
    let optical_z = world_from_optical.rotation * nalgebra::Vector3::z();
    assert!((forward - optical_z).norm() < 1e-9);
    assert!((body * nalgebra::Vector3::z()).z > 0.0);
}
