#!/usr/bin/env python3
"""Check a rosbag2 bag written by dreamplan against PyPI ``rosbags`` (the reference reader).

BAG_PATH is a rosbag2 directory (``metadata.yaml`` plus ``.mcap`` or ``.db3`` files) or a
bare ``.mcap`` / ``.db3`` file. Both are opened with ``rosbags.rosbag2.Reader``: for a
directory it reads ``metadata.yaml`` and the storage files it names; for a bare file it
uses the storage reader directly (an MCAP file's counts then come from its Statistics
record or chunk indexes, its QoS from the channel metadata; no temporary metadata.yaml
is made up).

Expected layout (what dreamplan's bag test writes): for every case of ``cases.json``, in
file order with index i, exactly one message on topic ``/cases/<case name>`` of the
case's type at log time ``1_700_000_000_000_000_000 + i * 1_000_000`` ns, and no other
topic. With ``--expected expected.json --bag-name NAME`` the layout of a bag made by
``gen_bag_fixtures.py`` is checked instead (QoS profiles included).

Checks (any failure is printed with the topic / case / field concerned, exit status 1):

* rosbags opens the bag; every connection has the expected topic and msgtype and
  serialization format ``cdr``; no topic is missing, none is unexpected or duplicated;
* every message comes back at the expected log time and topic (log-time order), its
  payload starts with the little-endian CDR header ``00 01 00 00``, and
  ``typestore.deserialize_cdr`` gives the case value exactly (floats bit for bit, the
  comparison gen_cdr_fixtures.py uses); the payload also has to be byte-identical to
  rosbags' own serialisation (``--allow-byte-differences`` reports that as a note);
* message counts agree: messages read, per connection counts, the bag's total, and for
  a directory ``metadata.yaml`` (message_count, per topic counts, files[], starting_time
  and duration) and for MCAP the Statistics record;
* offered QoS profiles parse strictly (all keys present, every enum value known; in
  ``metadata.yaml`` version >= 9 a YAML list with enum names, before 9 a YAML string with
  integer enums, as rosbag2 requires) and agree between metadata.yaml and the storage
  (MCAP channel metadata / sqlite3 topics table); they are printed;
* each connection's message definition (MCAP schema / sqlite3 message_definitions) is
  parsed by rosbags (``get_types_from_msg`` / ``get_types_from_idl``, as its AnyReader
  does), defines the type and all its dependencies, and each type in it is field for
  field the one in our type store; a type_description_hash, where present, equals
  rosbags' RIHS01 hash; whether the text is identical to rosbags' own is reported. A
  missing definition is an error for MCAP, a note for sqlite3 (Humble's schema has none);
* for MCAP files: the header profile is ``ros2``, and the ``rosbag2`` metadata record, if
  present, names the same topics and counts (its absence is a note).

The type store is rosbags' ``ROS2_HUMBLE`` (``--store jazzy`` for ``ROS2_JAZZY``) with
the project's message definitions registered (``rosbags_common.project_typestore``).

``--self-test`` writes bags of the expected layout with rosbags into a temporary
directory (MCAP v8, sqlite3 v9, MCAP with zstd chunks, the bare .mcap and .db3 files) and
checks them, then checks a set of deliberately broken bags and requires each to fail
for the right reason.

Usage::

    .venv/bin/python scripts/check_bag_with_rosbags.py BAG_PATH [--cases tests/fixtures/cdr/cases.json]
    .venv/bin/python scripts/check_bag_with_rosbags.py --self-test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sqlite3
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from rosbags.interfaces import (
    MessageDefinitionFormat,
    Nodetype,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg
from ruamel.yaml import YAML

from rosbags_common import (
    DEFAULT_CASES,
    REPO,
    FixtureError,
    build_message,
    case_log_time,
    case_topic,
    difference,
    load_cases,
    project_typestore,
    qos_from_json,
)

STORES = {'humble': Stores.ROS2_HUMBLE, 'jazzy': Stores.ROS2_JAZZY}
CDR_LE_HEADER = b'\x00\x01\x00\x00'
MCAP_MAGIC = b'\x89MCAP0\r\n'
MAX_LISTED = 20  # problems listed per kind before summarising


# --- expectations ---------------------------------------------------------------------------


@dataclass
class ExpectedMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    label: str  # case name, or a description
    value: object  # rosbags message object


@dataclass
class Expectation:
    messages: list[ExpectedMessage]
    topic_types: dict[str, str]  # every topic the bag must have (also ones without messages)
    qos: dict[str, list[Qos]] | None = None  # None: QoS only parsed and printed


def expectation_from_cases(cases: list[dict], typestore) -> Expectation:
    """The layout dreamplan's bag test writes: one message per case, on its own topic."""
    messages = [
        ExpectedMessage(
            case_topic(case['name']), case['type'], case_log_time(index), case['name'],
            build_message(typestore, case['type'], case['value'], case['name']),
        )
        for index, case in enumerate(cases)
    ]
    return Expectation(messages, {m.topic: m.msgtype for m in messages})


