#!/usr/bin/env python3
"""rosbags half of dreamplan's rosbag2 benchmark (the other half is dreamplan's Rust bag code).

Subcommands (each prints one JSON object on stdout):

``write-jointstate OUTDIR N``
    Write N ``sensor_msgs/msg/JointState`` messages (7 joints: names ``joint_1`` ..
    ``joint_7``, position/velocity/effort, header stamp = log time, frame ``base_link``)
    to a new MCAP rosbag2 directory OUTDIR (metadata version 9), log times 1 ms apart.
``write-images OUTDIR N``
    Same with N 640x480 ``rgb8`` ``sensor_msgs/msg/Image`` messages (921,600 data bytes
    each, a different byte pattern per image), log times 33 ms apart. Mainly makes the
    input of a ``read`` benchmark.
``read BAG [--topic T]``
    Read every message of BAG (rosbag2 directory or bare .mcap/.db3), or of topic T, and
    deserialise it with ``typestore.deserialize_cdr`` (rosbags' documented fastest path;
    AnyReader.deserialize adds a wrapper around the same call).

Timing (``time.perf_counter``) covers only the work, never interpreter start-up, imports
or building the type store. For the writers ``seconds`` is
``Writer(...)`` open + add_connection + N x (``serialize_cdr`` + ``Writer.write``) + close
(metadata.yaml and MCAP summary written); the message objects are built before the clock
starts (``build_seconds`` says how long that took). For ``read``, ``seconds`` is
iterating ``Reader.messages()`` plus ``deserialize_cdr`` of each message; opening the bag
(index / metadata parsing) is reported apart as ``open_seconds``. ``bytes`` is the sum of
the serialised CDR payloads; ``MB_per_s`` uses 1 MB = 10^6 bytes.

Usage::

    .venv/bin/python scripts/bench_rosbags.py write-jointstate /tmp/js 100000
    .venv/bin/python scripts/bench_rosbags.py write-images /tmp/img 500
    .venv/bin/python scripts/bench_rosbags.py read /tmp/img
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import StoragePlugin
from rosbags.typesys import Stores, get_types_from_msg

from rosbags_common import LOG_TIME_BASE_NS, project_typestore

JOINTSTATE = 'sensor_msgs/msg/JointState'
IMAGE = 'sensor_msgs/msg/Image'
JOINTS = 7


def stamp(typestore, nanoseconds: int, frame_id: str):
    Time = typestore.types['builtin_interfaces/msg/Time']
    Header = typestore.types['std_msgs/msg/Header']
    return Header(stamp=Time(sec=nanoseconds // 10**9, nanosec=nanoseconds % 10**9), frame_id=frame_id)


def jointstates(typestore, count: int, period_ns: int) -> list[tuple[int, object]]:
    JointState = typestore.types[JOINTSTATE]
    names = [f'joint_{j + 1}' for j in range(JOINTS)]
    base = np.arange(JOINTS, dtype=np.float64)
    messages = []
    for i in range(count):
        t = LOG_TIME_BASE_NS + i * period_ns
        phase = i * 1e-3
        messages.append((t, JointState(
            header=stamp(typestore, t, 'base_link'),
            name=names,
            position=np.sin(base + phase),
            velocity=np.cos(base + phase),
            effort=base * 0.5 + phase,
        )))
    return messages


def images(typestore, count: int, period_ns: int) -> list[tuple[int, object]]:
    Image = typestore.types[IMAGE]
    height, width = 480, 640
    pattern = (np.arange(height * width * 3, dtype=np.uint32) % 251).astype(np.uint8)
    messages = []
    for i in range(count):
        t = LOG_TIME_BASE_NS + i * period_ns
        messages.append((t, Image(
            header=stamp(typestore, t, 'camera'),
            height=height, width=width, encoding='rgb8', is_bigendian=0, step=width * 3,
            data=np.roll(pattern, i),
        )))
    return messages


def write(outdir: Path, msgtype: str, topic: str, messages: list[tuple[int, object]], typestore, build_seconds: float) -> dict:
    payload = 0
    start = time.perf_counter()
    with Writer(outdir, version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(topic, msgtype, typestore=typestore)
        serialize = typestore.serialize_cdr
        for timestamp, message in messages:
            data = serialize(message, msgtype, little_endian=True)
            payload += len(data)
            writer.write(conn, timestamp, data)
    seconds = time.perf_counter() - start
    return {
        'tool': f'rosbags {package_version("rosbags")}',
        'what': f'write {msgtype} to MCAP rosbag2',
        'msgs': len(messages),
        'bytes': payload,
        'seconds': seconds,
        'msgs_per_s': len(messages) / seconds,
        'MB_per_s': payload / seconds / 1e6,
        'build_seconds': build_seconds,
        'bag_bytes': sum(p.stat().st_size for p in outdir.iterdir()),
    }


def cmd_write(args, make, msgtype: str, topic: str, period_ns: int) -> dict:
    typestore = project_typestore(Stores.ROS2_HUMBLE)
    start = time.perf_counter()
    messages = make(typestore, args.n, period_ns)
    build_seconds = time.perf_counter() - start
    return write(args.outdir, msgtype, topic, messages, typestore, build_seconds)


def cmd_read(args) -> dict:
    typestore = project_typestore(Stores.ROS2_HUMBLE)
    start = time.perf_counter()
    reader = Reader(args.bag)
    reader.open()
    open_seconds = time.perf_counter() - start
    try:
        connections = [c for c in reader.connections if args.topic is None or c.topic == args.topic]
        if not connections:
            raise SystemExit(f'bench_rosbags: no connection on topic {args.topic!r}')
        # Types the store lacks come from the bag's own definitions (not timed).
        for conn in connections:
            if conn.msgtype not in typestore.fielddefs and conn.msgdef.format == MessageDefinitionFormat.MSG:
                typestore.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))
        deserialize = typestore.deserialize_cdr
        msgs = payload = 0
        start = time.perf_counter()
        for conn, _, raw in reader.messages(connections=connections):
            deserialize(raw, conn.msgtype)
            msgs += 1
            payload += len(raw)
        seconds = time.perf_counter() - start
    finally:
        reader.close()
    return {
        'tool': f'rosbags {package_version("rosbags")}',
        'what': 'read + deserialize_cdr' + (f' topic {args.topic}' if args.topic else ' all topics'),
        'msgs': msgs,
        'bytes': payload,
        'seconds': seconds,
        'msgs_per_s': msgs / seconds if seconds else None,
        'MB_per_s': payload / seconds / 1e6 if seconds else None,
        'open_seconds': open_seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True)
    for name, what in (('write-jointstate', 'JointState messages'), ('write-images', '640x480 rgb8 images')):
        p = sub.add_parser(name, help=f'write N {what} to a new MCAP rosbag2 directory')
        p.add_argument('outdir', type=Path, help='bag directory to create (must not exist)')
        p.add_argument('n', type=int, help='number of messages')
    p = sub.add_parser('read', help='read and deserialise every message of a bag')
    p.add_argument('bag', type=Path, help='rosbag2 directory or bare .mcap/.db3 file')
    p.add_argument('--topic', help='only this topic')
    args = parser.parse_args()

    if args.command == 'write-jointstate':
        result = cmd_write(args, jointstates, JOINTSTATE, '/joint_states', 1_000_000)
    elif args.command == 'write-images':
        result = cmd_write(args, images, IMAGE, '/camera/image_raw', 33_000_000)
    else:
        result = cmd_read(args)
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
