#!/usr/bin/env python3
"""Check an MCAP rosbag2 bag written by dreamplan with Foxglove's own readers.

A second reader, independent of PyPI ``rosbags`` (``check_bag_with_rosbags.py``): PyPI
``mcap`` reads the container (header, chunks, indexes, summary) and ``mcap-ros2-support``
decodes every message from the schema text stored in the file itself (its own ``.msg``
parser and CDR decoder), as Foxglove Studio does. Nothing of this project's Python code is
used to read the bag; the expected values come straight from ``cases.json``.

BAG_PATH is a rosbag2 directory (every ``*.mcap`` in it, in split order) or one ``.mcap``
file. Expected layout (what ``tests/bag_interop.rs`` writes): for every case of
``cases.json``, in file order with index i, exactly one message on topic
``/cases/<case name>`` of the case's type at log time
``1_700_000_000_000_000_000 + i * 1_000_000`` ns.

Checks (each failure printed with the file, topic and field; exit status 1):

* every file's header profile is ``ros2``; every channel's message encoding is ``cdr`` and
  its schema is ``ros2msg`` named after the case's type;
* the messages come back in log-time order across the files, each on its case's topic
  at its log time, and none is missing, extra or duplicated;
* each message decodes with mcap-ros2-support from the file's own schema to exactly the
  case's value: same field names, strings and integers equal, floats bit for bit
  (``-0.0`` included), byte arrays byte for byte;
* each file's summary statistics (message count, per-channel counts) agree with what was
  read.

Without ``--cases`` (any bag, e.g. one ``dreamplan collect`` or the recorder wrote): every
message must decode from its file's schema, with the same container checks; the message
count per topic is printed as JSON on stdout, for the caller to compare with its own reader.

Usage::

    .venv/bin/python scripts/check_bag_with_mcap.py BAG_PATH --cases tests/fixtures/cdr/cases.json
    .venv/bin/python scripts/check_bag_with_mcap.py BAG_PATH
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
from pathlib import Path

from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

BASE_TIME = 1_700_000_000_000_000_000
STEP = 1_000_000


class Mismatch(Exception):
    pass


def expand(value):
    """A ``{"$pattern": {len, mul, add}}`` byte array of cases.json as bytes."""
    spec = value['$pattern']
    return bytes((i * spec['mul'] + spec['add']) % 256 for i in range(spec['len']))


def as_bytes(decoded):
    if isinstance(decoded, (bytes, bytearray, memoryview)):
        return bytes(decoded)
    if isinstance(decoded, (list, tuple)) and all(isinstance(x, int) and 0 <= x < 256 for x in decoded):
        return bytes(decoded)
    return None


def compare(expected, decoded, where: str):
    """Raises Mismatch where the decoded value differs from the JSON value."""
    if isinstance(expected, dict) and set(expected) == {'$pattern'}:
        got = as_bytes(decoded)
        if got != expand(expected):
            raise Mismatch(f'{where}: byte array differs ({None if got is None else len(got)} bytes)')
        return
    if isinstance(expected, dict):
        slots = list(getattr(decoded, '__slots__', []))
        if sorted(slots) != sorted(expected):
            raise Mismatch(f'{where}: fields {sorted(slots)}, expected {sorted(expected)}')
        for name, value in expected.items():
            compare(value, getattr(decoded, name), f'{where}.{name}')
        return
    if isinstance(expected, list):
        if isinstance(decoded, (bytes, bytearray, memoryview)):
            decoded = list(bytes(decoded))
        if not isinstance(decoded, (list, tuple)) and hasattr(decoded, 'tolist'):
            decoded = decoded.tolist()
        if not isinstance(decoded, (list, tuple)) or len(decoded) != len(expected):
            raise Mismatch(f'{where}: expected {len(expected)} elements, got {decoded!r:.80}')
        for i, (e, d) in enumerate(zip(expected, decoded)):
            compare(e, d, f'{where}[{i}]')
        return
    if isinstance(expected, bool):
        if decoded is not expected and decoded != int(expected):
            raise Mismatch(f'{where}: {decoded!r}, expected {expected!r}')
        return
    if isinstance(expected, float) or (isinstance(decoded, float) and isinstance(expected, int)):
        if not isinstance(decoded, float) or struct.pack('<d', decoded) != struct.pack('<d', float(expected)):
            raise Mismatch(f'{where}: {decoded!r}, expected {float(expected)!r} (bit for bit)')
        return
    if type(decoded) is not type(expected) or decoded != expected:
        raise Mismatch(f'{where}: {decoded!r}, expected {expected!r}')


def mcap_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = list(path.glob('*.mcap'))
    split = re.compile(r'_(\d+)\.mcap$')

    def index(p: Path) -> int:
        m = split.search(p.name)
        return int(m.group(1)) if m else 0

    return sorted(files, key=index)


def check(bag: Path, cases: list[dict]) -> list[str]:
    errors: list[str] = []
    by_topic = {f'/cases/{c["name"]}': (i, c) for i, c in enumerate(cases)}
    seen: list[tuple[int, str]] = []
    files = mcap_files(bag)
    if not files:
        return [f'{bag}: no .mcap file']
    for file in files:
        with open(file, 'rb') as stream:
            reader = make_reader(stream, decoder_factories=[DecoderFactory()])
            header = reader.get_header()
            if header.profile != 'ros2':
                errors.append(f'{file.name}: header profile {header.profile!r}, expected "ros2"')
            counts: dict[int, int] = {}
            for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=True):
                counts[channel.id] = counts.get(channel.id, 0) + 1
                where = f'{file.name} {channel.topic}'
                if channel.topic not in by_topic:
                    errors.append(f'{where}: unexpected topic')
                    continue
                i, case = by_topic[channel.topic]
                seen.append((message.log_time, channel.topic))
                if channel.message_encoding != 'cdr':
                    errors.append(f'{where}: message encoding {channel.message_encoding!r}')
                if schema is None or schema.encoding != 'ros2msg' or schema.name != case['type']:
                    errors.append(f'{where}: schema {schema and (schema.name, schema.encoding)!r}, expected ({case["type"]!r}, "ros2msg")')
                if message.log_time != BASE_TIME + i * STEP:
                    errors.append(f'{where}: log time {message.log_time}, expected {BASE_TIME + i * STEP}')
                try:
                    compare(case['value'], decoded, case['name'])
                except Mismatch as e:
                    errors.append(f'{where}: {e}')
            summary = reader.get_summary()
            stats = summary.statistics if summary else None
            if stats is None:
                errors.append(f'{file.name}: no statistics record')
            else:
                if stats.message_count != sum(counts.values()):
                    errors.append(f'{file.name}: statistics count {stats.message_count} messages, read {sum(counts.values())}')
                if {k: v for k, v in stats.channel_message_counts.items() if v} != counts:
                    errors.append(f'{file.name}: per-channel statistics {stats.channel_message_counts} differ from {counts}')
    if [t for _, t in sorted(seen)] != [t for _, t in seen]:
        errors.append('messages are not in log-time order across the files')
    topics = [t for _, t in seen]
    if missing := [t for t in by_topic if t not in topics]:
        errors.append(f'missing topics: {missing[:5]}{"…" if len(missing) > 5 else ""}')
    if len(topics) != len(set(topics)):
        errors.append('a topic has more than one message')
    return errors


def decode_all(bag: Path) -> tuple[list[str], dict[str, int]]:
    """Decodes every message of every file; errors and the message count per topic."""
    errors: list[str] = []
    per_topic: dict[str, int] = {}
    files = mcap_files(bag)
    if not files:
        return [f'{bag}: no .mcap file'], per_topic
    last = -1
    for file in files:
        with open(file, 'rb') as stream:
            reader = make_reader(stream, decoder_factories=[DecoderFactory()])
            if reader.get_header().profile != 'ros2':
                errors.append(f'{file.name}: header profile is not "ros2"')
            read = 0
            messages = reader.iter_decoded_messages(log_time_order=True)
            while True:
                try:
                    item = next(messages)
                except StopIteration:
                    break
                except Exception as e:  # a decoder error names no message: report and stop
                    errors.append(f'{file.name}: message {read} does not decode: {e!r}')
                    break
                schema, channel, message, decoded = item
                read += 1
                if schema is None or schema.encoding != 'ros2msg' or channel.message_encoding != 'cdr':
                    errors.append(f'{file.name} {channel.topic}: schema or encoding is not ros2msg / cdr')
                if message.log_time < last:
                    errors.append(f'{file.name} {channel.topic}: log time goes back across files')
                last = message.log_time
                if not getattr(decoded, '__slots__', None):
                    errors.append(f'{file.name} {channel.topic}: decoded to {type(decoded).__name__}')
                per_topic[channel.topic] = per_topic.get(channel.topic, 0) + 1
            summary = reader.get_summary()
            if summary is None or summary.statistics is None:
                errors.append(f'{file.name}: no statistics record')
            elif summary.statistics.message_count != read:
                errors.append(f'{file.name}: statistics count {summary.statistics.message_count}, read {read}')
    return errors, per_topic


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('bag', type=Path)
    parser.add_argument('--cases', type=Path)
    args = parser.parse_args()
    if args.cases is None:
        errors, per_topic = decode_all(args.bag)
        for e in errors:
            print(f'error: {e}', file=sys.stderr)
        print(json.dumps(per_topic, sort_keys=True))
        return 1 if errors else 0
    cases = json.loads(args.cases.read_text(encoding='utf-8'))
    errors = check(args.bag, cases)
    for e in errors:
        print(f'error: {e}', file=sys.stderr)
    if errors:
        return 1
    print(f'ok: {len(cases)} messages decoded by mcap-ros2-support from {args.bag}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
