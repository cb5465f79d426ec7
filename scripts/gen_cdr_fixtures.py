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

The type store, the case parser and the strict comparison live in
``rosbags_common.py`` (shared with the rosbag2 scripts).

The output is deterministic. CI regenerates the fixtures into a temporary
directory and diffs them against the committed files, so a change to a
``.msg`` file, to ``cases.json`` or in rosbags shows up as a fixture diff.
Exit status is non-zero on any failed check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores

from rosbags_common import (
    DEFAULT_CASES,
    REPO,
    FixtureError,
    build_message,
    canonical,
    load_cases,
    make_typestore,
    read_msg_definitions,
)

PRIMARY_STORE = Stores.ROS2_HUMBLE
CROSSCHECK_STORE = Stores.ROS2_JAZZY


# --- main ----------------------------------------------------------------------------------


def without_constants(msgdef: str) -> list[str]:
    """A generated definition's lines without its constants (`TYPE NAME=VALUE`)."""
    return [line for line in msgdef.splitlines() if '=' not in line.split('#')[0] or line.startswith('=')]


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
        other_def = crosscheck.generate_msgdef(typename, ros_version=2)[0]
        # A constant a later distro added (Jazzy's Marker.ARROW_STRIP) changes the text,
        # not the wire: only a difference in the fields fails.
        if without_constants(other_def) != without_constants(msgdef):
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
