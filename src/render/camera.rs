//! The pinhole camera: intrinsics plus where it sits in the world.
//!
//! Frames: `world` (z up, metres), `camera` (ROS optical convention: x right, y down,
//! z forward). `world_from_camera` maps camera coordinates to world coordinates.
//!
//! Pixel coordinates here count from the image's corner: pixel (0, 0) covers [0, 1)², its
//! centre at (0.5, 0.5), so a centred principal point is `width / 2`. ROS's `CameraInfo`
//! (as OpenCV's calibration) counts from the first pixel's *centre*, so its centred
//! principal point is `width / 2 − 0.5`. [`PinholeCamera::from_camera_info`] and
//! [`PinholeCamera::camera_info`] convert between the two ([`ROS_PRINCIPAL_OFFSET`]); a
//! real calibration read without it would unproject every pixel half a pixel off.

use nalgebra::{Isometry3, Point3, Translation3, UnitQuaternion, Vector3};

use crate::msg::sensor_msgs::CameraInfo;
use crate::msg::std_msgs::Header;

/// What this crate's principal point adds to a `CameraInfo`'s (pixel centres at +0.5 here,
/// at integers in ROS).
pub const ROS_PRINCIPAL_OFFSET: f64 = 0.5;

/// A camera given in a config file (YAML or JSON), as a real arm's is known: its
/// calibration at one image size in `CameraInfo`'s terms (the principal point counted from
/// the first pixel's centre, as ROS and OpenCV count it) and the hand-eye pose of its
/// optical frame (x right, y down, z forward) in the arm's base frame, the executor's
/// `base_from_camera_xyz` / `base_from_camera_xyzw`. The built-in world's base frame is
/// its world frame, so a simulator can render through it too. Frames of another size than
/// the calibration's are seen through it scaled ([`PinholeCamera::resized`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSpec {
    /// Image width of the calibration, pixels.
    pub width: u32,
    /// Image height of the calibration, pixels.
    pub height: u32,
    /// `K[0]`: focal length along x, pixels.
    pub fx: f64,
    /// `K[4]`: focal length along y, pixels.
    pub fy: f64,
    /// `K[2]`: principal point x, pixels from the first pixel's centre.
    pub cx: f64,
    /// `K[5]`: principal point y, pixels from the first pixel's centre.
    pub cy: f64,
    /// The optical frame's position in the arm's base frame (m).
    pub base_from_camera_xyz: [f64; 3],
    /// The optical frame's orientation in the arm's base frame (quaternion x, y, z, w).
    pub base_from_camera_xyzw: [f64; 4],
}

impl CameraSpec {
    /// The spec of `camera` (its size, intrinsics and pose).
    pub fn of(camera: &PinholeCamera) -> Self {
        let t = camera.world_from_camera.translation.vector;
        let q = camera.world_from_camera.rotation.coords;
        Self {
            width: camera.width,
            height: camera.height,
            fx: camera.fx,
            fy: camera.fy,
            cx: camera.cx - ROS_PRINCIPAL_OFFSET,
            cy: camera.cy - ROS_PRINCIPAL_OFFSET,
            base_from_camera_xyz: [t.x, t.y, t.z],
            base_from_camera_xyzw: [q.x, q.y, q.z, q.w],
        }
    }

    /// The spec of the camera a `CameraInfo` describes, placed at a hand-eye pose.
    pub fn from_camera_info(info: &CameraInfo, xyz: [f64; 3], xyzw: [f64; 4]) -> Self {
        Self {
            width: info.width,
            height: info.height,
            fx: info.k[0],
            fy: info.k[4],
            cx: info.k[2],
            cy: info.k[5],
            base_from_camera_xyz: xyz,
            base_from_camera_xyzw: xyzw,
        }
    }