def expectation_from_bag_entry(entry: dict, cases_by_name: dict[str, dict], typestore) -> Expectation:
    """The layout of one bag of gen_bag_fixtures.py's expected.json."""
    messages = []
    for item in entry['messages']:
        if item['case'] is not None:
            case = cases_by_name[item['case']]
            value = build_message(typestore, case['type'], case['value'], case['name'])
            label = case['name']
        else:
            value = typestore.types[item['type']](data=item['string_data'])
            label = f'string {item["string_data"]!r}'
        messages.append(ExpectedMessage(item['topic'], item['type'], item['log_time_ns'], label, value))
    return Expectation(
        messages,
        {t['topic']: t['type'] for t in entry['topics']},
        {t['topic']: [qos_from_json(q) for q in t['offered_qos_profiles']] for t in entry['topics']},
    )


# --- report -----------------------------------------------------------------------------------


@dataclass
class Report:
    path: Path
    layout: str = '?'
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    messages: int = 0
    connections: int = 0
    payload_bytes: int = 0
    identical_msgdefs: int = 0
    checked_msgdefs: int = 0

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def summary(self) -> str:
        state = 'OK' if not self.problems else f'FAILED ({len(self.problems)} problem(s))'
        return (
            f'{state}: {self.path} ({self.layout}): {self.connections} connections, {self.messages} messages, '
            f'{self.payload_bytes} payload bytes; message definitions parsed {self.checked_msgdefs}, '
            f'identical to rosbags\' {self.identical_msgdefs}'
            + (f'; {len(self.notes)} note(s)' if self.notes else '')
        )


# --- QoS, strictly ----------------------------------------------------------------------------

QOS_ENUMS = {
    'history': QosHistory,
    'reliability': QosReliability,
    'durability': QosDurability,
    'liveliness': QosLiveliness,
}
QOS_TIMES = ('deadline', 'lifespan', 'liveliness_lease_duration')


def strict_qos(raw, where: str, style: str) -> list[Qos]:
    """Parse offered_qos_profiles strictly; raise ValueError with a precise message.

    raw is what the YAML gave: a string to parse (style 'string' or 'any') or a list
    (style 'list' or 'any'). Enum values: integers in style 'string' (metadata < 9) or
    'any', lower-case names in style 'list' or 'any'.
    """
    if isinstance(raw, str):
        if style == 'list':
            raise ValueError(f'{where}: is a YAML string, metadata version >= 9 needs a YAML list')
        if raw.strip() == '':
            return []
        try:
            items = YAML(typ='safe').load(raw)
        except Exception as error:  # noqa: BLE001 (any YAML error)
            raise ValueError(f'{where}: not YAML: {error}') from None
        if items is None:
            return []
    else:
        if style == 'string':
            raise ValueError(f'{where}: is a {type(raw).__name__}, metadata version < 9 needs a YAML string')
        items = raw
    if not isinstance(items, list):
        raise ValueError(f'{where}: expected a list of profiles, got {items!r:.100}')
    enum_style = 'int' if style == 'string' else ('name' if style == 'list' else 'any')
    result = []
    for index, item in enumerate(items):
        here = f'{where}[{index}]'
        if not isinstance(item, dict):
            raise ValueError(f'{here}: expected a mapping, got {item!r:.100}')
        needed = {'history', 'depth', 'reliability', 'durability', *QOS_TIMES, 'liveliness', 'avoid_ros_namespace_conventions'}
        if missing := sorted(needed - set(item)):
            raise ValueError(f'{here}: missing keys {missing}')
        if extra := sorted(set(item) - needed):
            raise ValueError(f'{here}: unknown keys {extra}')
        enums = {}
        for key, enum in QOS_ENUMS.items():
            value = item[key]
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise ValueError(f'{here}.{key}: {value!r} is neither an integer nor a name')
            if isinstance(value, int):
                if enum_style == 'name':
                    raise ValueError(f'{here}.{key}: integer {value} where version >= 9 needs a name')
                try:
                    enums[key] = enum(value)
                except ValueError:
                    raise ValueError(f'{here}.{key}: {value} is not a {enum.__name__} value') from None
            else:
                if enum_style == 'int':
                    raise ValueError(f'{here}.{key}: name {value!r} where version < 9 needs an integer')
                if value != value.lower() or value.upper() not in enum.__members__:
                    raise ValueError(f'{here}.{key}: {value!r} is not a lower-case {enum.__name__} name')
                enums[key] = enum.__members__[value.upper()]
        times = {}
        for key in QOS_TIMES:
            value = item[key]
            if not isinstance(value, dict) or set(value) != {'sec', 'nsec'}:
                raise ValueError(f'{here}.{key}: expected {{sec, nsec}}, got {value!r:.100}')
            for part in ('sec', 'nsec'):
                if isinstance(value[part], bool) or not isinstance(value[part], int) or not 0 <= value[part] < 2**64:
                    raise ValueError(f'{here}.{key}.{part}: {value[part]!r} is not an unsigned integer')
            times[key] = QosTime(value['sec'], value['nsec'])
        depth = item['depth']
        if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth < 2**64:
            raise ValueError(f'{here}.depth: {depth!r} is not an unsigned integer')
        avoid = item['avoid_ros_namespace_conventions']
        if not isinstance(avoid, bool):
            raise ValueError(f'{here}.avoid_ros_namespace_conventions: {avoid!r} is not a bool')
        result.append(Qos(
            enums['history'], depth, enums['reliability'], enums['durability'], times['deadline'],
            times['lifespan'], enums['liveliness'], times['liveliness_lease_duration'], avoid,
        ))
    return result


