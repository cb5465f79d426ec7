#!/usr/bin/env python3
"""Generates urdf/franka_like.urdf: a Franka-Panda-like 7-DoF arm with simple geometry,
and urdf/franka_like_gazebo.urdf.xacro: the same arm for Gazebo (gz sim) under
gz_ros2_control, with a moving finger and the camera as an RGB-D sensor.

Kinematics: Franka Emika's published modified (Craig) Denavit-Hartenberg parameters of
the Panda, and its published joint position and velocity limits ("Robot and interface
specifications", frankaemika.github.io/docs/control_parameters.html). A modified-DH row
(a, d, alpha) is the URDF joint origin xyz = (a, -d sin(alpha), d cos(alpha)),
rpy = (alpha, 0, 0): Rx(alpha) Tx(a) then Rz(q) Tz(d), with Tz(d) moved in front of
Rz(q) (they commute) and expressed in the parent frame.

Geometry: each link is a "bone" cylinder from its frame origin to the next joint plus a
joint housing cylinder along its z axis; the inertial is a solid cylinder of the link's
mass on the bone (or the housing when the bone has no length). Masses are close to the
identified Panda link masses (Gaz et al., "Dynamic Identification of the Franka Emika
Panda Robot", RA-L 2019). Pure Python, no dependencies: `python3 scripts/gen_franka_urdf.py`.
"""
import math
import os

PI = math.pi
# (a, d, alpha) of joints 1..7 and the flange (Franka's published table).
DH = [
    (0.0, 0.333, 0.0),
    (0.0, 0.0, -PI / 2),
    (0.0, 0.316, PI / 2),
    (0.0825, 0.0, PI / 2),
    (-0.0825, 0.384, -PI / 2),
    (0.0, 0.0, PI / 2),
    (0.088, 0.0, PI / 2),
]
FLANGE_D = 0.107
Q_MIN = [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]
Q_MAX = [2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]
DQ_MAX = [2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100]
TAU_MAX = [87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0]
MASS = [2.92, 2.74, 2.74, 2.38, 2.38, 2.74, 1.55, 0.45]  # link0..link7
HAND_MASS = 0.73
TCP_OFFSET = 0.1034


def fmt(x):
    s = f"{x:.10f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def v3(v):
    return " ".join(fmt(x) for x in v)


def joint_origin(a, d, alpha):
    return (a, -d * math.sin(alpha), d * math.cos(alpha)), (alpha, 0.0, 0.0)


def rpy_z_to(v):
    """rpy whose rotation maps +z onto the unit vector along v (URDF rpy = Rz Ry Rx)."""
    n = math.sqrt(sum(c * c for c in v))
    x, y, z = (c / n for c in v)
    # Rotate about x by roll, then about y by pitch: R z = (sin p cos r, -sin r, cos p cos r).
    roll = math.asin(max(-1.0, min(1.0, -y)))
    pitch = math.atan2(x, z)
    return (roll, pitch, 0.0)


def cylinder_inertia(m, r, h):
    ixx = m * (3 * r * r + h * h) / 12.0
    return ixx, ixx, m * r * r / 2.0


def inertial_xml(m, xyz, rpy, r, h):
    ixx, iyy, izz = cylinder_inertia(m, r, h)
    return (
        f'    <inertial>\n      <origin xyz="{v3(xyz)}" rpy="{v3(rpy)}"/>\n'
        f'      <mass value="{fmt(m)}"/>\n'
        f'      <inertia ixx="{ixx:.6g}" ixy="0" ixz="0" iyy="{iyy:.6g}" iyz="0" izz="{izz:.6g}"/>\n'
        f"    </inertial>\n"
    )


def cyl_xml(tag, xyz, rpy, r, h, material=None):
    mat = f'\n      <material name="{material}"/>' if material else ""
    return (
        f"    <{tag}>\n      <origin xyz=\"{v3(xyz)}\" rpy=\"{v3(rpy)}\"/>\n"
        f'      <geometry><cylinder radius="{fmt(r)}" length="{fmt(h)}"/></geometry>{mat}\n'
        f"    </{tag}>\n"
    )


