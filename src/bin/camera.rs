//! ROS 2 executable of the camera node: `ros2 run dreamplan camera --ros-args --params-file config/ros/camera.yaml`.
fn main() -> std::process::ExitCode {
    dreamplan::nodes::executable::ros_main::<dreamplan::nodes::camera::CameraNode>()
}