def qos_text(profiles: list[Qos]) -> str:
    """Short human-readable form of a list of QoS profiles."""
    if not profiles:
        return '(none offered)'

    def time(t: QosTime) -> str:
        return 'inf' if (t.sec, t.nsec) == (2147483647, 4294967295) else f'{t.sec}s{t.nsec}ns'

    return '; '.join(
        f'{q.history.name.lower()}/{q.depth} {q.reliability.name.lower()} {q.durability.name.lower()} '
        f'deadline={time(q.deadline)} lifespan={time(q.lifespan)} {q.liveliness.name.lower()}'
        f'(lease={time(q.liveliness_lease_duration)}){" avoid_ros_ns" if q.avoid_ros_namespace_conventions else ""}'
        for q in profiles
    )


# --- raw storage access -----------------------------------------------------------------------


def read_mcap_records(path: Path) -> dict:
    """Header, top-level Metadata records and chunk compressions of an MCAP file (linear scan)."""
    data = path.read_bytes()
    if data[:8] != MCAP_MAGIC or data[-8:] != MCAP_MAGIC:
        raise ValueError('bad MCAP magic')
    pos, result = 8, {'profile': None, 'library': None, 'metadata': {}, 'chunk_compression': set()}

    def string(buf: bytes, at: int) -> tuple[str, int]:
        (size,) = struct.unpack_from('<I', buf, at)
        return buf[at + 4:at + 4 + size].decode('utf-8'), at + 4 + size

    while pos < len(data) - 8:
        op = data[pos]
        (size,) = struct.unpack_from('<Q', data, pos + 1)
        body = data[pos + 9:pos + 9 + size]
        if len(body) != size:
            raise ValueError(f'truncated record 0x{op:02x} at offset {pos}')
        if op == 0x01:
            result['profile'], at = string(body, 0)
            result['library'], _ = string(body, at)
        elif op == 0x0C:
            name, at = string(body, 0)
            (map_size,) = struct.unpack_from('<I', body, at)
            at += 4
            end, entries = at + map_size, {}
            while at < end:
                key, at = string(body, at)
                entries[key], at = string(body, at)
            result['metadata'][name] = entries
        elif op == 0x06:
            (compression, _) = string(body, 28)
            result['chunk_compression'].add(compression)
        elif op == 0x02:
            break
        pos += 9 + size
    return result


def read_sqlite_topics(path: Path) -> tuple[int | None, dict[str, dict]]:
    """schema_version (None if no schema table) and the topics table of a .db3 file, by name."""
    conn = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        schema = conn.execute('SELECT schema_version FROM schema').fetchone()[0] if 'schema' in tables else None
        columns = [row[1] for row in conn.execute('PRAGMA table_info(topics)')]
        topics = {}
        for row in conn.execute(f'SELECT {", ".join(columns)} FROM topics ORDER BY id'):
            item = dict(zip(columns, row))
            topics[item['name']] = item
        return schema, topics
    finally:
        conn.close()


# --- message definitions ----------------------------------------------------------------------


def referenced_types(fielddefs: dict, typename: str) -> set[str]:
    """Names of the message types that typename's fields refer to (directly)."""
    names = set()
    for _, (kind, arg) in fielddefs[typename][1]:
        if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            kind, arg = arg[0]
        if kind == Nodetype.NAME:
            names.add(arg)
    return names


def check_msgdef(report: Report, connection, typestore, storage: str) -> None:
    """Parse a connection's message definition with rosbags and compare it to our store."""
    topic, msgtype, msgdef = connection.topic, connection.msgtype, connection.msgdef
    if msgdef.format == MessageDefinitionFormat.NONE or not msgdef.data:
        text = f'{topic}: no message definition stored for {msgtype}'
        (report.problem if storage == 'mcap' else report.notes.append)(text)
        return
    try:
        if msgdef.format == MessageDefinitionFormat.MSG:
            parsed = get_types_from_msg(msgdef.data, msgtype)
        else:
            parsed = {}
            sep = '=' * 80 + '\n'
            if msgdef.data.startswith(f'{sep}IDL: '):
                for part in msgdef.data.split(sep)[1:]:
                    parsed.update(get_types_from_idl(part.split('\n', 1)[1]))
            else:
                parsed.update(get_types_from_idl(msgdef.data))
    except Exception as error:  # noqa: BLE001 (report any parser error)
        report.problem(f'{topic}: rosbags cannot parse the message definition of {msgtype}: {type(error).__name__}: {error}')
        return
    report.checked_msgdefs += 1
    if msgtype not in parsed:
        report.problem(f'{topic}: the message definition does not define {msgtype} (defines {sorted(parsed)})')
        return
    todo, seen = [msgtype], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in parsed:
            report.problem(f'{topic}: the message definition of {msgtype} lacks the dependency {name}')
            continue
        if name in typestore.fielddefs:
            ours = typestore.fielddefs[name]
            # Fields must match; the schema's constants must be the store's, but a later
            # distro's store may add some (Jazzy's Marker.ARROW_STRIP): they never reach
            # the wire (as rosbags_common.make_typestore).
            if list(parsed[name][1]) != list(ours[1]) or not set(parsed[name][0]) <= set(ours[0]):
                report.problem(
                    f'{topic}: schema of {name} differs from the type store:\n'
                    f'    schema: {parsed[name]}\n    store:  {ours}'
                )
        todo.extend(referenced_types(parsed, name))
    if msgtype in typestore.fielddefs and msgdef.format == MessageDefinitionFormat.MSG:
        if msgdef.data == typestore.generate_msgdef(msgtype, ros_version=2)[0]:
            report.identical_msgdefs += 1