def box_xml(tag, xyz, size, material=None):
    mat = f'\n      <material name="{material}"/>' if material else ""
    return (
        f'    <{tag}>\n      <origin xyz="{v3(xyz)}" rpy="0 0 0"/>\n'
        f'      <geometry><box size="{v3(size)}"/></geometry>{mat}\n'
        f"    </{tag}>\n"
    )


def link_xml(i, next_xyz):
    name = f"panda_link{i}"
    r = 0.09 if i == 0 else 0.06 if i < 5 else 0.05
    out = f'  <link name="{name}">\n'
    length = math.sqrt(sum(c * c for c in next_xyz))
    material = "panda_white" if i % 2 == 0 else "panda_grey"
    parts = []
    if length > 1e-9:
        centre = tuple(c / 2 for c in next_xyz)
        rpy = rpy_z_to(next_xyz)
        parts.append((centre, rpy, r, length))
        out += inertial_xml(MASS[i], centre, rpy, r, length)
    housing = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0), r, 2.0 * r)
    if i > 0:
        parts.append(housing)
    if length <= 1e-9:
        out += inertial_xml(MASS[i], *housing)
    for xyz, rpy, rr, h in parts:
        out += cyl_xml("visual", xyz, rpy, rr, h, material)
    for xyz, rpy, rr, h in parts:
        out += cyl_xml("collision", xyz, rpy, rr, h)
    return out + "  </link>\n"


def hand_xml(fingers_in_hand):
    """The hand; with `fingers_in_hand` its two fingers are boxes of the hand's body (one
    rigid body, the built-in world's gripper), else the fingers are links of their own."""
    hand = '  <link name="panda_hand">\n'
    bx, by, bz = 0.06, 0.2, 0.06
    m = HAND_MASS
    hand += (
        f'    <inertial>\n      <origin xyz="0 0 {fmt(bz / 2)}" rpy="0 0 0"/>\n'
        f'      <mass value="{fmt(m)}"/>\n'
        f'      <inertia ixx="{m * (by * by + bz * bz) / 12:.6g}" ixy="0" ixz="0" '
        f'iyy="{m * (bx * bx + bz * bz) / 12:.6g}" iyz="0" izz="{m * (bx * bx + by * by) / 12:.6g}"/>\n'
        "    </inertial>\n"
    )
    palm = ((0.0, 0.0, bz / 2), (bx, by, bz))
    fingers = [((0.0, s * 0.02, 0.0816), (0.02, 0.015, 0.0436)) for s in (1, -1)]
    boxes = [palm] + (fingers if fingers_in_hand else [])
    for xyz, size in boxes:
        hand += box_xml("visual", xyz, size, "panda_black" if xyz != palm[0] else "panda_white")
    for xyz, size in boxes:
        hand += box_xml("collision", xyz, size)
    return hand + "  </link>\n\n"


