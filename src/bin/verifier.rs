//! ROS 2 executable of the world-model verifier node: `ros2 run dreamplan verifier`.
fn main() -> std::process::ExitCode {
    dreamplan::nodes::executable::ros_main::<dreamplan::nodes::verifier::VerifierNode>()
}