# --- the check --------------------------------------------------------------------------------


def check_bag(path: Path, expectation: Expectation, typestore, *, allow_byte_differences: bool = False) -> Report:
    """Read the bag at path with rosbags and compare it with the expectation."""
    report = Report(path)
    if not path.exists():
        report.problem(f'{path} does not exist')
        return report
    try:
        reader = Reader(path)
        reader.open()
    except Exception as error:  # noqa: BLE001 (rosbags raises several kinds)
        report.problem(f'rosbags cannot open the bag: {type(error).__name__}: {error}')
        return report
    try:
        _check_open_bag(report, reader, path, expectation, typestore, allow_byte_differences)
    except Exception as error:  # noqa: BLE001 (turn any rosbags failure into a report line)
        report.problem(f'rosbags failed while reading: {type(error).__name__}: {error}')
    finally:
        reader.close()
    return report


def _check_open_bag(report: Report, reader, path: Path, exp: Expectation, typestore, allow_bytes: bool) -> None:
    # Layout: a directory with metadata.yaml, or a bare storage file.
    metadata = None
    if path.is_dir():
        metadata = YAML(typ='safe').load((path / 'metadata.yaml').read_text(encoding='utf-8'))['rosbag2_bagfile_information']
        storage = metadata['storage_identifier']
        files = [path / PurePath(name).name for name in metadata['relative_file_paths']]
        storages = reader.storage.storages
        report.layout = (
            f'{storage} directory, metadata version {metadata["version"]}, ros_distro {metadata.get("ros_distro")!r}, '
            f'compression {metadata.get("compression_mode") or "none"}/{metadata.get("compression_format") or "none"}'
        )
    else:
        storage = 'mcap' if path.suffix == '.mcap' else 'sqlite3'
        files = [path]
        storages = [reader.storage]
        report.layout = f'bare {path.suffix} file'

    connections = reader.connections
    report.connections = len(connections)
    by_topic = {}
    for conn in connections:
        if conn.topic in by_topic:
            report.problem(f'{conn.topic}: more than one connection ({by_topic[conn.topic].msgtype}, {conn.msgtype})')
        by_topic[conn.topic] = conn

    # Topics and types.
    for topic, msgtype in exp.topic_types.items():
        conn = by_topic.get(topic)
        if conn is None:
            report.problem(f'{topic}: topic missing (expected type {msgtype})')
        elif conn.msgtype != msgtype:
            report.problem(f'{topic}: msgtype {conn.msgtype!r} != expected {msgtype!r}')
    for topic in sorted(set(by_topic) - set(exp.topic_types)):
        report.problem(f'{topic}: unexpected topic (type {by_topic[topic].msgtype})')
    for conn in connections:
        if conn.ext.serialization_format != 'cdr':
            report.problem(f'{conn.topic}: serialization_format {conn.ext.serialization_format!r} != cdr')

    # Message definitions and type hashes.
    for conn in connections:
        check_msgdef(report, conn, typestore, storage)
        if conn.digest and conn.msgtype in typestore.fielddefs:
            if conn.digest != (want := typestore.hash_rihs01(conn.msgtype)):
                report.problem(f'{conn.topic}: type_description_hash {conn.digest!r} != rosbags\' {want!r}')

    # QoS: rosbags' parse, strict parse of every raw copy, agreement, expectation.
    raw_qos: dict[str, list[tuple[str, object, str]]] = {conn.topic: [] for conn in connections}
    if metadata is not None:
        style = 'list' if metadata['version'] >= 9 else 'string'
        for item in metadata['topics_with_message_count']:
            topic_meta = item['topic_metadata']
            if topic_meta['name'] in raw_qos:
                raw_qos[topic_meta['name']].append(('metadata.yaml', topic_meta.get('offered_qos_profiles', ''), style))
    records_by_file = {}
    for file in files:
        if storage == 'mcap':
            try:
                records_by_file[file] = records = read_mcap_records(file)
            except Exception as error:  # noqa: BLE001
                report.problem(f'{file.name}: cannot scan MCAP records: {error}')
                continue
            report.layout += f', MCAP chunks {"/".join(sorted(c or "uncompressed" for c in records["chunk_compression"])) or "none"}'
            if records['profile'] != 'ros2':
                report.problem(f'{file.name}: MCAP profile {records["profile"]!r} != ros2')
        else:
            schema, topics = read_sqlite_topics(file)
            report.info.append(f'{file.name}: sqlite3 schema_version {schema}')
            for name, row in topics.items():
                if name in raw_qos and 'offered_qos_profiles' in row:
                    raw_qos[name].append((f'{file.name} topics table', row['offered_qos_profiles'], 'any'))
    channel_keys: set[tuple[str, ...]] = set()
    for store in storages:
        for channel in getattr(store, 'channels', {}).values():  # MCAP: raw channel metadata
            meta, at, keys = channel.metadata, 0, {}
            try:
                while at < len(meta):
                    (size,) = struct.unpack_from('<I', meta, at)
                    key = meta[at + 4:at + 4 + size].decode()
                    at += 4 + size
                    (size,) = struct.unpack_from('<I', meta, at)
                    keys[key] = meta[at + 4:at + 4 + size].decode()
                    at += 4 + size
            except (struct.error, UnicodeDecodeError) as error:
                report.problem(f'{channel.topic}: channel metadata does not decode: {error}')
                continue
            channel_keys.add(tuple(sorted(keys)))
            if channel.topic in raw_qos and 'offered_qos_profiles' in keys:
                raw_qos[channel.topic].append(('MCAP channel metadata', keys['offered_qos_profiles'], 'any'))
            elif channel.topic in raw_qos:
                report.notes.append(f'{channel.topic}: MCAP channel metadata has no offered_qos_profiles')
    if channel_keys:
        report.info.append(f'MCAP channel metadata keys: {" | ".join(str(list(k)) for k in sorted(channel_keys))}')
    for conn in connections:
        parsed_rosbags = list(conn.ext.offered_qos_profiles)
        for source, raw, style in raw_qos[conn.topic]:
            try:
                strict = strict_qos(raw, f'{conn.topic}: offered_qos_profiles in {source}', style)
            except ValueError as error:
                report.problem(str(error))
                continue
            if strict != parsed_rosbags:
                report.problem(f'{conn.topic}: offered_qos_profiles in {source} ({qos_text(strict)}) != rosbags\' connection ({qos_text(parsed_rosbags)})')
        if exp.qos is not None and exp.qos.get(conn.topic, []) != parsed_rosbags:
            report.problem(f'{conn.topic}: offered QoS {qos_text(parsed_rosbags)} != expected {qos_text(exp.qos.get(conn.topic, []))}')
        report.info.append(f'{conn.topic} [{conn.msgtype}] x{conn.msgcount}: QoS {qos_text(parsed_rosbags)}')

    # Messages, in the order rosbags yields them (log-time order).
    expected = sorted(exp.messages, key=lambda m: (m.log_time_ns, m.topic))
    expected_by_key = {(m.topic, m.log_time_ns): m for m in expected}
    got_keys, counts, value_problems = [], {}, []
    last_time = None
    for conn, timestamp, raw in reader.messages():
        report.messages += 1
        report.payload_bytes += len(raw)
        counts[conn.topic] = counts.get(conn.topic, 0) + 1
        got_keys.append((conn.topic, timestamp))
        if last_time is not None and timestamp < last_time:
            report.problem(f'{conn.topic}: message at {timestamp} comes after one at {last_time} (not log-time order)')
        last_time = timestamp
        want = expected_by_key.get((conn.topic, timestamp))
        if want is None:
            continue  # reported below, from the key lists
        where = f'{want.label} ({conn.topic} @ {timestamp})'
        if bytes(raw[:4]) != CDR_LE_HEADER:
            value_problems.append(f'{where}: encapsulation header {bytes(raw[:4]).hex(" ")} != 00 01 00 00 (little-endian CDR)')
        try:
            value = typestore.deserialize_cdr(raw, want.msgtype)
        except Exception as error:  # noqa: BLE001
            value_problems.append(f'{where}: deserialize_cdr as {want.msgtype} failed: {type(error).__name__}: {error}')
            continue
        if diff := difference(typestore, want.msgtype, value, want.value):
            value_problems.append(f'{where}: value differs: {diff}')
            continue
        reference = bytes(typestore.serialize_cdr(want.value, want.msgtype, little_endian=True))
        if bytes(raw) != reference:
            at = next((i for i, (a, b) in enumerate(zip(bytes(raw), reference)) if a != b), min(len(raw), len(reference)))
            text = (f'{where}: payload ({len(raw)} bytes) differs from rosbags\' serialisation ({len(reference)} bytes) '
                    f'from byte {at}, values equal')
            (report.notes.append if allow_bytes else value_problems.append)(text)
    report.problems.extend(value_problems[:MAX_LISTED])
    if len(value_problems) > MAX_LISTED:
        report.problem(f'... and {len(value_problems) - MAX_LISTED} more message value problems')

    want_keys = [(m.topic, m.log_time_ns) for m in expected]
    if got_keys != want_keys:
        missing = [k for k in want_keys if k not in set(got_keys)]
        extra = [k for k in got_keys if k not in set(want_keys)]
        listed = [f'missing message {expected_by_key[k].label} ({k[0]} @ {k[1]})' for k in missing]
        listed += [f'unexpected message on {k[0]} @ {k[1]} (log time or topic wrong?)' for k in extra]
        if not missing and not extra:
            listed.append('messages come back in another order than by log time')
        report.problems.extend(listed[:MAX_LISTED])
        if len(listed) > MAX_LISTED:
            report.problem(f'... and {len(listed) - MAX_LISTED} more missing/unexpected messages')

    # Counts.
    if reader.message_count != report.messages:
        report.problem(f'bag message_count {reader.message_count} != {report.messages} messages read')
    for conn in connections:
        if conn.msgcount != counts.get(conn.topic, 0):
            report.problem(f'{conn.topic}: connection message count {conn.msgcount} != {counts.get(conn.topic, 0)} read')
    if metadata is not None and len(storages) == 1:  # the storage file's own counts (MCAP Statistics, sqlite3 rows)
        for store in storages:
            for sconn in store.connections:
                if sconn.msgcount != counts.get(sconn.topic, 0):
                    report.problem(f'{sconn.topic}: storage ({type(store).__name__}) count {sconn.msgcount} != {counts.get(sconn.topic, 0)} read')
    times = [t for _, t in got_keys]
    if times:
        if reader.start_time != min(times):
            report.problem(f'bag start time {reader.start_time} != first log time {min(times)}')
        if reader.end_time != max(times) + 1:
            report.problem(f'bag end time {reader.end_time} != last log time + 1 = {max(times) + 1}')
    if metadata is not None:
        topic_counts = {t['topic_metadata']['name']: t['message_count'] for t in metadata['topics_with_message_count']}
        if sum(topic_counts.values()) != metadata['message_count']:
            report.problem(f'metadata.yaml: message_count {metadata["message_count"]} != sum of topic counts {sum(topic_counts.values())}')
        if metadata.get('files') is not None:
            file_count = sum(f['message_count'] for f in metadata['files'])
            if file_count != metadata['message_count']:
                report.problem(f'metadata.yaml: files[] message counts sum to {file_count} != message_count {metadata["message_count"]}')
            if [PurePath(f['path']).name for f in metadata['files']] != [PurePath(p).name for p in metadata['relative_file_paths']]:
                report.problem('metadata.yaml: files[] paths differ from relative_file_paths')
        if times:
            if metadata['starting_time']['nanoseconds_since_epoch'] != min(times):
                report.problem(f'metadata.yaml: starting_time {metadata["starting_time"]["nanoseconds_since_epoch"]} != first log time {min(times)}')
            if metadata['duration']['nanoseconds'] != max(times) - min(times):
                report.problem(f'metadata.yaml: duration {metadata["duration"]["nanoseconds"]} != {max(times) - min(times)}')
        if not times and metadata['message_count']:
            report.problem(f'metadata.yaml: message_count {metadata["message_count"]} but no messages read')
        for conn in connections:
            if conn.digest == '' and metadata['version'] >= 7 and conn.msgtype in typestore.fielddefs:
                report.notes.append(f'{conn.topic}: metadata.yaml has no type_description_hash')

    # MCAP rosbag2 metadata record.
    for file, records in records_by_file.items():
        report.info.append(
            f'{file.name}: MCAP library {records["library"]!r}, chunk compression {sorted(records["chunk_compression"])}, '
            f'metadata records { {name: sorted(keys) for name, keys in records["metadata"].items()} }'
        )
        record = records['metadata'].get('rosbag2')
        if record is None or 'serialized_metadata' not in record:
            report.notes.append(f'{file.name}: no rosbag2 metadata record with serialized_metadata')
            continue
        try:
            embedded = YAML(typ='safe').load(record['serialized_metadata'])
            embedded = embedded.get('rosbag2_bagfile_information', embedded)
            embedded_topics = {t['topic_metadata']['name']: t['message_count'] for t in embedded['topics_with_message_count']}
        except Exception as error:  # noqa: BLE001
            report.problem(f'{file.name}: rosbag2 metadata record does not parse: {type(error).__name__}: {error}')
            continue
        if len(files) == 1:
            if embedded_topics != counts | {t: 0 for t in by_topic if t not in counts}:
                report.problem(f'{file.name}: rosbag2 metadata record topics/counts {embedded_topics} differ from the messages read')
            if embedded.get('message_count') != report.messages:
                report.problem(f'{file.name}: rosbag2 metadata record message_count {embedded.get("message_count")} != {report.messages}')


