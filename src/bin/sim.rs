//! ROS 2 executable of the sim node: `ros2 run dreamplan sim`.
fn main() -> std::process::ExitCode {
    dreamplan::nodes::executable::ros_main::<dreamplan::nodes::sim::SimNode>()
}
