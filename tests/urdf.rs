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

/// The moving joints (each checked to have limits), after checking that every link with
/// geometry has a physical inertial; returns the moving joints and the frame-only links.
fn check_joints_and_inertials(robot: &urdf_rs::Robot) -> (BTreeSet<String>, Vec<String>) {
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
    let mut frames = Vec::new();
    for link in &robot.links {
        if link.visual.is_empty() && link.collision.is_empty() {
            // A frame (world, flange, TCP, camera): nothing to simulate.
            frames.push(link.name.clone());
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
    (moving, frames)
}

/// The `<ros2_control>` block (urdf-rs skips it): its hardware plugin, and per joint the
/// `<param>` values (`min`, `max`, `initial_value`).
fn ros2_control(text: &str) -> (String, BTreeMap<String, BTreeMap<String, f64>>) {
    let block = &text[text.find("<ros2_control").unwrap()..text.find("</ros2_control>").unwrap()];
    let mut reader = quick_xml::Reader::from_str(block);
    let mut joints = BTreeMap::new();
    let (mut current, mut param, mut in_plugin) = (None, None, false);
    let mut plugin = String::new();
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
                    b"plugin" => in_plugin = true,
                    _ => {}
                }
            }
            quick_xml::events::Event::Text(t) => {
                let t = t.decode().unwrap().trim().to_string();
                if in_plugin {
                    plugin = t;
                    in_plugin = false;
                } else if let (Some(j), Some(p)) = (&current, param.take()) {
                    joints.get_mut(j).unwrap().insert(p, t.parse().unwrap());
                }
            }
            quick_xml::events::Event::Eof => break,
            _ => {}
        }
    }
    (plugin, joints)
}

/// Each ros2_control joint exists, moves, and takes position commands within its URDF
/// limits from an initial value inside them.
fn check_ros2_control_limits(
    robot: &urdf_rs::Robot,
    joints: &BTreeMap<String, BTreeMap<String, f64>>,
) {
    for (name, params) in joints {
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
fn joints_have_limits_links_have_inertials_and_ros2_control_joints_exist() {
    let robot = urdf_rs::read_from_string(&urdf_text()).unwrap();
    let (moving, frames) = check_joints_and_inertials(&robot);
    assert_eq!(moving.len(), 7, "{moving:?}");
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
    let (plugin, joints) = ros2_control(&urdf_text());
    assert_eq!(plugin, "mock_components/GenericSystem");
    assert_eq!(joints.keys().cloned().collect::<BTreeSet<_>>(), moving);
    check_ros2_control_limits(&robot, &joints);
}

/// urdf/franka_like_gazebo.urdf.xacro run through the real xacro (PyPI `xacro`, the ROS
/// tool's own code) as gazebo.launch.xml runs it: the same arm, a moving finger, the
/// controllers file the controllers config names, and the camera sensor where and as the
/// built-in camera is. Skipped without xacro unless `DREAMPLAN_REQUIRE_INTEROP` is set.
#[test]
fn the_gazebo_arm_through_xacro_is_the_same_arm_with_a_finger_its_controllers_and_the_camera() {
    let python = std::env::var("DREAMPLAN_PYTHON").unwrap_or_else(|_| "python3".into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let controllers = root.join("config/gazebo/controllers.yaml");
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import sys, xacro; sys.argv[0] = 'xacro'; xacro.main()",
        ])
        .arg(root.join("urdf/franka_like_gazebo.urdf.xacro"))
        .arg(format!("controllers:={}", controllers.display()))
        .output();
    let out = match out {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap(),
        other => {
            assert!(
                std::env::var("DREAMPLAN_REQUIRE_INTEROP").is_err(),
                "xacro failed ({python}; pip install -r scripts/requirements.txt): {other:?}"
            );
            eprintln!("skipping: xacro is not installed for {python}");
            return;
        }
    };
    let robot = urdf_rs::read_from_string(&out).unwrap();
    let (moving, _) = check_joints_and_inertials(&robot);
    let arm = urdf_rs::read_from_string(&urdf_text()).unwrap();
    let (arm_moving, _) = check_joints_and_inertials(&arm);
    let mut want = arm_moving.clone();
    want.insert("panda_finger_joint1".into());
    assert_eq!(moving, want);
    // The arm is the built-in world's arm, joint for joint.
    for j in &arm.joints {
        let g = robot.joints.iter().find(|g| g.name == j.name).unwrap();
        assert_eq!(
            (
                &g.origin.xyz,
                &g.origin.rpy,
                &g.axis.xyz,
                &g.parent.link,
                &g.child.link
            ),
            (
                &j.origin.xyz,
                &j.origin.rpy,
                &j.axis.xyz,
                &j.parent.link,
                &j.child.link
            ),
            "{}",
            j.name
        );
        assert_eq!(
            (g.limit.lower, g.limit.upper, g.limit.velocity),
            (j.limit.lower, j.limit.upper, j.limit.velocity),
            "{}",
            j.name
        );
    }
    // The finger column the executor sends: 0.04 open, 0 closed.
    let f = robot
        .joints
        .iter()
        .find(|j| j.name == "panda_finger_joint1")
        .unwrap();
    assert!(matches!(f.joint_type, urdf_rs::JointType::Prismatic));
    assert_eq!((f.limit.lower, f.limit.upper), (0.0, 0.04));
    let (plugin, joints) = ros2_control(&out);
    assert_eq!(plugin, "gz_ros2_control/GazeboSimSystem");
    assert_eq!(joints.keys().cloned().collect::<BTreeSet<_>>(), moving);
    check_ros2_control_limits(&robot, &joints);
    // gz_ros2_control loads the controllers file given to xacro; its trajectory controller
    // drives exactly the ros2_control joints.
    assert!(
        out.contains(&format!(
            "<parameters>{}</parameters>",
            controllers.display()
        )),
        "the plugin does not load {}",
        controllers.display()
    );
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&controllers).unwrap()).unwrap();
    let ctl: BTreeSet<String> = yaml["arm_controller"]["ros__parameters"]["joints"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ctl, moving);
    // The RGB-D sensor on camera_link sees as the built-in camera does (the executor's
    // default camera model and pose hold in Gazebo).
    let cam = dreamplan::render::scene::default_camera(256, 256);
    let hfov = 2.0 * (cam.width as f64 / 2.0 / cam.fx).atan();
    let between = |a: &str, b: &str| -> f64 {
        let i = out.find(a).unwrap_or_else(|| panic!("no {a}")) + a.len();
        out[i..i + out[i..].find(b).unwrap()]
            .trim()
            .parse()
            .unwrap()
    };
    assert!(out.contains(r#"<gazebo reference="camera_link">"#));
    // Gazebo's URDF converter drops a link without mass under `world` (its fixed joint is
    // not merged into a parent there), and the sensor with it.
    let camera_link = robot
        .links
        .iter()
        .find(|l| l.name == "camera_link")
        .unwrap();
    assert!(camera_link.inertial.mass.value > 0.0);
    assert!((between("<horizontal_fov>", "</horizontal_fov>") - hfov).abs() < 1e-6);
    assert_eq!(between("<width>", "</width>"), cam.width as f64);
    assert_eq!(between("<height>", "</height>"), cam.height as f64);
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