# --- self-test --------------------------------------------------------------------------------


def write_layout_bag(path: Path, cases: list[dict], typestore, *, storage=StoragePlugin.MCAP, version=8,
                     zstd=False, tweak=None) -> Path:
    """Write a bag of the layout dreamplan's bag test writes; tweak(name, item) may change an item.

    item: dict with topic, type, time, data, msgdef (None: from the store); tweak returns
    the item (changed or not) or None to drop the message (its connection stays).
    """
    writer = Writer(path, version=version, storage_plugin=storage)
    if zstd:
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        for index, case in enumerate(cases):
            message = build_message(typestore, case['type'], case['value'], case['name'])
            item = {
                'topic': case_topic(case['name']), 'type': case['type'], 'time': case_log_time(index),
                'data': bytes(typestore.serialize_cdr(message, case['type'], little_endian=True)), 'msgdef': None,
                'message': message,
            }
            if tweak and tweak(case['name'], item) is None:
                item['time'] = None  # keep the connection, drop the message
            kwargs = {'typestore': typestore}
            if item['msgdef'] is not None:
                kwargs = {'msgdef': item['msgdef'], 'rihs01': typestore.hash_rihs01(case['type'])}
            conn = writer.add_connection(item['topic'], item['type'], **kwargs)
            if item['time'] is not None:
                writer.write(conn, item['time'], item['data'])
        if tweak:
            tweak('$extra', {'writer': writer, 'typestore': typestore})
    return path