def robot(gazebo):
    """The URDF text: the built-in world's (mock ros2_control hardware) or Gazebo's."""
    origins = [joint_origin(*row) for row in DH]
    flange = ((0.0, 0.0, FLANGE_D), (0.0, 0.0, 0.0))
    nexts = [o[0] for o in origins] + [flange[0]]
    out = ['<?xml version="1.0"?>\n']
    out.append(
        "<!--\n"
        "  franka_like: a Franka-Emika-Panda-like 7-DoF arm for dreamplan's built-in world,\n"
        "  Gazebo and ros2_control. Generated by scripts/gen_franka_urdf.py; edit that, not this.\n\n"
        "  Kinematics (joint origins) from Franka Emika's published modified DH parameters of\n"
        "  the Panda, joint position limits, velocity limits and torque limits from Franka's\n"
        "  \"Robot and interface specifications\" (https://frankaemika.github.io/docs/control_parameters.html):\n"
        "    a     = [0, 0, 0, 0.0825, -0.0825, 0, 0.088], flange d = 0.107\n"
        "    d     = [0.333, 0, 0.316, 0, 0.384, 0, 0]\n"
        "    alpha = [0, -pi/2, pi/2, pi/2, -pi/2, pi/2, pi/2]\n"
        "    q_min = [-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973] rad\n"
        "    q_max = [ 2.8973,  1.7628,  2.8973, -0.0698,  2.8973,  3.7525,  2.8973] rad\n"
        "    dq_max = [2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61] rad/s\n"
        "  Hand: rotated -pi/4 about the flange z axis; TCP (fingertip centre) 0.1034 m along the\n"
        "  hand's z axis. Geometry is simple cylinders and boxes; inertials are solid cylinders\n"
        "  and boxes with masses near the identified Panda values (Gaz et al., RA-L 2019).\n"
        "  The world -> panda_link0 joint places the arm base at the world origin (table top).\n"
        "  camera_link / camera_color_optical_frame: the built-in world's camera (REP-103).\n"
        "-->\n"
    )
    out.append('<robot name="franka_like">\n')
    out.append('  <material name="panda_white"><color rgba="0.92 0.92 0.92 1"/></material>\n')
    out.append('  <material name="panda_grey"><color rgba="0.35 0.35 0.38 1"/></material>\n')
    out.append('  <material name="panda_black"><color rgba="0.1 0.1 0.1 1"/></material>\n\n')
    out.append('  <link name="world"/>\n')
    out.append(
        '  <joint name="world_joint" type="fixed">\n    <parent link="world"/>\n'
        '    <child link="panda_link0"/>\n    <origin xyz="0 0 0" rpy="0 0 0"/>\n  </joint>\n\n'
    )
    for i in range(8):
        out.append(link_xml(i, nexts[i]) if i < 8 else "")
        if i < 7:
            xyz, rpy = origins[i]
            out.append(
                f'  <joint name="panda_joint{i + 1}" type="revolute">\n'
                f'    <parent link="panda_link{i}"/>\n    <child link="panda_link{i + 1}"/>\n'
                f'    <origin xyz="{v3(xyz)}" rpy="{v3(rpy)}"/>\n    <axis xyz="0 0 1"/>\n'
                f'    <limit lower="{fmt(Q_MIN[i])}" upper="{fmt(Q_MAX[i])}" '
                f'effort="{fmt(TAU_MAX[i])}" velocity="{fmt(DQ_MAX[i])}"/>\n'
                f'    <dynamics damping="0.1" friction="0"/>\n  </joint>\n\n'
            )
    out.append(
        '  <joint name="panda_joint8" type="fixed">\n    <parent link="panda_link7"/>\n'
        f'    <child link="panda_link8"/>\n    <origin xyz="0 0 {fmt(FLANGE_D)}" rpy="0 0 0"/>\n'
        "  </joint>\n\n"
    )
    out.append('  <link name="panda_link8"/>\n\n')
    out.append(
        '  <joint name="panda_hand_joint" type="fixed">\n    <parent link="panda_link8"/>\n'
        f'    <child link="panda_hand"/>\n    <origin xyz="0 0 0" rpy="0 0 {fmt(-PI / 4)}"/>\n'
        "  </joint>\n\n"
    )
    out.append(hand_xml(fingers_in_hand=not gazebo))
    out.append(
        '  <joint name="panda_tcp_joint" type="fixed">\n    <parent link="panda_hand"/>\n'
        f'    <child link="panda_tcp"/>\n    <origin xyz="0 0 {fmt(TCP_OFFSET)}" rpy="0 0 0"/>\n'
        "  </joint>\n\n"
    )
    out.append('  <link name="panda_tcp"/>\n\n')
    # The built-in world's camera (src/render/scene.rs default_camera: eye, target, z up),
    # as REP-103 frames: camera_link x forward, y left, z up; the optical frame z forward,
    # x right, y down. tests/urdf.rs checks that the optical frame is the renderer's.
    fx, fy, fz = (t - e for t, e in zip(CAM_TARGET, CAM_EYE))
    yaw = math.atan2(fy, fx)
    pitch = math.atan2(-fz, math.hypot(fx, fy))
    out.append(
        '  <joint name="camera_joint" type="fixed">\n    <parent link="world"/>\n'
        f'    <child link="camera_link"/>\n    <origin xyz="{v3(CAM_EYE)}" '
        f'rpy="0 {fmt(pitch)} {fmt(yaw)}"/>\n  </joint>\n'
        + (
            # Gazebo's URDF converter neither merges a fixed joint under `world` nor makes
            # a link without mass, so a massless camera_link would be dropped silently, and
            # its RGB-D sensor with it: in Gazebo the camera gets a small inertial.
            '  <link name="camera_link">\n    <inertial>\n      <mass value="0.1"/>\n'
            '      <inertia ixx="1e-05" ixy="0" ixz="0" iyy="1e-05" iyz="0" izz="1e-05"/>\n'
            "    </inertial>\n  </link>\n"
            if gazebo
            else '  <link name="camera_link"/>\n'
        )
        +
        '  <joint name="camera_optical_joint" type="fixed">\n    <parent link="camera_link"/>\n'
        '    <child link="camera_color_optical_frame"/>\n'
        f'    <origin xyz="0 0 0" rpy="{fmt(-PI / 2)} 0 {fmt(-PI / 2)}"/>\n  </joint>\n'
        '  <link name="camera_color_optical_frame"/>\n\n'
    )
    if gazebo:
        out.append(fingers_xml())
    hardware = "gz_ros2_control/GazeboSimSystem" if gazebo else "mock_components/GenericSystem"
    rc = (
        '  <ros2_control name="franka_like_system" type="system">\n'
        f"    <hardware>\n      <plugin>{hardware}</plugin>\n"
        "    </hardware>\n"
    )
    limits = list(zip(Q_MIN, Q_MAX, READY))
    names = [f"panda_joint{i + 1}" for i in range(7)]
    if gazebo:
        limits.append((0.0, FINGER_OPEN, FINGER_OPEN))
        names.append("panda_finger_joint1")
    for name, (lo, hi, init) in zip(names, limits):
        rc += (
            f'    <joint name="{name}">\n'
            f'      <command_interface name="position">\n'
            f'        <param name="min">{fmt(lo)}</param>\n'
            f'        <param name="max">{fmt(hi)}</param>\n'
            f"      </command_interface>\n"
            f'      <state_interface name="position">\n'
            f'        <param name="initial_value">{fmt(init)}</param>\n'
            f"      </state_interface>\n"
            f'      <state_interface name="velocity"/>\n'
            f"    </joint>\n"
        )
    out.append(rc + "  </ros2_control>\n")
    if gazebo:
        out.append(gazebo_xml())
    out.append("</robot>\n")
    text = "".join(out)
    if gazebo:
        text = text.replace(
            '<robot name="franka_like">',
            '<robot name="franka_like" xmlns:xacro="http://www.ros.org/wiki/xacro">\n'
            "  <!-- The ros2_control controllers file (gazebo.launch.xml passes\n"
            "       config/gazebo/controllers.yaml of the installed package). -->\n"
            '  <xacro:arg name="controllers" default="controllers.yaml"/>',
        ).replace(
            "  camera_link / camera_color_optical_frame: the built-in world's camera (REP-103).\n",
            "  camera_link / camera_color_optical_frame: the built-in world's camera (REP-103).\n\n"
            "  This is the Gazebo (gz sim Harmonic, ROS 2 Jazzy) variant, a xacro file for one argument:\n"
            "  `xacro franka_like_gazebo.urdf.xacro controllers:=FILE`. The left finger moves (panda_finger_joint1,\n"
            "  0 closed .. 0.04 m open), the right one is fixed to the hand; ros2_control runs on\n"
            "  gz_ros2_control/GazeboSimSystem (on Humble + Fortress: ign_ros2_control/IgnitionSystem\n"
            "  and the ign_ros2_control-system plugin); camera_link carries an RGB-D sensor that\n"
            "  sees what the built-in world's camera sees (54 degrees, 256 x 256, 10 Hz).\n",
        )
    return text


