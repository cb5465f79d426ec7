//! ROS 2 executable of the planner node: `ros2 run dreamplan planner`.
fn main() -> std::process::ExitCode {
    dreamplan::nodes::executable::ros_main::<dreamplan::nodes::planner::PlannerNode>()
}
