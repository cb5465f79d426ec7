//! ROS 2 executable of the executor node: `ros2 run dreamplan executor`.
fn main() -> std::process::ExitCode {
    dreamplan::nodes::executable::ros_main::<dreamplan::nodes::executor::ExecutorNode>()
}
