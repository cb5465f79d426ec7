//! ROS 2 executable of the offline trainer node: `ros2 run dreamplan trainer`.
fn main() -> std::process::ExitCode {
    dreamplan::nodes::executable::ros_main::<dreamplan::nodes::trainer::TrainerNode>()
}