def fingers_xml():
    """A moving left finger (prismatic along the hand's y axis; its inner face at y = q)
    and a fixed right finger (inner face at y = 0): open 0.04 m, closed 0."""
    size = (0.02, 0.015, 0.0436)
    m = FINGER_MASS
    inertia = (
        f'      <inertia ixx="{m * (size[1] ** 2 + size[2] ** 2) / 12:.6g}" ixy="0" ixz="0" '
        f'iyy="{m * (size[0] ** 2 + size[2] ** 2) / 12:.6g}" iyz="0" '
        f'izz="{m * (size[0] ** 2 + size[1] ** 2) / 12:.6g}"/>\n'
    )
    out = ""
    for side, y in (("left", 1), ("right", -1)):
        centre = (0.0, y * size[1] / 2, size[2] / 2)
        out += (
            f'  <link name="panda_{side}finger">\n'
            f'    <inertial>\n      <origin xyz="{v3(centre)}" rpy="0 0 0"/>\n'
            f'      <mass value="{fmt(m)}"/>\n' + inertia + "    </inertial>\n"
            + box_xml("visual", centre, size, "panda_black")
            + box_xml("collision", centre, size)
            + "  </link>\n"
        )
    out += (
        '  <joint name="panda_finger_joint1" type="prismatic">\n'
        '    <parent link="panda_hand"/>\n    <child link="panda_leftfinger"/>\n'
        f'    <origin xyz="0 0 {fmt(FINGER_BASE)}" rpy="0 0 0"/>\n    <axis xyz="0 1 0"/>\n'
        f'    <limit lower="0" upper="{fmt(FINGER_OPEN)}" effort="20" velocity="0.2"/>\n'
        "  </joint>\n"
        '  <joint name="panda_rightfinger_joint" type="fixed">\n'
        '    <parent link="panda_hand"/>\n    <child link="panda_rightfinger"/>\n'
        f'    <origin xyz="0 0 {fmt(FINGER_BASE)}" rpy="0 0 0"/>\n'
        "  </joint>\n\n"
    )
    return out


