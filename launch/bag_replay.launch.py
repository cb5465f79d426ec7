"""`ros2 launch dreamplan bag_replay.launch.py`: the same graph as bag_replay.launch.xml, which it includes.

The XML file is the one source of the graph (tests/launch_graph.rs runs it without ROS and
checks every parameter and topic); this file is for tools and users that expect a Python
launch file. Launch arguments given on the command line (`name:=value`) reach the XML
file's arguments unchanged; `ros2 launch dreamplan bag_replay.launch.xml --show-args` lists them.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import AnyLaunchDescriptionSource


def generate_launch_description():
    xml = os.path.join(get_package_share_directory("dreamplan"), "launch", "bag_replay.launch.xml")
    return LaunchDescription([IncludeLaunchDescription(AnyLaunchDescriptionSource(xml))])
