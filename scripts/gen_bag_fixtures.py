#!/usr/bin/env python3
"""Generate rosbag2 reference bags with PyPI ``rosbags`` for dreamplan's bag reader.

Writes, with ``rosbags.rosbag2.Writer``, one rosbag2 directory per variant into OUTDIR:

=================  =========  ==========  ================  ====================
bag directory      storage    type store  metadata version  MCAP chunks
=================  =========  ==========  ================  ====================
mcap_humble        mcap       ROS2_HUMBLE 8                 uncompressed
mcap_jazzy         mcap       ROS2_JAZZY  9                 uncompressed
sqlite3_humble     sqlite3    ROS2_HUMBLE 8                 -
sqlite3_jazzy      sqlite3    ROS2_JAZZY  9                 -
mcap_zstd_humble   mcap       ROS2_HUMBLE 8                 zstd
humble_record      sqlite3    ROS2_HUMBLE 5 (own writer)    -
=================  =========  ==========  ================  ====================

Real Humble writes metadata version 5, which rosbags cannot write (its Writer takes
version 8 or 9 only). Version 8 is the closest: it keeps Humble's serialisation of
``offered_qos_profiles`` (a YAML string with integer enums), where 9 (Jazzy) writes a
YAML list with lower-case enum names. rosbags' sqlite3 writer always creates the
Jazzy-style schema (schema_version 4, ``message_definitions`` table) whatever the
version.

``humble_record`` is not written by rosbags but by this script, in the layout Humble's
``ros2 bag record`` leaves (rosbag2 0.15.x, the sqlite3 default storage), following rosbag2's
own source at tag 0.15.9: ``rosbag2_storage`` ``metadata_io.cpp`` (metadata version 5, the
``files`` list, keys in yaml-cpp's insertion order, block style, no final newline),
``rosbag2_storage_default_plugins`` ``sqlite_storage.cpp`` (schema_version 3: tables
``schema``, ``metadata`` (created, left empty), ``topics`` without type hashes, ``messages``,
index ``timestamp_idx``; the file ``<bag>_0.db3``) and ``rosbag2_transport`` ``qos.cpp`` /
``recorder.cpp`` (offered QoS as the YAML dump of a list of profiles with integer enums and
the rmw infinite duration 9223372036 s 854775807 ns). ``topics_with_message_count`` comes
from an unordered map in the writer, so its order is arbitrary: here it is the reverse of
the ``topics`` table's, which a reader must not care about. Not byte-compared with a real
``ros2 bag record``: no ROS 2 runs on the machines this is built on.

Every bag holds the same messages, all serialised little-endian by rosbags:

* every case of ``tests/fixtures/cdr/cases.json`` except ``image_1280x720_rgb8`` (too
  big for a fixture), each on its own topic ``/cases/<case name>`` at log time
  ``1_700_000_000_000_000_000 + i * 1_000_000`` ns, i being the case's index in the
  file (the excluded case leaves a gap); the payload equals ``<case name>.cdr`` next to
  cases.json (checked);
* 3 ``std_msgs/msg/String`` messages on ``/unknown/string``, a type dreamplan does not
  mirror (a reader has to skip and count them). They are written after all cases but
  their log times fall between cases (case 5 / 17 / 29 log time + 0.5 ms), so a reader
  that returns write order instead of log-time order fails.

Connections are added in case order, ``/unknown/string`` last. Offered QoS profiles:
``/cases/image_rgb8_2x2`` offers one profile (keep_last, depth 1, reliable,
transient_local, infinite deadline/lifespan/lease), ``/unknown/string`` offers two (what
``ros2 bag record`` stores for a discovered publisher: history unknown, depth 0,
reliable, volatile, infinite times; and a keep_last 10 best_effort volatile profile
with zero times); every other topic offers none (rosbags writes ``''`` in v8 and ``[]``
in v9).

``OUTDIR/expected.json`` describes every bag: its storage, metadata version and chunk
compression, its topics in connection order (type, message count, offered QoS profiles
as v9-style JSON, type_description_hash = RIHS01) and its messages in log-time order as
``{"topic", "type", "log_time_ns", "case"}`` (``case`` null and ``string_data`` set for
the String messages).

Each bag is read back with ``check_bag_with_rosbags.py``'s checker before the script
finishes. Existing bag directories of these names in OUTDIR are replaced.

Usage::

    .venv/bin/python scripts/gen_bag_fixtures.py OUTDIR [--cases tests/fixtures/cdr/cases.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.typesys import Stores

from rosbags_common import (
    DEFAULT_CASES,
    LOG_TIME_BASE_NS,
    LOG_TIME_STEP_NS,
    QOS_TIME_INFINITE,
    QOS_TIME_ZERO,
    REPO,
    FixtureError,
    build_message,
    case_log_time,
    case_topic,
    load_cases,
    project_typestore,
    qos_to_json,
)

EXCLUDED_CASES = ('image_1280x720_rgb8',)

UNKNOWN_TOPIC = '/unknown/string'
UNKNOWN_TYPE = 'std_msgs/msg/String'
# (string data, index of the case whose log time it follows by half a step)
UNKNOWN_MESSAGES = (('unbekannt #0', 5), ('unbekannt #1 ü', 17), ('unbekannt #2', 29))

QOS_TOPIC = case_topic('image_rgb8_2x2')
TOPIC_QOS: dict[str, list[Qos]] = {
    QOS_TOPIC: [
        Qos(
            QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
            QOS_TIME_INFINITE, QOS_TIME_INFINITE, QosLiveliness.AUTOMATIC, QOS_TIME_INFINITE, False,
        ),
    ],
    UNKNOWN_TOPIC: [
        Qos(
            QosHistory.UNKNOWN, 0, QosReliability.RELIABLE, QosDurability.VOLATILE,
            QOS_TIME_INFINITE, QOS_TIME_INFINITE, QosLiveliness.AUTOMATIC, QOS_TIME_INFINITE, False,
        ),
        Qos(
            QosHistory.KEEP_LAST, 10, QosReliability.BEST_EFFORT, QosDurability.VOLATILE,
            QOS_TIME_ZERO, QOS_TIME_ZERO, QosLiveliness.AUTOMATIC, QOS_TIME_ZERO, False,
        ),
    ],
}


# rmw's RMW_DURATION_INFINITE as Humble's recorder stores it.
HUMBLE_TIME_INFINITE = QosTime(9223372036, 854775807)
HUMBLE_TOPIC_QOS: dict[str, list[Qos]] = {
    topic: [
        Qos(
            q.history, q.depth, q.reliability, q.durability,
            *(HUMBLE_TIME_INFINITE if t == QOS_TIME_INFINITE else t for t in (q.deadline, q.lifespan)),
            q.liveliness,
            HUMBLE_TIME_INFINITE if q.liveliness_lease_duration == QOS_TIME_INFINITE else q.liveliness_lease_duration,
            q.avoid_ros_namespace_conventions,
        )
        for q in profiles
    ]
    for topic, profiles in TOPIC_QOS.items()
}


@dataclass(frozen=True)
class BagVariant:
    name: str
    storage: StoragePlugin
    store: Stores
    version: int
    chunk_compression: bool = False
    humble_record: bool = False


VARIANTS = (
    BagVariant('mcap_humble', StoragePlugin.MCAP, Stores.ROS2_HUMBLE, 8),
    BagVariant('mcap_jazzy', StoragePlugin.MCAP, Stores.ROS2_JAZZY, Writer.VERSION_LATEST),
    BagVariant('sqlite3_humble', StoragePlugin.SQLITE3, Stores.ROS2_HUMBLE, 8),
    BagVariant('sqlite3_jazzy', StoragePlugin.SQLITE3, Stores.ROS2_JAZZY, Writer.VERSION_LATEST),
    BagVariant('mcap_zstd_humble', StoragePlugin.MCAP, Stores.ROS2_HUMBLE, 8, chunk_compression=True),
    BagVariant('humble_record', StoragePlugin.SQLITE3, Stores.ROS2_HUMBLE, 5, humble_record=True),
)


def plan_messages(cases: list[dict]) -> tuple[list[dict], list[dict]]:
    """The connections and the messages (in write order) every bag gets, as JSON-ready dicts."""
    topics, writes = [], []
    for index, case in enumerate(cases):
        if case['name'] in EXCLUDED_CASES:
            continue
        topic = case_topic(case['name'])
        topics.append({'topic': topic, 'type': case['type']})
        writes.append({'topic': topic, 'type': case['type'], 'log_time_ns': case_log_time(index), 'case': case['name']})
    topics.append({'topic': UNKNOWN_TOPIC, 'type': UNKNOWN_TYPE})
    for data, after in UNKNOWN_MESSAGES:
        if not 0 <= after < len(cases) - 1:
            raise FixtureError(f'too few cases to interleave {UNKNOWN_TOPIC} after case {after}')
        writes.append({
            'topic': UNKNOWN_TOPIC,
            'type': UNKNOWN_TYPE,
            'log_time_ns': case_log_time(after) + LOG_TIME_STEP_NS // 2,
            'case': None,
            'string_data': data,
        })
    times = [w['log_time_ns'] for w in writes]
    if len(set(times)) != len(times):
        raise FixtureError('two messages share a log time')
    return topics, writes


def remove_old_bag(path: Path) -> None:
    """Remove a bag directory this script wrote before; refuse anything else."""
    if not path.exists():
        return
    ours = {'metadata.yaml', f'{path.name}.mcap', f'{path.name}.db3', f'{path.name}_0.db3'}
    if not path.is_dir() or not {p.name for p in path.iterdir()} <= ours:
        raise FixtureError(f'{path} exists and is not a bag this script wrote; not replacing it')
    shutil.rmtree(path)


def payload(typestore, item: dict, cases_by_name: dict) -> bytes:
    """One planned message (a case, or a String of /unknown/string) as little-endian CDR."""
    if item['case'] is not None:
        case = cases_by_name[item['case']]
        message = build_message(typestore, case['type'], case['value'], case['name'])
    else:
        message = typestore.types[UNKNOWN_TYPE](data=item['string_data'])
    return bytes(typestore.serialize_cdr(message, item['type'], little_endian=True))


def yaml_scalar(value) -> str:
    """A scalar as yaml-cpp's emitter writes it (the cases metadata.yaml needs)."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, int):
        return str(value)
    if value == '' or '\n' in value or value[0] in '-?:,[]{}#&*!|>\'"%@`' or ': ' in value:
        escaped = value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')
        return f'"{escaped}"'
    return value