    /// Reads a spec from a YAML (or JSON) file and validates it; the message names the file.
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the camera file {}: {e}", path.display()))?;
        let spec: Self = serde_yaml::from_str(&text).map_err(|e| {
            format!(
                "{}: not a camera (width, height, fx, fy, cx, cy, base_from_camera_xyz, base_from_camera_xyzw): {e}",
                path.display()
            )
        })?;
        spec.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(spec)
    }

    /// Refuses what would not make a camera: a zero size, a focal length that is not a
    /// positive number, a principal point or position that is not finite, an orientation
    /// that is not a unit quaternion (within 1e-3). The message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.width == 0 || self.height == 0 {
            return Err(format!(
                "camera: width and height must be > 0 (are {}×{})",
                self.width, self.height
            ));
        }
        for (name, v) in [("fx", self.fx), ("fy", self.fy)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!(
                    "camera: {name} must be a focal length > 0 px (is {v})"
                ));
            }
        }
        for (name, v) in [("cx", self.cx), ("cy", self.cy)].into_iter().chain(
            self.base_from_camera_xyz
                .iter()
                .map(|v| ("base_from_camera_xyz", *v)),
        ) {
            if !v.is_finite() {
                return Err(format!("camera: {name} must be finite (is {v})"));
            }
        }
        let n = self
            .base_from_camera_xyzw
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt();
        if !(n.is_finite() && (n - 1.0).abs() < 1e-3) {
            return Err(format!(
                "camera: base_from_camera_xyzw must be a unit quaternion (x, y, z, w); its norm is {n}"
            ));
        }
        Ok(())
    }

    /// The camera at its calibration's size.
    pub fn model(&self) -> PinholeCamera {
        let [x, y, z] = self.base_from_camera_xyz;
        let [qx, qy, qz, qw] = self.base_from_camera_xyzw;
        PinholeCamera {
            width: self.width,
            height: self.height,
            fx: self.fx,
            fy: self.fy,
            cx: self.cx + ROS_PRINCIPAL_OFFSET,
            cy: self.cy + ROS_PRINCIPAL_OFFSET,
            world_from_camera: Isometry3::from_parts(
                Translation3::new(x, y, z),
                UnitQuaternion::from_quaternion(nalgebra::Quaternion::new(qw, qx, qy, qz)),
            ),
        }
    }

    /// The camera seeing frames of `width`×`height` (the calibration scaled to them).
    pub fn model_at(&self, width: u32, height: u32) -> PinholeCamera {
        self.model().resized(width, height)
    }

    /// Whether `info` (a bag's or a driver's `CameraInfo`) has this calibration at its
    /// size: the intrinsics scaled to it agree within 1e-6 relative.
    pub fn same_intrinsics(&self, info: &CameraInfo) -> bool {
        if info.width == 0 || info.height == 0 {
            return false;
        }
        let ours = self.model_at(info.width, info.height);
        let theirs = PinholeCamera::from_camera_info(info, ours.world_from_camera);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
        close(theirs.fx, ours.fx)
            && close(theirs.fy, ours.fy)
            && close(theirs.cx, ours.cx)
            && close(theirs.cy, ours.cy)
    }
}

/// A calibrated pinhole camera placed in the world.
#[derive(Debug, Clone, PartialEq)]
pub struct PinholeCamera {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Focal length along x, pixels.
    pub fx: f64,
    /// Focal length along y, pixels.
    pub fy: f64,
    /// Principal point x, pixels (pixel centres are at integer + 0.5).
    pub cx: f64,
    /// Principal point y, pixels.
    pub cy: f64,
    /// Pose of the optical frame in the world.
    pub world_from_camera: Isometry3<f64>,
}

impl PinholeCamera {
    /// A camera at `eye` looking at `target`, with the image's "up" towards `up`, and a
    /// horizontal field of view of `hfov_deg`.
    pub fn look_at(
        width: u32,
        height: u32,
        hfov_deg: f64,
        eye: Point3<f64>,
        target: Point3<f64>,
        up: Vector3<f64>,
    ) -> Self {
        let z = (target - eye).normalize(); // optical axis
        let x = z.cross(&up).normalize(); // image right
        let y = z.cross(&x); // image down
        let rot = nalgebra::Rotation3::from_basis_unchecked(&[x, y, z]);
        let world_from_camera = Isometry3::from_parts(
            Translation3::from(eye.coords),
            UnitQuaternion::from_rotation_matrix(&rot),
        );
        let fx = 0.5 * width as f64 / (0.5 * hfov_deg.to_radians()).tan();
        Self {
            width,
            height,
            fx,
            fy: fx,
            cx: 0.5 * width as f64,
            cy: 0.5 * height as f64,
            world_from_camera,
        }
    }

    /// The same camera at another resolution (intrinsics scaled).
    pub fn resized(&self, width: u32, height: u32) -> Self {
        let (sx, sy) = (
            width as f64 / self.width as f64,
            height as f64 / self.height as f64,
        );
        Self {
            width,
            height,
            fx: self.fx * sx,
            fy: self.fy * sy,
            cx: self.cx * sx,
            cy: self.cy * sy,
            world_from_camera: self.world_from_camera,
        }
    }

    /// Pixel (u = column, v = row, continuous) and depth (m along the optical axis) of a
    /// world point; `None` behind the camera.
    pub fn project(&self, point_in_world: &Point3<f64>) -> Option<(f64, f64, f64)> {
        let p = self
            .world_from_camera
            .inverse_transform_point(point_in_world);
        (p.z > 1e-9).then(|| {
            (
                self.fx * p.x / p.z + self.cx,
                self.fy * p.y / p.z + self.cy,
                p.z,
            )
        })
    }

    /// The world point seen at pixel (u, v) at depth `depth` (m along the optical axis).
    pub fn unproject(&self, u: f64, v: f64, depth: f64) -> Point3<f64> {
        let p = Point3::new(
            (u - self.cx) / self.fx * depth,
            (v - self.cy) / self.fy * depth,
            depth,
        );
        self.world_from_camera.transform_point(&p)
    }

