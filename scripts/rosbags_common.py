#!/usr/bin/env python3
"""Shared helpers for dreamplan's rosbags reference scripts.

``rosbags`` (PyPI) is the independent reference implementation that dreamplan's CDR
codec and rosbag2 reader/writer are checked against. This module holds what the
scripts under ``scripts/`` share:

* reading the project's message definitions (``src/msg/defs/<pkg>/msg/*.msg`` for the
  standard types we mirror, ``msg/*.msg`` for ROS package ``dreamplan``) and building a
  rosbags type store with them registered;
* turning the JSON cases of ``tests/fixtures/cdr/cases.json`` into rosbags message
  objects (see ``gen_cdr_fixtures.py`` for the case format);
* comparing messages strictly (floats bit for bit, arrays by dtype and bytes);
* the bag layout conventions (topic per case, log times) and QoS <-> JSON.

Not a script: import it from a script in this directory.
"""

from __future__ import annotations

import json
import keyword
import re
import struct
from pathlib import Path

import numpy as np
from rosbags.interfaces import Nodetype, Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

REPO = Path(__file__).resolve().parent.parent
STD_DEFS_DIR = REPO / 'src' / 'msg' / 'defs'
OWN_DEFS_DIR = REPO / 'msg'
OWN_PACKAGE = 'dreamplan'
DEFAULT_CASES = REPO / 'tests' / 'fixtures' / 'cdr' / 'cases.json'

CASE_NAME = re.compile(r'[a-z0-9_]+')

INT_RANGES = {
    'int8': (-(2**7), 2**7 - 1),
    'uint8': (0, 2**8 - 1),
    'int16': (-(2**15), 2**15 - 1),
    'uint16': (0, 2**16 - 1),
    'int32': (-(2**31), 2**31 - 1),
    'uint32': (0, 2**32 - 1),
    'int64': (-(2**63), 2**63 - 1),
    'uint64': (0, 2**64 - 1),
}
FLOAT_TYPES = {'float32', 'float64'}
NUMERIC_DTYPES = {name: np.dtype(name) for name in (*INT_RANGES, *FLOAT_TYPES)}


class FixtureError(Exception):
    """A case or a message definition that cannot become a fixture."""


# --- message definitions ------------------------------------------------------------------


def read_msg_definitions() -> dict[str, tuple]:
    """Parse all .msg files of the project into rosbags' typesdict form."""
    sources = [
        (f'{path.parent.parent.name}/msg/{path.stem}', path)
        for path in sorted(STD_DEFS_DIR.glob('*/msg/*.msg'))
    ]
    sources += [(f'{OWN_PACKAGE}/msg/{path.stem}', path) for path in sorted(OWN_DEFS_DIR.glob('*.msg'))]
    types: dict[str, tuple] = {}
    for typename, path in sources:
        parsed = get_types_from_msg(path.read_text(encoding='utf-8'), typename)
        if list(parsed) != [typename]:
            raise FixtureError(f'{path}: parsed as {sorted(parsed)}, expected {typename}')
        types.update(parsed)
    return types


def make_typestore(store: Stores, definitions: dict[str, tuple]):
    """Return a rosbags type store with all our definitions registered.

    A type the store already ships must match ours field for field (names, types,
    array sizes) and have every constant of ours; the store's definition is then kept
    as it is. A later distro may add constants (Jazzy's Marker has ARROW_STRIP, which
    Humble's lacks): they never reach the wire.
    """
    typestore = get_typestore(store)
    for typename, (constants, fields) in sorted(definitions.items()):
        shipped = typestore.fielddefs.get(typename)
        if shipped is None:
            continue
        shipped_constants, shipped_fields = shipped
        if list(fields) != list(shipped_fields) or not set(constants) <= set(shipped_constants):
            raise FixtureError(
                f'{typename} differs from the {store.name} definition:\n'
                f'  ours:   {constants} {fields}\n  rosbags: {shipped_constants} {shipped_fields}'
            )
    typestore.register(definitions)
    return typestore


# --- JSON value -> rosbags message ---------------------------------------------------------


def attribute(field: str) -> str:
    """Name of the Python attribute rosbags uses for a .msg field (keywords get a '_')."""
    return f'{field}_' if keyword.iskeyword(field) else field


