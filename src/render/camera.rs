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