def yaml_block(value, indent: int = 0) -> list[str]:
    """Block-style YAML lines of nested dicts and lists, keys in insertion order, the way
    yaml-cpp dumps a node (a list inside a map indented by two more spaces)."""
    pad = ' ' * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f'{pad}{key}:')
                lines.extend(yaml_block(item, indent + 2))
            elif isinstance(item, (dict, list)):
                lines.append(f'{pad}{key}: {"{}" if isinstance(item, dict) else "[]"}')  # empty: flow style
            else:
                lines.append(f'{pad}{key}: {yaml_scalar(item)}')
    else:
        for item in value:
            inner = yaml_block(item, indent + 2) if isinstance(item, (dict, list)) else [yaml_scalar(item)]
            lines.append(f'{pad}- {inner[0].lstrip()}')
            lines.extend(inner[1:])
    return lines


def humble_qos_string(profiles: list[Qos]) -> str:
    """offered_qos_profiles as Humble's recorder serialises them (YAML::Dump of the list)."""
    if not profiles:
        return ''

    def time(t: QosTime) -> dict:
        return {'sec': t.sec, 'nsec': t.nsec}

    return '\n'.join(yaml_block([
        {
            'history': q.history.value, 'depth': q.depth, 'reliability': q.reliability.value,
            'durability': q.durability.value, 'deadline': time(q.deadline), 'lifespan': time(q.lifespan),
            'liveliness': q.liveliness.value, 'liveliness_lease_duration': time(q.liveliness_lease_duration),
            'avoid_ros_namespace_conventions': q.avoid_ros_namespace_conventions,
        }
        for q in profiles
    ]))


