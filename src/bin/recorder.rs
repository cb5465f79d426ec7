//! ROS 2 executable of the recorder node: `ros2 run dreamplan recorder --ros-args -p out_dir:=/data/bags/run1`.
fn main() -> std::process::ExitCode {
    dreamplan::nodes::executable::ros_main::<dreamplan::nodes::recorder::RecorderNode>()
}
