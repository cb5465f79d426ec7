#!/usr/bin/env python3
"""The ROS 2 side of the graph for tests/dds_interop.rs, on Cyclone DDS from PyPI.

Cyclone DDS is the DDS behind rmw_cyclonedds_cpp; this script uses it bare, with the ROS 2
names and types written out here (topic `/x` is DDS topic `rt/x`, type `pkg/msg/Name` is
`pkg::msg::dds_::Name_`, samples are XCDR1 little-endian CDR), so nothing on this side
comes from the Rust code under test.

    dds_peer.py take --domain D --topic /camera/goal --type image --durability transient_local
    dds_peer.py publish-image --domain D --topic /peer/image --width 8 --height 4 --count 5
    dds_peer.py drive --domain D --scene DIR [--serve-action /arm_controller/follow_joint_trajectory --action-outcome abort]
    dds_peer.py param --domain D --node executor --list --set motion.cartesian_speed_m_s=0.1 --get motion.cartesian_speed_m_s
    dds_peer.py graph --domain D --expect /lab/executor --expect /lab/planner

`take` prints one JSON line per sample (its fields, the CRC-32 of the image bytes, the
type name the matched writer announced); `publish-image` waits for a reader, writes the
images and prints what it wrote. `drive` plays the robot's side of a real-arm deployment
for the planner and the executor: camera, depth, camera info, latched goal image and joint
states from the files in DIR (`scene.json`, `current.rgb`, `current_depth.f32`,
`goal.rgb`), one `reset` event, then prints the `KeypointAction`, the `JointTrajectory` and
the episode events it receives; with `--serve-action` it is the arm's trajectory controller
instead, serving control_msgs/action/FollowJointTrajectory (goal accepted or rejected,
then SUCCEEDED or ABORTED after `--action-hold` seconds, CANCELED on request), and waits
for the executor's event that follows the goal's end (with `--estop-after`, it engages the
e-stop mid-goal and waits for the executor's cancel request too); with `--serve-gripper` it
also serves control_msgs/action/GripperCommand as a GripperActionController (each goal
SUCCEEDED after 0.2 s, or ABORTED stalled per `--gripper-outcome`), prints each goal with
its arrival time and waits for the action's three gripper commands. `param` is a ROS parameter client (the services of
rcl_interfaces in rmw_cyclonedds_cpp's request/reply mapping): it lists, sets, reads and
describes a node's parameters and prints one JSON line (with `--events`, also the
`/parameter_events` the node published for its requests). `graph` reads the ROS graph as the
ROS 2 tools do (`ros2 node list`, and `ros2 param`, which looks a node up there first): the
`ros_discovery_info` topic of rmw_dds_common, where each participant lists its nodes and
their endpoints' GIDs (the Iron/Jazzy layout, 16-byte GIDs; `--gid-bytes 24` reads Humble's); it waits for the expected
nodes and prints each node with its endpoints, and for each endpoint GID whether a DDS
writer or reader with that GUID was discovered, and on which topic. Exit status 2 on a timeout. The caller sets
CYCLONEDDS_URI (tests use scripts/cyclone_loopback.xml: loopback only, no multicast).
"""

import argparse
import json
import sys
import time
import zlib
from dataclasses import dataclass

from cyclonedds.core import InstanceState, Policy, Qos, ReadCondition, SampleState, ViewState, WaitSet
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.idl import types as t
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration


@dataclass
class Time_(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: t.int32
    nanosec: t.uint32


@dataclass
class Header_(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time_
    frame_id: str


@dataclass
class Image_(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    header: Header_
    height: t.uint32
    width: t.uint32
    encoding: str
    is_bigendian: t.uint8
    step: t.uint32
    data: t.sequence[t.uint8]


@dataclass
class RegionOfInterest_(IdlStruct, typename="sensor_msgs::msg::dds_::RegionOfInterest_"):
    x_offset: t.uint32
    y_offset: t.uint32
    height: t.uint32
    width: t.uint32
    do_rectify: bool


@dataclass
class CameraInfo_(IdlStruct, typename="sensor_msgs::msg::dds_::CameraInfo_"):
    header: Header_
    height: t.uint32
    width: t.uint32
    distortion_model: str
    d: t.sequence[t.float64]
    k: t.array[t.float64, 9]
    r: t.array[t.float64, 9]
    p: t.array[t.float64, 12]
    binning_x: t.uint32
    binning_y: t.uint32
    roi: RegionOfInterest_


@dataclass
class NotAnImage_(IdlStruct, typename="sensor_msgs::msg::dds_::Image_"):
    """Claims the Image type name but holds one short string: a malformed Image on the wire."""

    note: str


@dataclass
class Point_(IdlStruct, typename="geometry_msgs::msg::dds_::Point_"):
    x: t.float64
    y: t.float64
    z: t.float64


@dataclass
class Duration_(IdlStruct, typename="builtin_interfaces::msg::dds_::Duration_"):
    sec: t.int32
    nanosec: t.uint32


@dataclass
class JointState_(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    header: Header_
    name: t.sequence[str]
    position: t.sequence[t.float64]
    velocity: t.sequence[t.float64]
    effort: t.sequence[t.float64]


@dataclass
class JointTrajectoryPoint_(IdlStruct, typename="trajectory_msgs::msg::dds_::JointTrajectoryPoint_"):
    positions: t.sequence[t.float64]
    velocities: t.sequence[t.float64]
    accelerations: t.sequence[t.float64]
    effort: t.sequence[t.float64]
    time_from_start: Duration_


@dataclass
class JointTrajectory_(IdlStruct, typename="trajectory_msgs::msg::dds_::JointTrajectory_"):
    header: Header_
    joint_names: t.sequence[str]
    points: t.sequence[JointTrajectoryPoint_]


# dreamplan's own messages, written out from msg/*.msg.
@dataclass
class EpisodeEvent_(IdlStruct, typename="dreamplan::msg::dds_::EpisodeEvent_"):
    header: Header_
    episode: t.uint32
    step: t.uint32
    task: str
    event: str
    score: t.float64
    detail: str


@dataclass
class KeypointAction_(IdlStruct, typename="dreamplan::msg::dds_::KeypointAction_"):
    header: Header_
    source_id: t.uint32
    target_id: t.uint32
    source_u: t.float32
    source_v: t.float32
    target_u: t.float32
    target_v: t.float32
    source_point: Point_
    target_point: Point_
    has_points: bool
    raw_text: str
    log_prob: t.float64
    num_tokens: t.uint32



# rcl_interfaces, for the parameter services. A service is two topics in the mapping of
# rmw_cyclonedds_cpp: requests on `rq/<node>/<service>Request`, replies on
# `rr/<node>/<service>Reply`, each sample led by the client's header (a 64-bit client id
# and a 64-bit sequence number) that the reply carries back.
@dataclass
class ParameterValue_(IdlStruct, typename="rcl_interfaces::msg::dds_::ParameterValue_"):
    type: t.uint8
    bool_value: bool
    integer_value: t.int64
    double_value: t.float64
    string_value: str
    byte_array_value: t.sequence[t.uint8]
    bool_array_value: t.sequence[bool]
    integer_array_value: t.sequence[t.int64]
    double_array_value: t.sequence[t.float64]
    string_array_value: t.sequence[str]


@dataclass
class Parameter_(IdlStruct, typename="rcl_interfaces::msg::dds_::Parameter_"):
    name: str
    value: ParameterValue_


@dataclass
class ParameterEvent_(IdlStruct, typename="rcl_interfaces::msg::dds_::ParameterEvent_"):
    stamp: Time_
    node: str
    new_parameters: t.sequence[Parameter_]
    changed_parameters: t.sequence[Parameter_]
    deleted_parameters: t.sequence[Parameter_]


@dataclass
class SetParametersResult_(IdlStruct, typename="rcl_interfaces::msg::dds_::SetParametersResult_"):
    successful: bool
    reason: str


@dataclass
class ListParametersResult_(IdlStruct, typename="rcl_interfaces::msg::dds_::ListParametersResult_"):
    names: t.sequence[str]
    prefixes: t.sequence[str]


@dataclass
class SetParametersRequest_(IdlStruct, typename="rcl_interfaces::srv::dds_::SetParameters_Request_"):
    client_id: t.uint64
    sequence: t.int64
    parameters: t.sequence[Parameter_]


@dataclass
class SetParametersReply_(IdlStruct, typename="rcl_interfaces::srv::dds_::SetParameters_Response_"):
    client_id: t.uint64
    sequence: t.int64
    results: t.sequence[SetParametersResult_]


@dataclass
class SetParametersAtomicallyRequest_(IdlStruct, typename="rcl_interfaces::srv::dds_::SetParametersAtomically_Request_"):
    client_id: t.uint64
    sequence: t.int64
    parameters: t.sequence[Parameter_]


@dataclass
class SetParametersAtomicallyReply_(IdlStruct, typename="rcl_interfaces::srv::dds_::SetParametersAtomically_Response_"):
    client_id: t.uint64
    sequence: t.int64
    result: SetParametersResult_


@dataclass
class GetParametersRequest_(IdlStruct, typename="rcl_interfaces::srv::dds_::GetParameters_Request_"):
    client_id: t.uint64
    sequence: t.int64
    names: t.sequence[str]


@dataclass
class GetParametersReply_(IdlStruct, typename="rcl_interfaces::srv::dds_::GetParameters_Response_"):
    client_id: t.uint64
    sequence: t.int64
    values: t.sequence[ParameterValue_]


@dataclass
class ListParametersRequest_(IdlStruct, typename="rcl_interfaces::srv::dds_::ListParameters_Request_"):
    client_id: t.uint64
    sequence: t.int64
    prefixes: t.sequence[str]
    depth: t.uint64


@dataclass
class ListParametersReply_(IdlStruct, typename="rcl_interfaces::srv::dds_::ListParameters_Response_"):
    client_id: t.uint64
    sequence: t.int64
    result: ListParametersResult_


@dataclass
class DescribeParametersRequest_(IdlStruct, typename="rcl_interfaces::srv::dds_::DescribeParameters_Request_"):
    client_id: t.uint64
    sequence: t.int64
    names: t.sequence[str]


@dataclass
class FloatingPointRange_(IdlStruct, typename="rcl_interfaces::msg::dds_::FloatingPointRange_"):
    from_value: t.float64
    to_value: t.float64
    step: t.float64


@dataclass
class IntegerRange_(IdlStruct, typename="rcl_interfaces::msg::dds_::IntegerRange_"):
    from_value: t.int64
    to_value: t.int64
    step: t.uint64


@dataclass
class ParameterDescriptor_(IdlStruct, typename="rcl_interfaces::msg::dds_::ParameterDescriptor_"):
    name: str
    type: t.uint8
    description: str
    additional_constraints: str
    read_only: bool
    dynamic_typing: bool
    floating_point_range: t.sequence[FloatingPointRange_, 1]
    integer_range: t.sequence[IntegerRange_, 1]


@dataclass
class DescribeParametersReply_(IdlStruct, typename="rcl_interfaces::srv::dds_::DescribeParameters_Response_"):
    client_id: t.uint64
    sequence: t.int64
    descriptors: t.sequence[ParameterDescriptor_]


def graph_types(gid_bytes):
    """rmw_dds_common's graph messages with `gid_bytes`-byte GIDs: 16 in Iron, Jazzy and
    later, 24 in Humble (the GUID then 8 zero bytes)."""

    @dataclass
    class Gid_(IdlStruct, typename="rmw_dds_common::msg::dds_::Gid_"):
        data: t.array[t.uint8, gid_bytes]

    @dataclass
    class NodeEntitiesInfo_(IdlStruct, typename="rmw_dds_common::msg::dds_::NodeEntitiesInfo_"):
        node_namespace: str
        node_name: str
        reader_gid_seq: t.sequence[Gid_]
        writer_gid_seq: t.sequence[Gid_]

    @dataclass
    class ParticipantEntitiesInfo_(IdlStruct, typename="rmw_dds_common::msg::dds_::ParticipantEntitiesInfo_"):
        gid: Gid_
        node_entities_info_seq: t.sequence[NodeEntitiesInfo_]

    return ParticipantEntitiesInfo_


@dataclass
class Bool_(IdlStruct, typename="std_msgs::msg::dds_::Bool_"):
    data: bool


# control_msgs/action/FollowJointTrajectory as a ROS 2 action server has it on the wire
# (Humble/Jazzy layout): services `<action>/_action/{send_goal,get_result,cancel_goal}`,
# topics `<action>/_action/{status,feedback}`; every request and reply led by the
# rmw_cyclonedds_cpp header {client_id, sequence}.
@dataclass
class UUID_(IdlStruct, typename="unique_identifier_msgs::msg::dds_::UUID_"):
    uuid: t.array[t.uint8, 16]


@dataclass
class Vector3_(IdlStruct, typename="geometry_msgs::msg::dds_::Vector3_"):
    x: t.float64
    y: t.float64
    z: t.float64


@dataclass
class Quaternion_(IdlStruct, typename="geometry_msgs::msg::dds_::Quaternion_"):
    x: t.float64
    y: t.float64
    z: t.float64
    w: t.float64


@dataclass
class Pose_(IdlStruct, typename="geometry_msgs::msg::dds_::Pose_"):
    position: Point_
    orientation: Quaternion_


@dataclass
class ColorRGBA_(IdlStruct, typename="std_msgs::msg::dds_::ColorRGBA_"):
    r: t.float32
    g: t.float32
    b: t.float32
    a: t.float32


@dataclass
class CompressedImage_(IdlStruct, typename="sensor_msgs::msg::dds_::CompressedImage_"):
    header: Header_
    format: str
    data: t.sequence[t.uint8]


@dataclass
class UVCoordinate_(IdlStruct, typename="visualization_msgs::msg::dds_::UVCoordinate_"):
    u: t.float32
    v: t.float32


@dataclass
class MeshFile_(IdlStruct, typename="visualization_msgs::msg::dds_::MeshFile_"):
    filename: str
    data: t.sequence[t.uint8]


@dataclass
class Marker_(IdlStruct, typename="visualization_msgs::msg::dds_::Marker_"):
    """visualization_msgs/Marker as RViz reads it (Humble to Jazzy: the same fields)."""

    header: Header_
    ns: str
    id: t.int32
    type: t.int32
    action: t.int32
    pose: Pose_
    scale: Vector3_
    color: ColorRGBA_
    lifetime: Duration_
    frame_locked: bool
    points: t.sequence[Point_]
    colors: t.sequence[ColorRGBA_]
    texture_resource: str
    texture: CompressedImage_
    uv_coordinates: t.sequence[UVCoordinate_]
    text: str
    mesh_resource: str
    mesh_file: MeshFile_
    mesh_use_embedded_materials: bool


@dataclass
class MarkerArray_(IdlStruct, typename="visualization_msgs::msg::dds_::MarkerArray_"):
    markers: t.sequence[Marker_]


@dataclass
class Transform_(IdlStruct, typename="geometry_msgs::msg::dds_::Transform_"):
    translation: Vector3_
    rotation: Quaternion_


@dataclass
class Twist_(IdlStruct, typename="geometry_msgs::msg::dds_::Twist_"):
    linear: Vector3_
    angular: Vector3_


@dataclass
class MultiDOFJointTrajectoryPoint_(IdlStruct, typename="trajectory_msgs::msg::dds_::MultiDOFJointTrajectoryPoint_"):
    transforms: t.sequence[Transform_]
    velocities: t.sequence[Twist_]
    accelerations: t.sequence[Twist_]
    time_from_start: Duration_


@dataclass
class MultiDOFJointTrajectory_(IdlStruct, typename="trajectory_msgs::msg::dds_::MultiDOFJointTrajectory_"):
    header: Header_
    joint_names: t.sequence[str]
    points: t.sequence[MultiDOFJointTrajectoryPoint_]


@dataclass
class JointTolerance_(IdlStruct, typename="control_msgs::msg::dds_::JointTolerance_"):
    name: str
    position: t.float64
    velocity: t.float64
    acceleration: t.float64


@dataclass
class JointComponentTolerance_(IdlStruct, typename="control_msgs::msg::dds_::JointComponentTolerance_"):
    joint_name: str
    component: t.uint16
    position: t.float64
    velocity: t.float64
    acceleration: t.float64


@dataclass
class FollowJointTrajectoryGoal_(IdlStruct, typename="control_msgs::action::dds_::FollowJointTrajectory_Goal_"):
    trajectory: JointTrajectory_
    multi_dof_trajectory: MultiDOFJointTrajectory_
    path_tolerance: t.sequence[JointTolerance_]
    component_path_tolerance: t.sequence[JointComponentTolerance_]
    goal_tolerance: t.sequence[JointTolerance_]
    component_goal_tolerance: t.sequence[JointComponentTolerance_]
    goal_time_tolerance: Duration_


@dataclass
class FollowJointTrajectoryResult_(IdlStruct, typename="control_msgs::action::dds_::FollowJointTrajectory_Result_"):
    error_code: t.int32
    error_string: str


@dataclass
class SendGoalRequest_(IdlStruct, typename="control_msgs::action::dds_::FollowJointTrajectory_SendGoal_Request_"):
    client_id: t.uint64
    sequence: t.int64
    goal_id: UUID_
    goal: FollowJointTrajectoryGoal_


@dataclass
class SendGoalReply_(IdlStruct, typename="control_msgs::action::dds_::FollowJointTrajectory_SendGoal_Response_"):
    client_id: t.uint64
    sequence: t.int64
    accepted: bool
    stamp: Time_


@dataclass
class GetResultRequest_(IdlStruct, typename="control_msgs::action::dds_::FollowJointTrajectory_GetResult_Request_"):
    client_id: t.uint64
    sequence: t.int64
    goal_id: UUID_


@dataclass
class GetResultReply_(IdlStruct, typename="control_msgs::action::dds_::FollowJointTrajectory_GetResult_Response_"):
    client_id: t.uint64
    sequence: t.int64
    status: t.int8
    result: FollowJointTrajectoryResult_


# control_msgs/action/GripperCommand, as a GripperActionController serves it.
@dataclass
class GripperCommand_(IdlStruct, typename="control_msgs::msg::dds_::GripperCommand_"):
    position: t.float64
    max_effort: t.float64


@dataclass
class GripperCommandGoal_(IdlStruct, typename="control_msgs::action::dds_::GripperCommand_Goal_"):
    command: GripperCommand_


@dataclass
class GripperCommandResult_(IdlStruct, typename="control_msgs::action::dds_::GripperCommand_Result_"):
    position: t.float64
    effort: t.float64
    stalled: bool
    reached_goal: bool


@dataclass
class GripperSendGoalRequest_(IdlStruct, typename="control_msgs::action::dds_::GripperCommand_SendGoal_Request_"):
    client_id: t.uint64
    sequence: t.int64
    goal_id: UUID_
    goal: GripperCommandGoal_


@dataclass
class GripperSendGoalReply_(IdlStruct, typename="control_msgs::action::dds_::GripperCommand_SendGoal_Response_"):
    client_id: t.uint64
    sequence: t.int64
    accepted: bool
    stamp: Time_


@dataclass
class GripperGetResultRequest_(IdlStruct, typename="control_msgs::action::dds_::GripperCommand_GetResult_Request_"):
    client_id: t.uint64
    sequence: t.int64
    goal_id: UUID_


@dataclass
class GripperGetResultReply_(IdlStruct, typename="control_msgs::action::dds_::GripperCommand_GetResult_Response_"):
    client_id: t.uint64
    sequence: t.int64
    status: t.int8
    result: GripperCommandResult_


# control_msgs/action/ParallelGripperCommand (control_msgs 5, Jazzy): the command is a
# sensor_msgs/JointState.
@dataclass
class ParallelGripperCommandGoal_(IdlStruct, typename="control_msgs::action::dds_::ParallelGripperCommand_Goal_"):
    command: JointState_


@dataclass
class ParallelGripperCommandResult_(IdlStruct, typename="control_msgs::action::dds_::ParallelGripperCommand_Result_"):
    state: JointState_
    stalled: bool
    reached_goal: bool


@dataclass
class ParallelSendGoalRequest_(IdlStruct, typename="control_msgs::action::dds_::ParallelGripperCommand_SendGoal_Request_"):
    client_id: t.uint64
    sequence: t.int64
    goal_id: UUID_
    goal: ParallelGripperCommandGoal_


@dataclass
class ParallelSendGoalReply_(IdlStruct, typename="control_msgs::action::dds_::ParallelGripperCommand_SendGoal_Response_"):
    client_id: t.uint64
    sequence: t.int64
    accepted: bool
    stamp: Time_


@dataclass
class ParallelGetResultRequest_(IdlStruct, typename="control_msgs::action::dds_::ParallelGripperCommand_GetResult_Request_"):
    client_id: t.uint64
    sequence: t.int64
    goal_id: UUID_


@dataclass
class ParallelGetResultReply_(IdlStruct, typename="control_msgs::action::dds_::ParallelGripperCommand_GetResult_Response_"):
    client_id: t.uint64
    sequence: t.int64
    status: t.int8
    result: ParallelGripperCommandResult_


@dataclass
class GoalInfo_(IdlStruct, typename="action_msgs::msg::dds_::GoalInfo_"):
    goal_id: UUID_
    stamp: Time_


@dataclass
class GoalStatus_(IdlStruct, typename="action_msgs::msg::dds_::GoalStatus_"):
    goal_info: GoalInfo_
    status: t.int8


@dataclass
class GoalStatusArray_(IdlStruct, typename="action_msgs::msg::dds_::GoalStatusArray_"):
    status_list: t.sequence[GoalStatus_]


@dataclass
class CancelGoalRequest_(IdlStruct, typename="action_msgs::srv::dds_::CancelGoal_Request_"):
    client_id: t.uint64
    sequence: t.int64
    goal_info: GoalInfo_


@dataclass
class CancelGoalReply_(IdlStruct, typename="action_msgs::srv::dds_::CancelGoal_Response_"):
    client_id: t.uint64
    sequence: t.int64
    return_code: t.int8
    goals_canceling: t.sequence[GoalInfo_]


TYPES = {"image": Image_, "camera_info": CameraInfo_}


def qos(durability, depth, reliable=True):
    return Qos(
        Policy.Reliability.Reliable(duration(seconds=1)) if reliable else Policy.Reliability.BestEffort,
        Policy.Durability.TransientLocal if durability == "transient_local" else Policy.Durability.Volatile,
        Policy.History.KeepLast(depth),
        # XCDR1: what ROS 2 and RustDDS read.
        Policy.DataRepresentation(use_cdrv0_representation=True),
    )


def dds_topic(ros_topic):
    if not ros_topic.startswith("/"):
        sys.exit(f"topic {ros_topic!r} must be absolute")
    return "rt" + ros_topic


def describe(sample):
    out = {"frame_id": sample.header.frame_id, "stamp": [sample.header.stamp.sec, sample.header.stamp.nanosec]}
    out["width"], out["height"] = sample.width, sample.height
    if isinstance(sample, Image_):
        data = bytes(sample.data)
        out.update(encoding=sample.encoding, step=sample.step, bytes=len(data), crc32=zlib.crc32(data))
    else:
        out.update(distortion_model=sample.distortion_model, k=list(sample.k))
    return out


def take(args):
    dp = DomainParticipant(args.domain)
    q = qos(args.durability, args.depth, reliable=not args.best_effort)
    topic = Topic(dp, dds_topic(args.topic), TYPES[args.type], qos=q)
    reader = DataReader(dp, topic, qos=q)
    waitset = WaitSet(dp)
    cond = ReadCondition(reader, ViewState.Any | InstanceState.Any | SampleState.NotRead)
    waitset.attach(cond)
    deadline = time.monotonic() + args.timeout
    got = 0
    while got < args.count:
        left = deadline - time.monotonic()
        if left <= 0:
            print(json.dumps({"timeout": True, "got": got}), flush=True)
            return 2
        waitset.wait(duration(seconds=min(left, 1.0)))
        for sample in reader.take(N=args.count - got, condition=cond):
            line = describe(sample)
            matched = [reader.get_matched_publication_data(h) for h in reader.get_matched_publications()]
            line["writer_types"] = sorted({m.type_name for m in matched if m is not None})
            print(json.dumps(line), flush=True)
            got += 1
    return 0


def publish_image(args):
    dp = DomainParticipant(args.domain)
    q = qos(args.durability, max(args.count, 1), reliable=not args.best_effort)
    topic = Topic(dp, dds_topic(args.topic), Image_, qos=q)
    writer = DataWriter(dp, topic, qos=q)
    deadline = time.monotonic() + args.timeout
    while args.wait_reader and not writer.get_matched_subscriptions():
        if time.monotonic() > deadline:
            print(json.dumps({"timeout": True, "matched": 0}), flush=True)
            return 2
        time.sleep(0.05)
    if args.malformed_first:
        # Same topic and type name, another layout: a reader decoding it as an Image runs
        # out of bytes. Written through its own writer before the good images.
        dp_bad = DomainParticipant(args.domain)
        bad_topic = Topic(dp_bad, dds_topic(args.topic), NotAnImage_, qos=q)
        bad = DataWriter(dp_bad, bad_topic, qos=q)
        while args.wait_reader and not bad.get_matched_subscriptions():
            if time.monotonic() > deadline:
                print(json.dumps({"timeout": True, "matched": 0}), flush=True)
                return 2
            time.sleep(0.05)
        bad.write(NotAnImage_(note="x"))
        bad.wait_for_acks(duration(seconds=5))
        print(json.dumps({"wrote_malformed": True}), flush=True)
        time.sleep(args.period)
    for i in range(args.count):
        data = bytes((x * 7 + y * 13 + i * 29 + c) % 256 for y in range(args.height) for x in range(args.width) for c in range(3))
        img = Image_(
            header=Header_(stamp=Time_(sec=100 + i, nanosec=i), frame_id="peer_camera"),
            height=args.height,
            width=args.width,
            encoding="rgb8",
            is_bigendian=0,
            step=args.width * 3,
            data=data,
        )
        writer.write(img)
        print(json.dumps({"wrote": i, "bytes": len(data), "crc32": zlib.crc32(data)}), flush=True)
        time.sleep(args.period)
    writer.wait_for_acks(duration(seconds=5))
    time.sleep(args.linger)
    return 0


# action_msgs/GoalStatus values.
STATUS_ACCEPTED, STATUS_EXECUTING, STATUS_SUCCEEDED, STATUS_CANCELED, STATUS_ABORTED = 1, 2, 4, 5, 6


class ActionServer:
    """An action server as rcl_action presents it: it accepts (or, with outcome `reject`,
    rejects) each goal, "moves" for `hold` seconds (None: the goal's own duration), then
    ends the goal by `self.end(goal)`; a cancel request ends it CANCELED. get_result
    requests are answered when the goal ends. Subclasses give the types, how a goal is
    described, how it ends and its result."""

    TYPES = None  # (SendGoal request, reply, GetResult request, reply)

    def __init__(self, dp, action, outcome, hold, accept_after=0.0):
        svc, latched = qos("volatile", 10), qos("transient_local", 1)
        base = action.lstrip("/") + "/_action/"

        def pair(service, req, reply):
            reader = DataReader(dp, Topic(dp, f"rq/{base}{service}Request", req, qos=svc), qos=svc)
            writer = DataWriter(dp, Topic(dp, f"rr/{base}{service}Reply", reply, qos=svc), qos=svc)
            return reader, writer

        goal_req, self.goal_reply_type, result_req, self.reply_type = self.TYPES
        self.goal_r, self.goal_w = pair("send_goal", goal_req, self.goal_reply_type)
        self.result_r, self.result_w = pair("get_result", result_req, self.reply_type)
        self.cancel_r, self.cancel_w = pair("cancel_goal", CancelGoalRequest_, CancelGoalReply_)
        self.status_w = DataWriter(dp, Topic(dp, f"rt/{base}status", GoalStatusArray_, qos=latched), qos=latched)
        self.outcome, self.hold, self.accept_after = outcome, hold, accept_after
        self.pending = []  # goal requests answered `accept_after` seconds after they came
        self.goals = {}  # uuid bytes -> dict(status, info, ends, waiting)
        self.log = []

    def matched(self):
        return bool(self.goal_r.get_matched_publications() and self.result_r.get_matched_publications())

    def _publish_status(self):
        self.status_w.write(GoalStatusArray_(status_list=[
            GoalStatus_(goal_info=g["info"], status=g["status"]) for g in self.goals.values()]))

    def _answer(self, key, client_id, sequence):
        g = self.goals[key]
        self.result_w.write(self.reply_type(client_id=client_id, sequence=sequence, status=g["status"],
                                            result=self.result(g)))

    def spin_once(self):
        """Handles what arrived; returns the goals received (as JSON-able dicts)."""
        received = []
        now = time.time()
        for r in self.goal_r.take(N=8):
            d = self.describe(r.goal)
            d.update({"accepted": self.outcome != "reject", "writer_types": writer_types(self.goal_r),
                      "at": time.monotonic()})
            received.append(d)
            self.pending.append((time.monotonic() + self.accept_after, r))
        due = [r for at, r in self.pending if at <= time.monotonic()]
        self.pending = [(at, r) for at, r in self.pending if at > time.monotonic()]
        for r in due:
            key = bytes(r.goal_id.uuid)
            accepted = self.outcome != "reject"
            stamp = Time_(sec=int(now), nanosec=int((now % 1) * 1e9))
            self.goal_w.write(self.goal_reply_type(client_id=r.client_id, sequence=r.sequence, accepted=accepted, stamp=stamp))
            if accepted:
                hold = self.hold if self.hold is not None else self.duration(r.goal)
                self.goals[key] = {"status": STATUS_EXECUTING, "info": GoalInfo_(goal_id=r.goal_id, stamp=stamp),
                                   "ends": time.monotonic() + hold, "waiting": [], "goal": r.goal,
                                   "accepted_at": time.monotonic()}
                self.log.append({"accepted": type(self).__name__, "at": time.monotonic()})
                self._publish_status()
        for r in self.result_r.take(N=8):
            key = bytes(r.goal_id.uuid)
            g = self.goals.get(key)
            if g is None:
                continue
            if g["status"] in (STATUS_SUCCEEDED, STATUS_ABORTED, STATUS_CANCELED):
                self._answer(key, r.client_id, r.sequence)
            else:
                g["waiting"].append((r.client_id, r.sequence))
        for r in self.cancel_r.take(N=8):
            key = bytes(r.goal_info.goal_id.uuid)
            canceling = []
            for k, g in self.goals.items():
                if (k == key or not any(key)) and g["status"] == STATUS_EXECUTING:
                    g["status"], g["ends"] = STATUS_CANCELED, 0.0
                    canceling.append(g["info"])
                    self.log.append({"canceled": True})
            self.cancel_w.write(CancelGoalReply_(client_id=r.client_id, sequence=r.sequence,
                                                 return_code=0 if canceling else 2, goals_canceling=canceling))
        for key, g in self.goals.items():
            ended = g["status"] == STATUS_CANCELED and g["ends"] == 0.0
            if g["status"] == STATUS_EXECUTING and time.monotonic() >= g["ends"]:
                g["status"] = self.end(g["goal"])
                ended = True
            if ended:
                g["ends"] = -1.0
                self._publish_status()
                for client_id, sequence in g["waiting"]:
                    self._answer(key, client_id, sequence)
                g["waiting"] = []
        return received


class TrajectoryActionServer(ActionServer):
    """FollowJointTrajectory as a ros2_control controller serves it: the goal ends as
    `succeed` (SUCCEEDED, error 0) or `abort` (ABORTED, PATH_TOLERANCE_VIOLATED)."""

    TYPES = (SendGoalRequest_, SendGoalReply_, GetResultRequest_, GetResultReply_)

    def describe(self, goal):
        tr = goal.trajectory
        return {
            "joint_names": list(tr.joint_names),
            "points": [{"positions": list(p.positions), "t": p.time_from_start.sec + p.time_from_start.nanosec * 1e-9}
                       for p in tr.points],
            "tolerances": [len(goal.path_tolerance), len(goal.component_path_tolerance),
                           len(goal.goal_tolerance), len(goal.component_goal_tolerance)],
            "multi_dof_points": len(goal.multi_dof_trajectory.points),
        }

    def duration(self, goal):
        p = goal.trajectory.points[-1].time_from_start
        return p.sec + p.nanosec * 1e-9

    def end(self, goal):
        return STATUS_SUCCEEDED if self.outcome == "succeed" else STATUS_ABORTED

    def result(self, g):
        code, text = {STATUS_SUCCEEDED: (0, "Goal successfully reached!"),
                      STATUS_ABORTED: (-4, "peer: joint panda_joint2 left its path tolerance"),
                      STATUS_CANCELED: (0, "Goal canceled")}[g["status"]]
        return FollowJointTrajectoryResult_(error_code=code, error_string=text)


class GripperActionServer(ActionServer):
    """GripperCommand as ros2_controllers' GripperActionController (allow_stalling false)
    serves it: a goal reaches its position (SUCCEEDED, reached_goal) unless the outcome
    says otherwise for closing goals (the lower position): `stall` ends them ABORTED with
    stalled (the fingers stopped on the object), `abort` ends opening goals ABORTED with
    stalled (something blocks them)."""

    TYPES = (GripperSendGoalRequest_, GripperSendGoalReply_, GripperGetResultRequest_, GripperGetResultReply_)

    def __init__(self, dp, action, outcome, closed_below):
        super().__init__(dp, action, "succeed", 0.2)
        self.gripper_outcome, self.closed_below = outcome, closed_below

    def describe(self, goal):
        return {"position": goal.command.position, "max_effort": goal.command.max_effort}

    def position(self, goal):
        return goal.command.position

    def end(self, goal):
        closing = self.position(goal) < self.closed_below
        if (self.gripper_outcome == "stall" and closing) or (self.gripper_outcome == "abort" and not closing):
            return STATUS_ABORTED
        return STATUS_SUCCEEDED

    def result(self, g):
        ok = g["status"] == STATUS_SUCCEEDED
        return GripperCommandResult_(position=g["goal"].command.position if ok else 0.3, effort=5.0,
                                     stalled=g["status"] == STATUS_ABORTED, reached_goal=ok)


class ParallelGripperActionServer(GripperActionServer):
    """ParallelGripperCommand as Jazzy's parallel_gripper_action_controller serves it: the
    command's first position is the target, its effort (if any) the limit."""

    TYPES = (ParallelSendGoalRequest_, ParallelSendGoalReply_, ParallelGetResultRequest_, ParallelGetResultReply_)

    def describe(self, goal):
        c = goal.command
        return {"name": list(c.name), "position": c.position[0] if c.position else None,
                "positions": list(c.position), "effort": list(c.effort), "velocity": list(c.velocity)}

    def position(self, goal):
        return goal.command.position[0]

    def result(self, g):
        ok = g["status"] == STATUS_SUCCEEDED
        state = JointState_(header=Header_(stamp=Time_(sec=0, nanosec=0), frame_id=""), name=list(g["goal"].command.name),
                            position=[self.position(g["goal"]) if ok else 0.3], velocity=[], effort=[5.0])
        return ParallelGripperCommandResult_(state=state, stalled=g["status"] == STATUS_ABORTED, reached_goal=ok)


def writer_types(reader):
    matched = [reader.get_matched_publication_data(h) for h in reader.get_matched_publications()]
    return sorted({m.type_name for m in matched if m is not None})


def drive(args):
    """The robot's side of a real-arm graph: sensors in, one decision and its motion out."""
    with open(f"{args.scene}/scene.json") as f:
        scene = json.load(f)
    w, h = scene["width"], scene["height"]
    rgb = open(f"{args.scene}/current.rgb", "rb").read()
    depth = open(f"{args.scene}/current_depth.f32", "rb").read()
    goal = open(f"{args.scene}/goal.rgb", "rb").read()
    assert len(rgb) == w * h * 3 and len(depth) == w * h * 4 and len(goal) == w * h * 3
    dp = DomainParticipant(args.domain)
    # As a camera driver or ros_gz_bridge publishes: images, depth and camera info best
    # effort (the sensor-data profile), the camera info with every frame, not latched.
    stream = qos("volatile", 5, reliable=False)
    latched, events_q = qos("transient_local", 1), qos("volatile", 100)

    def writer(topic, typ, q):
        return DataWriter(dp, Topic(dp, dds_topic(topic), typ, qos=q), qos=q)

    def reader(topic, typ, q):
        return DataReader(dp, Topic(dp, dds_topic(topic), typ, qos=q), qos=q)

    image_w = writer("/camera/image_raw", Image_, stream)
    depth_w = writer("/camera/depth/image_raw", Image_, stream)
    info_w = writer("/camera/camera_info", CameraInfo_, stream)
    # A volatile goal writer is what rclpy's create_publisher(Image, "/goal/image", 10) makes.
    goal_w = writer("/goal/image", Image_, qos("volatile", 10) if args.goal_volatile else latched)
    joints_w = writer("/joint_states", JointState_, qos("volatile", 10))
    episode_w = writer("/dreamplan/episode", EpisodeEvent_, events_q)
    action_r = reader("/planner/action", KeypointAction_, qos("volatile", 1))
    traj_r = reader(args.trajectory_topic, JointTrajectory_, qos("volatile", 1))
    episode_r = reader("/dreamplan/episode", EpisodeEvent_, events_q)
    # As RViz's MarkerArray display with durability Transient Local.
    markers_r = reader("/dreamplan/markers", MarkerArray_, latched)
    frame = "camera_color_optical_frame"
    hold = None if args.action_hold < 0 else args.action_hold
    server = TrajectoryActionServer(dp, args.serve_action, args.action_outcome, hold, args.accept_after) \
        if args.serve_action else None
    gripper_server = ParallelGripperActionServer if args.parallel_gripper else GripperActionServer
    gripper = gripper_server(dp, args.serve_gripper, args.gripper_outcome, args.gripper_closed_below) \
        if args.serve_gripper else None
    # A volatile e-stop writer is what rclcpp's create_publisher<Bool>("/estop", 10) makes.
    estop_qos = qos("volatile", 10) if args.estop_volatile else latched
    estop_w = writer("/estop", Bool_, estop_qos) if args.estop_after is not None else None
    estop_at = None

    def header(now):
        return Header_(stamp=Time_(sec=int(now), nanosec=int((now % 1) * 1e9)), frame_id=frame)

    def image(data, encoding, bytes_per_px, now):
        return Image_(header=header(now), height=h, width=w, encoding=encoding, is_bigendian=0, step=w * bytes_per_px, data=data)

    k = scene["k"]

    def camera_info(now):
        return CameraInfo_(
            header=header(now), height=h, width=w, distortion_model="plumb_bob", d=[0.0] * 5, k=k,
            r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], p=[k[0], 0, k[2], 0, 0, k[4], k[5], 0, 0, 0, 1.0, 0],
            binning_x=0, binning_y=0, roi=RegionOfInterest_(0, 0, 0, 0, False))

    # A latched goal is written once and reaches readers that join later; a volatile one
    # only readers matched when it is written, so it is written once the planner's (and
    # the verifier's) goal readers are matched, before the decision is asked for.
    goal_written = not args.goal_volatile
    if goal_written:
        goal_w.write(image(goal, "rgb8", 3, time.time()))
    deadline = time.monotonic() + args.timeout
    got = {"action": None, "trajectory": None, "events": []}
    # Episodes to ask for, each with the camera image it gets: with --bad-first, first an
    # image in an encoding the planner does not read and one whose size its bytes do not fill (each must
    # end its episode with a `failed` event), then the real one.
    plan = [(args.episode, "rgb8", w, h)]
    if args.bad_first:
        plan = [(5, "yuv422", w, h), (6, "rgb8", 4096, 4096)] + plan
    episode, encoding, img_w, img_h = plan.pop(0)
    reset_at = None
    next_frame = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_frame:
            next_frame = now + 0.1
            stamp = time.time()
            cam = image(rgb, encoding, 3, stamp)
            cam.width, cam.height, cam.step = img_w, img_h, img_w * 3
            image_w.write(cam)
            depth_w.write(image(depth, "32FC1", 4, stamp))
            info_w.write(camera_info(stamp))
            joints_w.write(JointState_(header=header(stamp), name=scene["joint_names"], position=scene["q"], velocity=[], effort=[]))
        # Ask for a decision once the planner's action writer and the nodes' event readers
        # are matched (discovery), and give their subscriptions a moment.
        if not goal_written and goal_w.get_matched_subscriptions():
            time.sleep(0.5)  # the node's other readers of the topic, matched alike
            goal_w.write(image(goal, "rgb8", 3, time.time()))
            print(json.dumps({"wrote": "goal", "volatile": True}), flush=True)
            goal_written = True
        if reset_at is None and goal_written and action_r.get_matched_publications() and traj_r.get_matched_publications() \
                and len(episode_w.get_matched_subscriptions()) >= 1 and (server is None or server.matched()) \
                and (gripper is None or gripper.matched()):
            reset_at = now + 1.5
        if reset_at is not None and reset_at <= now and reset_at > 0:
            episode_w.write(EpisodeEvent_(header=header(time.time()), episode=episode, step=0, task=scene["task"],
                                          event="reset", score=float("nan"), detail="peer"))
            print(json.dumps({"wrote": "reset", "episode": episode, "encoding": encoding, "size": [img_w, img_h]}), flush=True)
            reset_at = -1.0
        for a in action_r.take(N=4):
            got["action"] = {
                "episode": episode,
                "source_id": a.source_id, "target_id": a.target_id,
                "source_uv": [a.source_u, a.source_v], "target_uv": [a.target_u, a.target_v],
                "raw_text": a.raw_text, "frame_id": a.header.frame_id,
                "writer_types": writer_types(action_r),
            }
            print(json.dumps({"action": got["action"]}), flush=True)
        if server is not None:
            for g in server.spin_once():
                got["trajectory"] = dict(g, via="action")
                print(json.dumps({"trajectory": got["trajectory"]}), flush=True)
                if estop_w is not None:
                    estop_at = now + args.estop_after
            for entry in server.log:
                print(json.dumps(entry), flush=True)
            if any("canceled" in entry for entry in server.log):
                got["canceled"] = True
            server.log.clear()
        if gripper is not None:
            for g in gripper.spin_once():
                got.setdefault("gripper", []).append(g)
                print(json.dumps({"gripper_goal": g}), flush=True)
            gripper.log.clear()
        if estop_at is not None and now >= estop_at:
            estop_w.write(Bool_(data=True))
            print(json.dumps({"wrote": "estop", "readers": matched_readers(estop_w)}), flush=True)
            estop_at = None
        for tr in traj_r.take(N=4):
            if server is not None:
                print(json.dumps({"topic_trajectory": len(tr.points)}), flush=True)
                continue
            got["trajectory"] = {
                "at": time.monotonic(),
                "joint_names": list(tr.joint_names),
                "points": [{"positions": list(p.positions), "t": p.time_from_start.sec + p.time_from_start.nanosec * 1e-9}
                           for p in tr.points],
                "writer_types": writer_types(traj_r),
            }
            print(json.dumps({"trajectory": got["trajectory"]}), flush=True)
        for m in markers_r.take(N=4):
            got["markers"] = [{
                "frame_id": k.header.frame_id, "ns": k.ns, "id": k.id, "type": k.type, "action": k.action,
                "position": [k.pose.position.x, k.pose.position.y, k.pose.position.z],
                "points": len(k.points), "text": k.text, "color": [k.color.r, k.color.g, k.color.b, k.color.a],
            } for k in m.markers]
            print(json.dumps({"markers": got["markers"], "writer_types": writer_types(markers_r)}), flush=True)
        for e in episode_r.take(N=16):
            if e.detail == "peer" and e.event == "reset":
                continue  # our own
            ev = {"event": e.event, "episode": e.episode, "task": e.task, "detail": e.detail, "writer_types": writer_types(episode_r)}
            got["events"].append(ev)
            print(json.dumps({"episode_event": ev}), flush=True)
            if e.event == "failed" and e.episode == episode and plan:
                # This episode's decision failed as it should: ask for the next one.
                episode, encoding, img_w, img_h = plan.pop(0)
                reset_at = time.monotonic() + 0.3
        started = any(e["event"] == "action_started" for e in got["events"])
        if server is not None or gripper is not None:
            # With the action, wait for the executor's account of the goal's end too.
            mine = [e["event"] for e in got["events"] if e["episode"] == episode]
            after = mine[mine.index("action_started") + 1:] if started else []
            started = any(e in ("action_finished", "failed") for e in after)
            if estop_w is not None:
                started = started and got.get("canceled", False)
            if gripper is not None and estop_w is None:
                # and every command of the action's gripper: open, close, open
                started = started and len(got.get("gripper", [])) >= 3
        # The executor's markers of the action (RViz's view) come on their own topic.
        if got["action"] and got["trajectory"] and started and got.get("markers"):
            if estop_w is not None:
                # Release the e-stop (latched) so that a later run can act again.
                estop_w.write(Bool_(data=False))
                print(json.dumps({"wrote": "estop release"}), flush=True)
                time.sleep(0.5)
            return 0
        time.sleep(0.02)
    print(json.dumps({"timeout": True, "got": {k: bool(v) for k, v in got.items()}}), flush=True)
    return 2


def matched_readers(w):
    """The reliability and durability of each reader a writer has matched."""
    out = []
    for h in w.get_matched_subscriptions():
        d = w.get_matched_subscription_data(h)
        if d is None:
            continue
        rel = d.qos[Policy.Reliability] if Policy.Reliability in d.qos else None
        dur = d.qos[Policy.Durability] if Policy.Durability in d.qos else None
        out.append({
            "reliable": isinstance(rel, Policy.Reliability.Reliable),
            "durability": type(dur).__name__ if dur is not None else None,
        })
    return sorted(out, key=lambda r: json.dumps(r, sort_keys=True))


def param_value(v):
    """A Python value as rcl_interfaces/ParameterValue."""
    pv = ParameterValue_(type=0, bool_value=False, integer_value=0, double_value=0.0, string_value="",
                         byte_array_value=[], bool_array_value=[], integer_array_value=[],
                         double_array_value=[], string_array_value=[])
    if isinstance(v, bool):
        pv.type, pv.bool_value = 1, v
    elif isinstance(v, int):
        pv.type, pv.integer_value = 2, v
    elif isinstance(v, float):
        pv.type, pv.double_value = 3, v
    elif isinstance(v, str):
        pv.type, pv.string_value = 4, v
    elif isinstance(v, list) and all(isinstance(x, bool) for x in v):
        pv.type, pv.bool_array_value = 6, v
    elif isinstance(v, list) and all(isinstance(x, int) for x in v):
        pv.type, pv.integer_array_value = 7, v
    elif isinstance(v, list) and all(isinstance(x, (int, float)) for x in v):
        pv.type, pv.double_array_value = 8, [float(x) for x in v]
    elif isinstance(v, list):
        pv.type, pv.string_array_value = 9, [str(x) for x in v]
    return pv


def python_value(pv):
    """rcl_interfaces/ParameterValue as [type, value]."""
    fields = {1: pv.bool_value, 2: pv.integer_value, 3: pv.double_value, 4: pv.string_value,
              5: list(pv.byte_array_value), 6: list(pv.bool_array_value), 7: list(pv.integer_array_value),
              8: list(pv.double_array_value), 9: list(pv.string_array_value)}
    return [pv.type, fields.get(pv.type)]


class ServiceClient:
    """A ROS 2 service client in rmw_cyclonedds_cpp's mapping, on bare Cyclone DDS."""

    def __init__(self, dp, node, service, req_type, reply_type):
        q = qos("volatile", 10)
        self.writer = DataWriter(dp, Topic(dp, f"rq/{node}/{service}Request", req_type, qos=q), qos=q)
        self.reader = DataReader(dp, Topic(dp, f"rr/{node}/{service}Reply", reply_type, qos=q), qos=q)
        self.client_id = 0x5EED_0000_0000_0000 | (zlib.crc32(service.encode()) & 0xFFFF_FFFF)
        self.sequence = 0
        self.service = service

    def call(self, make, timeout):
        deadline = time.monotonic() + timeout
        # Available when both the request reader and the reply writer are matched (what
        # rmw_cyclonedds_cpp's service_server_is_available checks).
        while not (self.writer.get_matched_subscriptions() and self.reader.get_matched_publications()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"service {self.service} not available")
            time.sleep(0.05)
        time.sleep(0.2)
        self.sequence += 1
        self.writer.write(make(self.client_id, self.sequence))
        while time.monotonic() < deadline:
            for r in self.reader.take(N=8):
                if r.client_id == self.client_id and r.sequence == self.sequence:
                    return r
            time.sleep(0.02)
        raise TimeoutError(f"no reply from {self.service}")


def parse_assignment(item):
    """NAME=VALUE, the value as JSON when it parses (numbers, booleans, quoted strings)."""
    name, _, text = item.partition("=")
    try:
        return name, json.loads(text)
    except json.JSONDecodeError:
        return name, text


def param(args):
    """list / get / set / describe a node's parameters through its parameter services."""
    dp = DomainParticipant(args.domain)
    node = args.node.strip("/")
    out = {}
    events = None
    if args.events:
        # rclcpp's parameter-events QoS: reliable, volatile, keep last 1000.
        q = qos("volatile", 1000)
        events = DataReader(dp, Topic(dp, "rt/parameter_events", ParameterEvent_, qos=q), qos=q)
    try:
        if events is not None:
            # Every ROS node has a writer there: wait until some are matched and no more
            # come for a second, so that the node asked is among them.
            deadline = time.monotonic() + args.timeout
            seen, since = 0, time.monotonic()
            while True:
                n = len(events.get_matched_publications())
                now = time.monotonic()
                if n != seen:
                    seen, since = n, now
                elif n > 0 and now - since >= 1.0:
                    break
                if now > deadline:
                    raise TimeoutError("no /parameter_events writer matched")
                time.sleep(0.05)
        if args.list:
            c = ServiceClient(dp, node, "list_parameters", ListParametersRequest_, ListParametersReply_)
            r = c.call(lambda i, s: ListParametersRequest_(client_id=i, sequence=s, prefixes=[], depth=0), args.timeout)
            out["list"] = {"names": list(r.result.names), "prefixes": list(r.result.prefixes)}
        if args.set:
            c = ServiceClient(dp, node, "set_parameters", SetParametersRequest_, SetParametersReply_)
            ps = [Parameter_(name=n, value=param_value(v)) for n, v in map(parse_assignment, args.set)]
            r = c.call(lambda i, s: SetParametersRequest_(client_id=i, sequence=s, parameters=ps), args.timeout)
            out["set"] = [{"name": p.name, "successful": x.successful, "reason": x.reason} for p, x in zip(ps, r.results)]
        if args.set_atomically:
            c = ServiceClient(dp, node, "set_parameters_atomically", SetParametersAtomicallyRequest_, SetParametersAtomicallyReply_)
            ps = [Parameter_(name=n, value=param_value(v)) for n, v in map(parse_assignment, args.set_atomically)]
            r = c.call(lambda i, s: SetParametersAtomicallyRequest_(client_id=i, sequence=s, parameters=ps), args.timeout)
            out["set_atomically"] = {"successful": r.result.successful, "reason": r.result.reason}
        if args.get:
            c = ServiceClient(dp, node, "get_parameters", GetParametersRequest_, GetParametersReply_)
            r = c.call(lambda i, s: GetParametersRequest_(client_id=i, sequence=s, names=args.get), args.timeout)
            out["get"] = {n: python_value(v) for n, v in zip(args.get, r.values)}
        if args.describe:
            c = ServiceClient(dp, node, "describe_parameters", DescribeParametersRequest_, DescribeParametersReply_)
            r = c.call(lambda i, s: DescribeParametersRequest_(client_id=i, sequence=s, names=args.describe), args.timeout)
            out["describe"] = {d.name: {"type": d.type, "read_only": d.read_only, "constraints": d.additional_constraints}
                               for d in r.descriptors}
        if events is not None:
            # The events of this node that came within a second of the last reply.
            time.sleep(1.0)
            out["events"] = [
                {"stamp": e.stamp.sec + e.stamp.nanosec * 1e-9,
                 "new": [p.name for p in e.new_parameters],
                 "changed": {p.name: python_value(p.value) for p in e.changed_parameters},
                 "deleted": [p.name for p in e.deleted_parameters]}
                for e in events.take(N=1000) if e.node == "/" + node
            ]
    except TimeoutError as e:
        out["timeout"] = str(e)
        print(json.dumps(out), flush=True)
        return 2
    print(json.dumps(out), flush=True)
    return 0


def graph(args):
    """The nodes other participants announce on ros_discovery_info, with their endpoints."""
    from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication, BuiltinTopicDcpsSubscription

    dp = DomainParticipant(args.domain)
    q = qos("transient_local", 1)
    reader = DataReader(dp, Topic(dp, "ros_discovery_info", graph_types(args.gid_bytes), qos=q), qos=q)
    pubs = BuiltinDataReader(dp, BuiltinTopicDcpsPublication)
    subs = BuiltinDataReader(dp, BuiltinTopicDcpsSubscription)
    latest, endpoints = {}, {}
    deadline = time.monotonic() + args.timeout

    def names():
        return {(n.node_namespace.rstrip("/") + "/" + n.node_name) for info in latest.values()
                for n in info.node_entities_info_seq}

    settle_until = None
    while True:
        for sample in reader.take(N=100):
            latest[bytes(sample.gid.data).hex()] = sample
        for kind, r in (("writer", pubs), ("reader", subs)):
            for e in r.take(N=1000):
                endpoints[e.key.bytes.hex()] = {"kind": kind, "topic": e.topic_name}
        now = time.monotonic()
        if all(x in names() for x in args.expect):
            # Endpoint discovery may trail the graph sample a little.
            settle_until = settle_until or now + args.settle
            if now >= settle_until:
                break
        if now > deadline:
            print(json.dumps({"timeout": True, "nodes": sorted(names())}), flush=True)
            return 2
        time.sleep(0.1)
    out = []
    for gid, info in sorted(latest.items()):
        for n in info.node_entities_info_seq:
            def gids(seq):
                # The endpoint's GUID is the GID's first 16 bytes.
                return [{"gid": bytes(g.data).hex(), **endpoints.get(bytes(g.data)[:16].hex(), {})} for g in seq]
            out.append({"participant": gid, "namespace": n.node_namespace, "name": n.node_name,
                        "readers": gids(n.reader_gid_seq), "writers": gids(n.writer_gid_seq)})
    print(json.dumps({"nodes": out}), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    tk = sub.add_parser("take", help="receive samples and print them as JSON lines")
    tk.add_argument("--type", choices=sorted(TYPES), default="image")
    tk.add_argument("--count", type=int, default=1)
    tk.add_argument("--best-effort", action="store_true")
    pi = sub.add_parser("publish-image", help="publish patterned rgb8 images")
    pi.add_argument("--width", type=int, default=8)
    pi.add_argument("--height", type=int, default=4)
    pi.add_argument("--count", type=int, default=1)
    pi.add_argument("--period", type=float, default=0.2)
    pi.add_argument("--linger", type=float, default=1.0, help="seconds to stay up after the last write")
    pi.add_argument("--wait-reader", action="store_true", help="wait for a matched reader before writing")
    pi.add_argument("--malformed-first", action="store_true", help="first write a sample that claims the Image type but is not one")
    pi.add_argument("--best-effort", action="store_true", help="a best-effort writer (a camera driver's sensor-data profile)")
    dr = sub.add_parser("drive", help="play camera, depth, goal, joint states and a reset; print the decision and its motion")
    dr.add_argument("--scene", required=True, help="folder with scene.json, current.rgb, current_depth.f32, goal.rgb")
    dr.add_argument("--domain", type=int, required=True)
    dr.add_argument("--timeout", type=float, default=60.0)
    dr.add_argument("--bad-first", action="store_true",
                    help="first ask for two decisions on bad camera images (an encoding the planner does not read, a size its bytes do not fill)")
    dr.add_argument("--episode", type=int, default=7, help="number of the episode asked for")
    dr.add_argument("--trajectory-topic", default="/arm/joint_trajectory")
    dr.add_argument("--serve-action", metavar="NAME",
                    help="serve control_msgs/action/FollowJointTrajectory under this name and take trajectories as its goals")
    dr.add_argument("--action-outcome", choices=["succeed", "abort", "reject"], default="succeed")
    dr.add_argument("--action-hold", type=float, default=1.0,
                    help="seconds a goal executes before it ends; negative: the trajectory's own duration")
    dr.add_argument("--serve-gripper", metavar="NAME",
                    help="serve control_msgs/action/GripperCommand under this name (a GripperActionController)")
    dr.add_argument("--gripper-outcome", choices=["succeed", "stall", "abort"], default="succeed",
                    help="stall: closing goals end ABORTED with stalled (on the object); abort: opening goals do")
    dr.add_argument("--parallel-gripper", action="store_true",
                    help="with --serve-gripper: serve control_msgs/action/ParallelGripperCommand instead")
    dr.add_argument("--gripper-closed-below", type=float, default=0.02,
                    help="a gripper goal whose position is below this closes")
    dr.add_argument("--estop-volatile", action="store_true",
                    help="publish the e-stop volatile (reliable, depth 10) instead of latched")
    dr.add_argument("--goal-volatile", action="store_true",
                    help="publish the goal image volatile (reliable, depth 10), once its readers are matched, instead of latched")
    dr.add_argument("--accept-after", type=float, default=0.0,
                    help="seconds the action server takes to answer a goal request (a slow controller)")
    dr.add_argument("--estop-after", type=float, metavar="S",
                    help="with --serve-action: engage the e-stop (latched /estop true) S seconds after the goal arrives, and wait for its cancel request")
    pa = sub.add_parser("param", help="list, set, get and describe a node's parameters through its ROS parameter services")
    pa.add_argument("--domain", type=int, required=True)
    pa.add_argument("--node", required=True, help="node name, e.g. executor")
    pa.add_argument("--list", action="store_true")
    pa.add_argument("--set", action="append", default=[], metavar="NAME=JSON", help="set first (one request, in order)")
    pa.add_argument("--set-atomically", action="append", default=[], metavar="NAME=JSON",
                    help="then set these in one set_parameters_atomically request (all or none)")
    pa.add_argument("--get", action="append", default=[], metavar="NAME", help="then get")
    pa.add_argument("--describe", action="append", default=[], metavar="NAME")
    pa.add_argument("--events", action="store_true",
                    help="read /parameter_events first and print the node's events that the requests caused")
    pa.add_argument("--timeout", type=float, default=30.0)
    gr = sub.add_parser("graph", help="the ROS graph from ros_discovery_info: nodes, namespaces and endpoint GIDs")
    gr.add_argument("--domain", type=int, required=True)
    gr.add_argument("--expect", action="append", default=[], metavar="/NS/NODE", help="wait until this node is listed")
    gr.add_argument("--settle", type=float, default=2.0, help="seconds to keep reading once every expected node is listed")
    gr.add_argument("--timeout", type=float, default=30.0)
    gr.add_argument("--gid-bytes", type=int, choices=[16, 24], default=16,
                    help="GID length of the distribution read as: 16 (Iron, Jazzy and later) or 24 (Humble)")
    for p in (tk, pi):
        p.add_argument("--domain", type=int, required=True)
        p.add_argument("--topic", required=True)
        p.add_argument("--durability", choices=["volatile", "transient_local"], default="volatile")
        p.add_argument("--depth", type=int, default=10)
        p.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    return {"take": take, "publish-image": publish_image, "drive": drive, "param": param, "graph": graph}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