def write_humble_record_bag(path: Path, typestore, topics, writes, cases_by_name) -> tuple[list[dict], str]:
    """A bag in the layout Humble's `ros2 bag record` writes (see the module doc); returns
    the topics' expected.json entries and the storage file's name."""
    import sqlite3  # noqa: PLC0415

    path.mkdir(parents=True)
    db_name = f'{path.name}_0.db3'
    db = sqlite3.connect(path / db_name)
    for statement in (
        'CREATE TABLE schema(schema_version INTEGER PRIMARY KEY,ros_distro TEXT NOT NULL);',
        'CREATE TABLE metadata(id INTEGER PRIMARY KEY,metadata_version INTEGER NOT NULL,metadata TEXT NOT NULL);',
        'CREATE TABLE topics(id INTEGER PRIMARY KEY,name TEXT NOT NULL,type TEXT NOT NULL,'
        'serialization_format TEXT NOT NULL,offered_qos_profiles TEXT NOT NULL);',
        'CREATE TABLE messages(id INTEGER PRIMARY KEY,topic_id INTEGER NOT NULL,timestamp INTEGER NOT NULL, data BLOB NOT NULL);',
        'CREATE INDEX timestamp_idx ON messages (timestamp ASC);',
    ):
        db.execute(statement)
    db.execute('INSERT INTO schema (schema_version, ros_distro) VALUES (?, ?)', (3, 'humble'))
    ids, entries, info = {}, [], []
    for topic in topics:
        profiles = HUMBLE_TOPIC_QOS.get(topic['topic'], [])
        qos = humble_qos_string(profiles)
        cursor = db.execute(
            'INSERT INTO topics (name, type, serialization_format, offered_qos_profiles) VALUES (?, ?, ?, ?)',
            (topic['topic'], topic['type'], 'cdr', qos),
        )
        ids[topic['topic']] = cursor.lastrowid
        count = sum(1 for w in writes if w['topic'] == topic['topic'])
        entries.append({
            'topic': topic['topic'],
            'type': topic['type'],
            'message_count': count,
            'offered_qos_profiles': [qos_to_json(q) for q in profiles],
            'type_description_hash': '',
        })
        info.append({
            'topic_metadata': {
                'name': topic['topic'], 'type': topic['type'], 'serialization_format': 'cdr',
                'offered_qos_profiles': qos,
            },
            'message_count': count,
        })
    for item in writes:
        data = payload(typestore, item, cases_by_name)
        db.execute('INSERT INTO messages (timestamp, topic_id, data) VALUES (?, ?, ?);',
                   (item['log_time_ns'], ids[item['topic']], data))
    db.commit()
    db.close()
    times = [w['log_time_ns'] for w in writes]
    start, duration = min(times), max(times) - min(times)
    metadata = {'rosbag2_bagfile_information': {
        'version': 5,
        'storage_identifier': 'sqlite3',
        'duration': {'nanoseconds': duration},
        'starting_time': {'nanoseconds_since_epoch': start},
        'message_count': len(writes),
        'topics_with_message_count': list(reversed(info)),
        'compression_format': '',
        'compression_mode': '',
        'relative_file_paths': [db_name],
        'files': [{
            'path': db_name,
            'starting_time': {'nanoseconds_since_epoch': start},
            'duration': {'nanoseconds': duration},
            'message_count': len(writes),
        }],
    }}
    (path / 'metadata.yaml').write_text('\n'.join(yaml_block(metadata)), encoding='utf-8')
    return entries, db_name