def gazebo_xml():
    """gz_ros2_control (its controllers from this package) and the RGB-D camera sensor."""
    return (
        "  <gazebo>\n"
        '    <plugin filename="gz_ros2_control-system" '
        'name="gz_ros2_control::GazeboSimROS2ControlPlugin">\n'
        "      <parameters>$(arg controllers)</parameters>\n"
        "    </plugin>\n"
        "  </gazebo>\n"
        '  <gazebo reference="camera_link">\n'
        '    <sensor name="camera" type="rgbd_camera">\n'
        "      <topic>camera</topic>\n"
        "      <gz_frame_id>camera_color_optical_frame</gz_frame_id>\n"
        "      <update_rate>10</update_rate>\n"
        "      <always_on>true</always_on>\n"
        "      <camera>\n"
        f"        <horizontal_fov>{fmt(math.radians(CAM_HFOV_DEG))}</horizontal_fov>\n"
        f"        <image><width>{CAM_SIZE}</width><height>{CAM_SIZE}</height>"
        "<format>R8G8B8</format></image>\n"
        "        <clip><near>0.05</near><far>5</far></clip>\n"
        "      </camera>\n"
        "    </sensor>\n"
        "  </gazebo>\n"
    )


def main():
    here = os.path.join(os.path.dirname(__file__), "..", "urdf")
    for name, gazebo in (("franka_like.urdf", False), ("franka_like_gazebo.urdf.xacro", True)):
        with open(os.path.join(here, name), "w") as f:
            f.write(robot(gazebo))


# The built-in camera: where it is and what it looks at (world frame = arm base).
CAM_EYE = (1.0, 0.0, 0.8)
CAM_TARGET = (0.5, 0.0, 0.0)

# Franka's "ready" pose: gripper pointing down in front of the robot.
READY = [0.0, -PI / 4, 0.0, -3 * PI / 4, 0.0, PI / 2, PI / 4]

# The built-in camera's horizontal field of view and the Gazebo sensor's image size.
CAM_HFOV_DEG = 54.0
CAM_SIZE = 256
# The Gazebo variant's finger: where its joint sits on the hand, its travel and mass.
FINGER_BASE = 0.0584
FINGER_OPEN = 0.04
FINGER_MASS = 0.015

if __name__ == "__main__":
    main()