def scalar(basetype: str, value, where: str):
    """Check a JSON scalar against a ROS base type and return the Python value."""
    if basetype == 'string':
        if not isinstance(value, str):
            raise FixtureError(f'{where}: expected a string, got {value!r}')
        return value
    if basetype == 'bool':
        if not isinstance(value, bool):
            raise FixtureError(f'{where}: expected a bool, got {value!r}')
        return value
    if basetype in INT_RANGES:
        low, high = INT_RANGES[basetype]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise FixtureError(f'{where}: expected an integer of type {basetype}, got {value!r}')
        return value
    if basetype in FLOAT_TYPES:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FixtureError(f'{where}: expected a number, got {value!r}')
        value = float(value)
        if basetype == 'float32':
            try:
                exact = struct.unpack('<f', struct.pack('<f', value))[0] == value
            except OverflowError:
                exact = False
            if not exact:
                raise FixtureError(f'{where}: {value!r} is not exactly representable as float32')
        return value
    raise FixtureError(f'{where}: base type {basetype} is not supported by the fixtures')


def numeric_array(basetype: str, value, where: str) -> np.ndarray:
    """Build the numpy array rosbags expects for a numeric array or sequence field."""
    if isinstance(value, dict):
        if set(value) != {'$pattern'} or basetype != 'uint8':
            raise FixtureError(f'{where}: only uint8 arrays may use {{"$pattern": ...}}')
        spec = value['$pattern']
        if not isinstance(spec, dict) or set(spec) != {'len', 'mul', 'add'}:
            raise FixtureError(f'{where}: $pattern needs exactly len, mul and add')
        index = np.arange(scalar('uint32', spec['len'], f'{where}.len'), dtype=np.uint64)
        mul = scalar('uint8', spec['mul'] % 256, f'{where}.mul')
        add = scalar('uint8', spec['add'] % 256, f'{where}.add')
        return ((index * mul + add) % 256).astype(np.uint8)
    if not isinstance(value, list):
        raise FixtureError(f'{where}: expected a list, got {type(value).__name__}')
    items = [scalar(basetype, item, f'{where}[{i}]') for i, item in enumerate(value)]
    return np.array(items, dtype=NUMERIC_DTYPES[basetype])


def build_field(typestore, desc, value, where: str):
    """Build the Python value rosbags expects for one field description."""
    kind, arg = desc
    if kind == Nodetype.BASE:
        return scalar(arg[0], value, where)
    if kind == Nodetype.NAME:
        return build_message(typestore, arg, value, where)

    (subkind, subarg), size = arg
    if subkind == Nodetype.BASE and subarg[0] in NUMERIC_DTYPES:
        built = numeric_array(subarg[0], value, where)
    else:
        if not isinstance(value, list):
            raise FixtureError(f'{where}: expected a list, got {type(value).__name__}')
        built = [build_field(typestore, (subkind, subarg), item, f'{where}[{i}]') for i, item in enumerate(value)]
    if kind == Nodetype.ARRAY and len(built) != size:
        raise FixtureError(f'{where}: array needs exactly {size} elements, got {len(built)}')
    if kind == Nodetype.SEQUENCE and size and len(built) > size:
        raise FixtureError(f'{where}: bounded sequence takes at most {size} elements, got {len(built)}')
    return built


def build_message(typestore, typename: str, value, where: str):
    """Build a rosbags message object of type typename from a JSON object."""
    if typename not in typestore.fielddefs:
        raise FixtureError(f'{where}: unknown type {typename}')
    if not isinstance(value, dict):
        raise FixtureError(f'{where}: expected an object for {typename}')
    fields = typestore.fielddefs[typename][1]
    names = [name for name, _ in fields]
    if missing := [name for name in names if name not in value]:
        raise FixtureError(f'{where}: {typename} misses fields {missing}')
    if unknown := sorted(set(value) - set(names)):
        raise FixtureError(f'{where}: {typename} has no fields {unknown}')
    kwargs = {attribute(name): build_field(typestore, desc, value[name], f'{where}.{name}') for name, desc in fields}
    return typestore.types[typename](**kwargs)


# --- comparing messages --------------------------------------------------------------------


def canonical(typestore, desc, value):
    """Reduce a field value to plain data in which floats compare bit for bit."""
    kind, arg = desc
    if kind == Nodetype.BASE:
        if arg[0] in FLOAT_TYPES:
            return ('float', struct.pack('<d', value))
        return (type(value).__name__, value)
    if kind == Nodetype.NAME:
        return tuple(
            (name, canonical(typestore, subdesc, getattr(value, attribute(name))))
            for name, subdesc in typestore.fielddefs[arg][1]
        )
    subdesc = arg[0]
    if isinstance(value, np.ndarray):
        return ('ndarray', value.dtype.str, value.shape, value.tobytes())
    return ('list', tuple(canonical(typestore, subdesc, item) for item in value))


# --- cases ---------------------------------------------------------------------------------