def write_bag(path: Path, variant: BagVariant, typestore, topics, writes, cases_by_name, cdr_dir: Path) -> dict:
    """Write one bag; return its expected.json entry."""
    remove_old_bag(path)
    if variant.humble_record:
        entries, storage_file = write_humble_record_bag(path, typestore, topics, writes, cases_by_name)
        return {
            'storage_identifier': 'sqlite3',
            'storage_file': storage_file,
            'metadata_version': 5,
            'typestore': variant.store.name.lower(),
            'chunk_compression': '',
            'message_count': len(writes),
            'topics': entries,
            'messages': sorted(writes, key=lambda w: w['log_time_ns']),
            'layout': "Humble's `ros2 bag record` (rosbag2 0.15.9), written by this script",
        }
    writer = Writer(path, version=variant.version, storage_plugin=variant.storage)
    if variant.chunk_compression:
        # MCAP storage-side compression: rosbags' McapWriter zstd-compresses every chunk.
        # metadata.yaml then says compression_format '' / compression_mode '' (as rosbag2
        # does for the mcap plugin's own chunk compression).
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    connections, entries = {}, []
    with writer:
        for topic in topics:
            qos = TOPIC_QOS.get(topic['topic'], [])
            connection = writer.add_connection(topic['topic'], topic['type'], typestore=typestore, offered_qos_profiles=qos)
            connections[topic['topic']] = connection
            entries.append({
                'topic': topic['topic'],
                'type': topic['type'],
                'message_count': sum(1 for w in writes if w['topic'] == topic['topic']),
                'offered_qos_profiles': [qos_to_json(q) for q in qos],
                'type_description_hash': connection.digest,
            })
        for item in writes:
            data = payload(typestore, item, cases_by_name)
            if item['case'] is not None and (fixture := cdr_dir / f"{item['case']}.cdr").exists():
                if fixture.read_bytes() != data:
                    raise FixtureError(f'{variant.name}: {item["case"]}: payload differs from {fixture}')
            writer.write(connections[item['topic']], item['log_time_ns'], data)

    storage_file = f'{path.name}.{"mcap" if variant.storage == StoragePlugin.MCAP else "db3"}'
    return {
        'storage_identifier': variant.storage.name.lower(),
        'storage_file': storage_file,
        'metadata_version': variant.version,
        'typestore': variant.store.name.lower(),
        'chunk_compression': 'zstd' if variant.chunk_compression else '',
        'message_count': len(writes),
        'topics': entries,
        'messages': sorted(writes, key=lambda w: w['log_time_ns']),
    }