def self_test(cases_path: Path) -> int:
    cases = load_cases(cases_path)
    typestore = project_typestore(Stores.ROS2_HUMBLE)
    jazzy = project_typestore(Stores.ROS2_JAZZY)
    expectation = expectation_from_cases(cases, typestore)
    failures = 0

    def run(label: str, path: Path, store, want: str | None) -> None:
        nonlocal failures
        report = check_bag(path, expectation, store)
        if want is None:
            ok = not report.problems
            detail = report.summary() if ok else '; '.join(report.problems[:5])
        else:
            ok = any(want in problem for problem in report.problems)
            detail = (report.problems[0] if report.problems else 'no problem reported') if not ok else next(
                p for p in report.problems if want in p)
        failures += not ok
        verdict = 'pass' if ok else 'SELF-TEST FAILURE'
        expect = 'accepted' if want is None else f'rejected ({want!r})'
        print(f'  [{verdict}] {label}: expected {expect}: {detail.splitlines()[0]}')

    with tempfile.TemporaryDirectory(prefix='check_bag_selftest_') as tmp:
        root = Path(tmp)
        print(f'check_bag_with_rosbags self-test in {root}: {len(cases)} cases')
        good_mcap = write_layout_bag(root / 'mcap_v8', cases, typestore)
        run('MCAP directory, metadata v8', good_mcap, typestore, None)
        good_sqlite = write_layout_bag(root / 'sqlite3_v9', cases, jazzy, storage=StoragePlugin.SQLITE3, version=9)
        run('sqlite3 directory, metadata v9, ROS2_JAZZY store', good_sqlite, jazzy, None)
        run('MCAP zstd chunks, metadata v9', write_layout_bag(root / 'mcap_zstd', cases, typestore, version=9, zstd=True), typestore, None)
        bare = root / 'bare.mcap'
        shutil.copy(good_mcap / 'mcap_v8.mcap', bare)
        run('bare .mcap file', bare, typestore, None)
        bare_db = root / 'bare.db3'
        shutil.copy(good_sqlite / 'sqlite3_v9.db3', bare_db)
        run('bare .db3 file', bare_db, jazzy, None)

        def flip_float(name, item):
            if name == 'point_basic':
                bits = struct.unpack('<Q', struct.pack('<d', item['message'].x))[0] ^ 1
                msg = dataclasses.replace(item['message'], x=struct.unpack('<d', struct.pack('<Q', bits))[0])
                item['data'] = bytes(typestore.serialize_cdr(msg, item['type'], little_endian=True))
            return item

        def late(name, item):
            if name == 'keypoint_basic':
                item['time'] += 1
            return item

        def drop(name, item):
            return None if name == 'joint_state_umlauts' else item

        def wrong_type(name, item):
            if name == 'time_basic':
                item['type'] = 'builtin_interfaces/msg/Duration'
            return item

        def extra_topic(name, item):
            if name == '$extra':
                writer, store = item['writer'], item['typestore']
                conn = writer.add_connection('/unknown/string', 'std_msgs/msg/String', typestore=store)
                writer.write(conn, 1, bytes(store.serialize_cdr(store.types['std_msgs/msg/String'](data='x'), 'std_msgs/msg/String')))
            return item

        def bad_schema(name, item):
            if name == 'point_basic':
                item['msgdef'] = 'float64 x\nfloat64 y\nfloat32 z\n'
            return item

        def big_endian(name, item):
            if name == 'pose_basic':
                item['data'] = bytes(typestore.serialize_cdr(item['message'], item['type'], little_endian=False))
            return item

        def trailing(count):
            def tweak(name, item):
                if name == 'vector3_basic':
                    item['data'] += bytes(count)
                return item
            return tweak

        negatives = [
            ('float64 off by one ulp', flip_float, 'point_basic (/cases/point_basic'),
            ('log time off by 1 ns', late, 'missing message keypoint_basic'),
            ('message dropped', drop, 'missing message joint_state_umlauts'),
            ('wrong msgtype', wrong_type, "msgtype 'builtin_interfaces/msg/Duration' != expected"),
            ('extra topic', extra_topic, '/unknown/string: unexpected topic'),
            ('schema text with a wrong field type', bad_schema, 'schema of geometry_msgs/msg/Point differs'),
            ('big-endian payload', big_endian, 'encapsulation header 00 00 00 00'),
            # rosbags' deserialize_cdr tolerates up to 3 bytes after the message (alignment padding).
            ('2 bytes after the message', trailing(2), '(28 bytes) from byte 28, values equal'),
            ('4 bytes after the message', trailing(4), 'CDR message size mismatch'),
        ]
        for index, (label, tweak, want) in enumerate(negatives):
            run(label, write_layout_bag(root / f'bad{index}', cases, typestore, tweak=tweak), typestore, want)

        # metadata.yaml edits on copies of good bags.
        def edited(name: str, source: Path, old: str, new: str) -> Path:
            target = root / name
            shutil.copytree(source, target)  # metadata.yaml still names the storage file by its old name
            meta = target / 'metadata.yaml'
            text = meta.read_text()
            if old not in text:
                raise FixtureError(f'self-test: {old!r} not in {meta}')
            meta.write_text(text.replace(old, new, 1))
            return target

        run('metadata.yaml message_count + 1', edited('count', good_mcap, f'message_count: {len(cases)}\n', f'message_count: {len(cases) + 1}\n'), typestore, 'message_count')
        run('v9 QoS list where v8 needs a string', edited('qos_style', good_mcap, 'version: 8', 'version: 9'), typestore, 'metadata version >= 9 needs a YAML list')
        qos_bag = write_layout_bag(root / 'qos', cases[:3], jazzy, storage=StoragePlugin.SQLITE3, version=9,
                                   tweak=lambda name, item: item)
        meta = qos_bag / 'metadata.yaml'
        run('(control) 3-case bag is rejected only for the missing cases', qos_bag, jazzy, 'missing message')
        text = meta.read_text()
        meta.write_text(text.replace('offered_qos_profiles: []', "offered_qos_profiles:\n      - {history: keep_last, depth: 1, reliability: reliable, durability: sometimes, deadline: {sec: 0, nsec: 0}, lifespan: {sec: 0, nsec: 0}, liveliness: automatic, liveliness_lease_duration: {sec: 0, nsec: 0}, avoid_ros_namespace_conventions: false}", 1))
        run('unknown QoS durability name', qos_bag, jazzy, "'sometimes' is not a lower-case QosDurability name")

        # The fixture bags of gen_bag_fixtures.py, against its expected.json (it checks them itself too).
        import gen_bag_fixtures  # noqa: PLC0415
        print('  gen_bag_fixtures.py into the temporary directory:')
        if gen_bag_fixtures.generate(root / 'fixtures', cases_path) != 0:
            failures += 1
            print('  [SELF-TEST FAILURE] gen_bag_fixtures.py bags do not pass')

    print(f'check_bag_with_rosbags self-test: {"OK" if not failures else f"{failures} FAILURE(S)"}')
    return 1 if failures else 0


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('bag', type=Path, nargs='?', help='rosbag2 directory, or a bare .mcap / .db3 file')
    parser.add_argument('--cases', type=Path, default=DEFAULT_CASES, help=f'case file (default: {DEFAULT_CASES.relative_to(REPO)})')
    parser.add_argument('--store', choices=sorted(STORES), default='humble', help='rosbags type store (default: humble)')
    parser.add_argument('--expected', type=Path, help="gen_bag_fixtures.py's expected.json: check that layout instead")
    parser.add_argument('--bag-name', help='which bag of --expected (default: the bag directory name)')
    parser.add_argument('--allow-byte-differences', action='store_true', help='payload bytes differing from rosbags\' serialisation (values equal) only give a note')
    parser.add_argument('--self-test', action='store_true', help='check rosbags-written bags, good and broken ones, then exit')
    parser.add_argument('-q', '--quiet', action='store_true', help='print only problems and the summary')
    args = parser.parse_args()
    try:
        if args.self_test:
            return self_test(args.cases)
        if args.bag is None:
            parser.error('BAG_PATH is required (or --self-test)')
        cases = load_cases(args.cases)
        typestore = project_typestore(STORES[args.store])
        if args.expected:
            expected = json.loads(args.expected.read_text(encoding='utf-8'))
            name = args.bag_name or args.bag.name
            if name not in expected['bags']:
                parser.error(f'{name!r} is not a bag of {args.expected} (have {sorted(expected["bags"])})')
            expectation = expectation_from_bag_entry(expected['bags'][name], {c['name']: c for c in cases}, typestore)
        else:
            expectation = expectation_from_cases(cases, typestore)
    except FixtureError as error:
        print(f'check_bag_with_rosbags: error: {error}', file=sys.stderr)
        return 2
    report = check_bag(args.bag, expectation, typestore, allow_byte_differences=args.allow_byte_differences)
    if not args.quiet:
        for line in report.info:
            print(f'  {line}')
    for note in report.notes:
        print(f'  note: {note}')
    for problem in report.problems:
        print(f'  PROBLEM: {problem}')
    print(f'check_bag_with_rosbags: {report.summary()}')
    return 1 if report.problems else 0


if __name__ == '__main__':
    sys.exit(main())