    /// The camera centre and the unit ray direction through pixel (u, v), in the world.
    pub fn ray(&self, u: f64, v: f64) -> (Point3<f64>, Vector3<f64>) {
        let d = Vector3::new((u - self.cx) / self.fx, (v - self.cy) / self.fy, 1.0);
        let origin = Point3::from(self.world_from_camera.translation.vector);
        (origin, self.world_from_camera.rotation * d.normalize())
    }

    /// The camera a `sensor_msgs/CameraInfo` describes (its `K`; distortion is not
    /// modelled), placed at `world_from_camera`. `K`'s principal point is converted to
    /// this crate's pixel convention (see the module doc).
    pub fn from_camera_info(info: &CameraInfo, world_from_camera: Isometry3<f64>) -> Self {
        Self {
            width: info.width,
            height: info.height,
            fx: info.k[0],
            fy: info.k[4],
            cx: info.k[2] + ROS_PRINCIPAL_OFFSET,
            cy: info.k[5] + ROS_PRINCIPAL_OFFSET,
            world_from_camera,
        }
    }

    /// `sensor_msgs/CameraInfo` of this camera (no distortion), its principal point in
    /// ROS's pixel convention (see the module doc).
    pub fn camera_info(&self, header: Header) -> CameraInfo {
        let mut info = crate::nodes::camera::pinhole_camera_info(
            self.width,
            self.height,
            [
                self.fx,
                self.fy,
                self.cx - ROS_PRINCIPAL_OFFSET,
                self.cy - ROS_PRINCIPAL_OFFSET,
            ],
            &header.frame_id,
        );
        info.header = header;
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec read from a file gives back the camera it was made from; a spec that would
    /// not make a camera, or a file that is not one, is refused naming the field or file.
    #[test]
    fn a_camera_spec_round_trips_and_refuses_what_is_not_a_camera() {
        let cam = PinholeCamera::look_at(
            640,
            480,
            60.0,
            Point3::new(1.1, 0.2, 0.7),
            Point3::new(0.5, 0.0, 0.0),
            Vector3::z(),
        );
        let spec = CameraSpec::of(&cam);
        // CameraInfo's K convention: the centred principal point is width/2 - 0.5.
        assert_eq!((spec.cx, spec.cy), (319.5, 239.5));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("camera.yaml");
        std::fs::write(&file, serde_yaml::to_string(&spec).unwrap()).unwrap();
        let back = CameraSpec::read(&file).unwrap().model();
        for (u, v) in [(0.0, 0.0), (320.0, 240.0), (639.5, 10.25)] {
            let (a, b) = (cam.unproject(u, v, 0.8), back.unproject(u, v, 0.8));
            assert!((a - b).norm() < 1e-9, "pixel ({u}, {v}): {a} vs {b}");
        }
        // Scaled to frames of half the size, a pixel sees the same ray.
        let half = spec.model_at(320, 240);
        let (a, b) = (cam.ray(100.0, 60.0).1, half.ray(50.0, 30.0).1);
        assert!((a - b).norm() < 1e-12);
        assert!(spec.same_intrinsics(&cam.resized(320, 240).camera_info(Header::default())));
        let mut other = cam.clone();
        other.fx *= 1.01;
        assert!(!spec.same_intrinsics(&other.camera_info(Header::default())));
        let bad = |f: &dyn Fn(&mut CameraSpec)| {
            let mut s = spec.clone();
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert!(bad(&|s| s.fx = 0.0).contains("fx must be a focal length > 0"));
        assert!(bad(&|s| s.cy = f64::NAN).contains("cy must be finite"));
        assert!(bad(&|s| s.width = 0).contains("width and height must be > 0"));
        assert!(
            bad(&|s| s.base_from_camera_xyzw = [0.0, 0.0, 0.0, 2.0]).contains("unit quaternion")
        );
        // The built-in camera's pose, as config/ros/executor.yaml, sim.yaml and
        // docs/ros2.md give it for an example.
        let builtin = CameraSpec::of(&crate::render::scene::default_camera(640, 480));
        assert_eq!(builtin.base_from_camera_xyz, [1.0, 0.0, 0.8]);
        let q = builtin.base_from_camera_xyzw;
        let want = [-0.6797, -0.6797, 0.1949, 0.1949];
        let sign = if q[3] < 0.0 { -1.0 } else { 1.0 };
        for (a, b) in q.iter().zip(want) {
            assert!((sign * a - b).abs() < 1e-4, "{q:?}");
        }
        assert!((builtin.fx - 628.0).abs() < 0.1, "{}", builtin.fx);
        std::fs::write(&file, "width: 640\nheight: 480\nfx: 500\n").unwrap();
        let e = CameraSpec::read(&file).unwrap_err();
        assert!(e.contains("camera.yaml: not a camera"), "{e}");
        let e = CameraSpec::read(&dir.path().join("none.yaml")).unwrap_err();
        assert!(e.contains("reading the camera file"), "{e}");
    }
}
