#!/usr/bin/env python3
"""Generate the ROS 2 CDR conformance fixtures for dreamplan's message codec.

The fixtures pin dreamplan's hand-written CDR encoder/decoder to an independent
reference: the pure-Python ``rosbags`` library. For every case in
``tests/fixtures/cdr/cases.json`` this script

* builds a rosbags type store (``Stores.ROS2_HUMBLE``) and registers every message
  definition under ``src/msg/defs/<pkg>/msg/`` (standard types we mirror) and
  ``msg/`` (ROS package ``dreamplan``); a standard type the store already knows
  must be field-identical to ours and the store's own definition is kept;
* builds the message object from the case's JSON value and serialises it to
  little-endian CDR, 4-byte encapsulation header ``00 01 00 00`` included,
  writing ``OUTDIR/<name>.cdr``;
* writes ``OUTDIR/msgdef/<pkg>__<Name>.msg``, the ROS 2 message definition text
  rosbags generates for each case type (what rosbags puts into MCAP schemas);
* checks that deserialising each ``.cdr`` gives back the same values (floats
  compared bit for bit) and that a ``Stores.ROS2_JAZZY`` store produces
  identical bytes.

Case format (``cases.json``): a list of ``{"name", "type", "value"}`` objects;
``type`` is ``pkg/msg/Name``; ``value`` gives every field of the message by its
``.msg`` name (nested messages as objects, arrays as lists). A ``uint8`` array
may instead be ``{"$pattern": {"len": N, "mul": A, "add": B}}``, meaning
``data[i] = (i * A + B) % 256``. float32 values must be exactly representable
as float32, so the JSON value is exactly what is on the wire.

Usage::

    .venv/bin/python scripts/gen_cdr_fixtures.py tests/fixtures/cdr

The output is deterministic. CI regenerates the fixtures into a temporary
directory and diffs them against the committed files, so a change to a
``.msg`` file, to ``cases.json`` or in rosbags shows up as a fixture diff.
Exit status is non-zero on any failed check.
"""

from __future__ import annotations

import argparse
import json
import keyword
import re
import struct
import sys
from pathlib import Path

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

REPO = Path(__file__).resolve().parent.parent
STD_DEFS_DIR = REPO / 'src' / 'msg' / 'defs'
OWN_DEFS_DIR = REPO / 'msg'
OWN_PACKAGE = 'dreamplan'
DEFAULT_CASES = REPO / 'tests' / 'fixtures' / 'cdr' / 'cases.json'

PRIMARY_STORE = Stores.ROS2_HUMBLE
CROSSCHECK_STORE = Stores.ROS2_JAZZY

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
    array sizes, constants); the store's definition is then kept as it is.
    """
    typestore = get_typestore(store)
    for typename, (constants, fields) in sorted(definitions.items()):
        shipped = typestore.fielddefs.get(typename)
        if shipped is None:
            continue
        shipped_constants, shipped_fields = shipped
        if list(fields) != list(shipped_fields) or list(constants) != list(shipped_constants):
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


# --- main ----------------------------------------------------------------------------------


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


def generate(outdir: Path, cases_path: Path) -> None:
    """Write all fixtures into outdir, checking them as described in the module docstring."""
    definitions = read_msg_definitions()
    primary = make_typestore(PRIMARY_STORE, definitions)
    crosscheck = make_typestore(CROSSCHECK_STORE, definitions)
    cases = load_cases(cases_path)

    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / 'msgdef').mkdir(exist_ok=True)
    written: set[Path] = set()
    problems: list[str] = []
    total_bytes = 0

    for case in cases:
        name, typename = case['name'], case['type']
        message = build_message(primary, typename, case['value'], name)
        data = bytes(primary.serialize_cdr(message, typename, little_endian=True))
        if data[:4] != b'\x00\x01\x00\x00':
            raise FixtureError(f'{name}: unexpected encapsulation header {data[:4].hex()}')

        decoded = primary.deserialize_cdr(data, typename)
        desc = (Nodetype.NAME, typename)
        if canonical(primary, desc, decoded) != canonical(primary, desc, message):
            problems.append(f'{name}: deserialising the CDR bytes does not give the original values')

        other = build_message(crosscheck, typename, case['value'], name)
        other_data = bytes(crosscheck.serialize_cdr(other, typename, little_endian=True))
        if other_data != data:
            problems.append(f'NOTE {name}: {CROSSCHECK_STORE.name} serialises to different bytes than {PRIMARY_STORE.name}')

        path = outdir / f'{name}.cdr'
        path.write_bytes(data)
        written.add(path)
        total_bytes += len(data)

    for typename in sorted({case['type'] for case in cases}):
        msgdef, _ = primary.generate_msgdef(typename, ros_version=2)
        if crosscheck.generate_msgdef(typename, ros_version=2)[0] != msgdef:
            problems.append(f'NOTE {typename}: {CROSSCHECK_STORE.name} generates a different message definition')
        package, _, msgname = typename.split('/')
        path = outdir / 'msgdef' / f'{package}__{msgname}.msg'
        path.write_bytes(msgdef.encode('utf-8'))
        written.add(path)

    stale = sorted(
        str(path.relative_to(outdir))
        for path in [*outdir.glob('*.cdr'), *(outdir / 'msgdef').glob('*.msg')]
        if path not in written
    )
    if stale:
        print(f'warning: files in {outdir} that no case produces: {", ".join(stale)}', file=sys.stderr)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        raise FixtureError(f'{len(problems)} check(s) failed')

    ntypes = len({case['type'] for case in cases})
    print(
        f'gen_cdr_fixtures: {len(cases)} cases, {ntypes} types, {total_bytes} CDR bytes -> {outdir}; '
        f'round trip OK, {CROSSCHECK_STORE.name} bytes identical to {PRIMARY_STORE.name}'
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('outdir', type=Path, help='directory to write <name>.cdr and msgdef/ into')
    parser.add_argument('--cases', type=Path, default=DEFAULT_CASES, help=f'case file (default: {DEFAULT_CASES.relative_to(REPO)})')
    args = parser.parse_args()
    try:
        generate(args.outdir, args.cases)
    except FixtureError as error:
        print(f'gen_cdr_fixtures: error: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
