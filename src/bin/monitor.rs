//! ROS 2 executable of the monitor node: `ros2 run dreamplan monitor --ros-args --params-file config/ros/monitor.yaml`.
fn main() -> std::process::ExitCode {
    dreamplan::nodes::executable::ros_main::<dreamplan::nodes::monitor::MonitorNode>()
}