def generate(outdir: Path, cases_path: Path) -> int:
    import check_bag_with_rosbags as checker  # noqa: PLC0415 (imports this module's helpers too)

    cases = load_cases(cases_path)
    cases_by_name = {case['name']: case for case in cases}
    if missing := [name for name in EXCLUDED_CASES if name not in cases_by_name]:
        print(f'gen_bag_fixtures: note: excluded case(s) not in {cases_path}: {missing}', file=sys.stderr)
    topics, writes = plan_messages(cases)
    outdir.mkdir(parents=True, exist_ok=True)

    expected = {
        'generator': 'scripts/gen_bag_fixtures.py',
        'rosbags_version': package_version('rosbags'),
        'log_time_base_ns': LOG_TIME_BASE_NS,
        'log_time_step_ns': LOG_TIME_STEP_NS,
        'excluded_cases': list(EXCLUDED_CASES),
        'unknown_topic': UNKNOWN_TOPIC,
        'write_order': 'cases in file order, then the /unknown/string messages (log times interleaved)',
        'bags': {},
    }
    failures = 0
    for variant in VARIANTS:
        typestore = project_typestore(variant.store)
        path = outdir / variant.name
        entry = write_bag(path, variant, typestore, topics, writes, cases_by_name, cases_path.parent)
        expected['bags'][variant.name] = entry
        report = checker.check_bag(path, checker.expectation_from_bag_entry(entry, cases_by_name, typestore), typestore)
        if report.problems:
            failures += 1
            for problem in report.problems:
                print(f'gen_bag_fixtures: {variant.name}: {problem}', file=sys.stderr)
        size = sum(p.stat().st_size for p in path.iterdir())
        print(f'gen_bag_fixtures: {variant.name}: {report.summary()}; {size} bytes')

    text = json.dumps(expected, indent=1, ensure_ascii=False) + '\n'
    (outdir / 'expected.json').write_text(text, encoding='utf-8')
    if failures:
        print(f'gen_bag_fixtures: error: {failures} bag(s) failed the read-back check', file=sys.stderr)
        return 1
    print(f'gen_bag_fixtures: {len(VARIANTS)} bags, {len(writes)} messages each -> {outdir}')
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('outdir', type=Path, help='directory to write the bag directories and expected.json into')
    parser.add_argument('--cases', type=Path, default=DEFAULT_CASES, help=f'case file (default: {DEFAULT_CASES.relative_to(REPO)})')
    args = parser.parse_args()
    try:
        return generate(args.outdir, args.cases)
    except FixtureError as error:
        print(f'gen_bag_fixtures: error: {error}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
