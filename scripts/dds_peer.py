#!/usr/bin/env python3
"""The ROS 2 side of the graph for tests/dds_interop.rs, on Cyclone DDS from PyPI.

Cyclone DDS is the DDS behind rmw_cyclonedds_cpp; this script uses it bare, with the ROS 2
names and types written out here (topic `/x` is DDS topic `rt/x`, type `pkg/msg/Name` is
`pkg::msg::dds_::Name_`, samples are XCDR1 little-endian CDR), so nothing on this side
comes from the Rust code under test.

    dds_peer.py take --domain D --topic /camera/goal --type image --durability transient_local
    dds_peer.py publish-image --domain D --topic /peer/image --width 8 --height 4 --count 5

`take` prints one JSON line per sample (its fields, the CRC-32 of the image bytes, the
type name the matched writer announced); `publish-image` waits for a reader, writes the
images and prints what it wrote. Exit status 2 on a timeout. The caller sets
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
    q = qos(args.durability, max(args.count, 1))
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
    for p in (tk, pi):
        p.add_argument("--domain", type=int, required=True)
        p.add_argument("--topic", required=True)
        p.add_argument("--durability", choices=["volatile", "transient_local"], default="volatile")
        p.add_argument("--depth", type=int, default=10)
        p.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    return take(args) if args.cmd == "take" else publish_image(args)


if __name__ == "__main__":
    sys.exit(main())