def load_cases(path: Path) -> list[dict]:
    """Read cases.json and check names and shape."""
    cases = json.loads(path.read_text(encoding='utf-8'))
    if not isinstance(cases, list):
        raise FixtureError(f'{path}: expected a list of cases')
    seen = set()
    for case in cases:
        if not isinstance(case, dict) or set(case) != {'name', 'type', 'value'}:
            raise FixtureError(f'{path}: every case needs exactly name, type and value: {case!r:.80}')
        name = case['name']
        if not isinstance(name, str) or not CASE_NAME.fullmatch(name) or name in seen:
            raise FixtureError(f'{path}: bad or duplicate case name {name!r}')
        seen.add(name)
    return cases



def project_typestore(store: Stores):
    """A rosbags type store of the given distribution with all our definitions registered."""
    return make_typestore(store, read_msg_definitions())


def difference(typestore, typename: str, got, want) -> str | None:
    """Where two messages of type typename differ (field path and both values), or None.

    Uses the strict comparison of ``canonical``: floats bit for bit, numeric arrays by
    dtype, shape and bytes.
    """
    return _difference(typestore, (Nodetype.NAME, typename), got, want, typename)


def _difference(typestore, desc, got, want, where: str) -> str | None:
    kind, arg = desc
    if kind == Nodetype.NAME:
        for name, subdesc in typestore.fielddefs[arg][1]:
            found = _difference(
                typestore, subdesc, getattr(got, attribute(name)), getattr(want, attribute(name)), f'{where}.{name}'
            )
            if found:
                return found
        return None
    if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE) and not isinstance(got, np.ndarray) and not isinstance(want, np.ndarray):
        if len(got) != len(want):
            return f'{where}: length {len(got)} != expected {len(want)}'
        for i, (item_got, item_want) in enumerate(zip(got, want)):
            if found := _difference(typestore, arg[0], item_got, item_want, f'{where}[{i}]'):
                return found
        return None
    if canonical(typestore, desc, got) == canonical(typestore, desc, want):
        return None
    if isinstance(got, np.ndarray) and isinstance(want, np.ndarray):
        if got.dtype != want.dtype or got.shape != want.shape:
            return f'{where}: array {got.dtype}{got.shape} != expected {want.dtype}{want.shape}'
        diff = np.nonzero(np.frombuffer(got.tobytes(), np.uint8) != np.frombuffer(want.tobytes(), np.uint8))[0]
        return f'{where}: {diff.size} array byte(s) differ, the first at byte {int(diff[0])}'
    return f'{where}: {_short(got)} != expected {_short(want)}'


def _short(value, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else f'{text[:limit]}... ({len(text)} chars)'


# --- rosbag2 layout shared by the bag fixtures, the checker and dreamplan's bag tests ----------

#: Log time of the message of case i (index in cases.json, file order): BASE + i * STEP.
LOG_TIME_BASE_NS = 1_700_000_000_000_000_000
LOG_TIME_STEP_NS = 1_000_000


def case_topic(name: str) -> str:
    """Topic carrying the message of a case."""
    return f'/cases/{name}'


def case_log_time(index: int) -> int:
    """Log time (ns) of the message of the case at this index of cases.json."""
    return LOG_TIME_BASE_NS + index * LOG_TIME_STEP_NS


# QoS durations rmw reports for "infinite" (what real rosbag2 recordings contain).
QOS_TIME_INFINITE = QosTime(2147483647, 4294967295)
QOS_TIME_ZERO = QosTime(0, 0)


def qos_to_json(qos: Qos) -> dict:
    """A QoS profile as JSON, enum values as rosbag2 v9 metadata writes them (lower-case names)."""
    return {
        'history': qos.history.name.lower(),
        'depth': qos.depth,
        'reliability': qos.reliability.name.lower(),
        'durability': qos.durability.name.lower(),
        'deadline': {'sec': qos.deadline.sec, 'nsec': qos.deadline.nsec},
        'lifespan': {'sec': qos.lifespan.sec, 'nsec': qos.lifespan.nsec},
        'liveliness': qos.liveliness.name.lower(),
        'liveliness_lease_duration': {
            'sec': qos.liveliness_lease_duration.sec,
            'nsec': qos.liveliness_lease_duration.nsec,
        },
        'avoid_ros_namespace_conventions': qos.avoid_ros_namespace_conventions,
    }


def qos_from_json(item: dict) -> Qos:
    """Inverse of qos_to_json."""
    return Qos(
        QosHistory[item['history'].upper()],
        item['depth'],
        QosReliability[item['reliability'].upper()],
        QosDurability[item['durability'].upper()],
        QosTime(**item['deadline']),
        QosTime(**item['lifespan']),
        QosLiveliness[item['liveliness'].upper()],
        QosTime(**item['liveliness_lease_duration']),
        item['avoid_ros_namespace_conventions'],
    )
