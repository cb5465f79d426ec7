#!/usr/bin/env python3
"""Consistency checks for the ROS 2 packaging of dreamplan (no ROS needed, stdlib only).

    python3 tests/packaging/check_package.py [REPO_ROOT]

Checks that package.xml, CMakeLists.txt, msg/*.msg, launch/*.launch.xml and their
launch/*.launch.py twins, config/ros/*.yaml and Cargo.toml agree with each other. Prints every problem found and
exits 1 if there is any, 0 otherwise.
"""

from __future__ import annotations

import re
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

PKG = "dreamplan"
# CMake list variable holding the node executables to build and install.
NODES_VAR = "DREAMPLAN_NODES"
# crate -> the rosdep keys it needs and how: "depend" (built against and linked at run
# time) or "build_depend" (the build alone: bindgen's clang).
SYSTEM_DEPS = {
    "opencv": [("libopencv-dev", "depend"), ("clang", "build_depend"),
               ("libclang-dev", "build_depend")],
    "r2r": [("clang", "build_depend"), ("libclang-dev", "build_depend")],
}
FIND_PKG_SHARE = f"$(find-pkg-share {PKG})/"


def strip_cmake_comments(text: str) -> str:
    # Good enough for our CMakeLists.txt: no '#' inside quoted strings there.
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def cmake_call_args(cmake: str, command: str) -> list[list[str]]:
    """Argument lists of every `command(...)` call (no nested parentheses expected)."""
    calls = []
    for m in re.finditer(rf"\b{re.escape(command)}\s*\(([^)]*)\)", cmake, re.IGNORECASE):
        calls.append([a.strip('"') for a in m.group(1).split()])
    return calls


def msg_field_types(path: Path) -> list[str]:
    types = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        types.append(re.sub(r"\[[^\]]*\]$", "", line.split()[0]))  # drop [], [N], [<=N]
    return types


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2]
    errors: list[str] = []
    notes: list[str] = []

    def need(path: Path) -> bool:
        if not path.is_file():
            errors.append(f"missing file: {path.relative_to(root)}")
            return False
        return True

    # --- package.xml ---------------------------------------------------------------
    depends: set[str] = set()
    build_depends: set[str] = set()
    runtime: set[str] = set()
    if need(root / "package.xml"):
        pkg = ET.parse(root / "package.xml").getroot()
        if pkg.tag != "package" or pkg.get("format") != "3":
            errors.append(f"package.xml: want <package format=\"3\">, got <{pkg.tag} "
                          f"format={pkg.get('format')!r}>")
        if (pkg.findtext("name") or "").strip() != PKG:
            errors.append(f"package.xml: <name> is {pkg.findtext('name')!r}, want {PKG!r}")
        build_type = (pkg.findtext("export/build_type") or "").strip()
        if build_type != "ament_cmake":
            errors.append(f"package.xml: <export><build_type> is {build_type!r}, "
                          "want 'ament_cmake'")
        groups = {(e.text or "").strip() for e in pkg.findall("member_of_group")}
        if "rosidl_interface_packages" not in groups:
            errors.append("package.xml: needs <member_of_group>rosidl_interface_packages"
                          "</member_of_group> (rosidl_generate_interfaces insists)")
        depends = {(e.text or "").strip() for e in pkg.findall("depend")}
        build_depends = depends | {(e.text or "").strip() for e in pkg.findall("build_depend")}
        runtime = depends | {(e.text or "").strip() for e in pkg.findall("exec_depend")}

    # --- CMakeLists.txt ------------------------------------------------------------
    cmake = ""
    if need(root / "CMakeLists.txt"):
        cmake = strip_cmake_comments((root / "CMakeLists.txt").read_text(encoding="utf-8"))
    rosidl_calls = cmake_call_args(cmake, "rosidl_generate_interfaces")
    listed_msgs: set[str] = set()
    rosidl_deps: set[str] = set()
    if len(rosidl_calls) != 1:
        errors.append("CMakeLists.txt: want exactly one rosidl_generate_interfaces() call, "
                      f"found {len(rosidl_calls)}")
    else:
        args = rosidl_calls[0]
        if "DEPENDENCIES" in args:
            rosidl_deps = set(args[args.index("DEPENDENCIES") + 1:])
        listed_msgs = {a for a in args if a.endswith(".msg")}
    nodes: list[str] = []
    for args in cmake_call_args(cmake, "set"):
        if args and args[0] == NODES_VAR:
            nodes = args[1:]
    if not nodes:
        errors.append(f"CMakeLists.txt: no set({NODES_VAR} ...) list of node executables")

    # --- msg/*.msg -----------------------------------------------------------------
    msg_files = sorted((root / "msg").glob("*.msg"))
    own_types = {p.stem for p in msg_files}
    for p in msg_files:
        rel = f"msg/{p.name}"
        if rel not in listed_msgs:
            errors.append(f"CMakeLists.txt: {rel} is not listed in rosidl_generate_interfaces()")
        for t in msg_field_types(p):
            if "/" not in t:
                continue
            dep_pkg, _, type_name = t.partition("/")
            type_name = type_name.removeprefix("msg/")
            if dep_pkg == PKG:
                if type_name not in own_types:
                    errors.append(f"{rel}: refers to {t}, but msg/{type_name}.msg does not exist")
                continue
            if dep_pkg not in depends:
                errors.append(f"package.xml: {rel} uses {t}; add <depend>{dep_pkg}</depend>")
            if rosidl_calls and dep_pkg not in rosidl_deps:
                errors.append(f"CMakeLists.txt: {rel} uses {t}; add {dep_pkg} to the "
                              "DEPENDENCIES of rosidl_generate_interfaces()")
    for rel in sorted(listed_msgs):
        if not (root / rel).is_file():
            errors.append(f"CMakeLists.txt: rosidl_generate_interfaces() lists {rel}, "
                          "which does not exist")

    # --- message packages the nodes use through r2r ------------------------------------
    # r2r resolves a type name (its untyped publishers and subscriptions, which carry every
    # mirrored type) only in the packages it generated code for at build time, the
    # DREAMPLAN_IDL_PACKAGES filter: a mirrored package missing there made the node fail at
    # start with InvalidMessageType (visualization_msgs, the executor's markers, until
    # session 52). Each must be a build-time <depend> too.
    idl_packages: set[str] = set()
    for args in cmake_call_args(cmake, "set"):
        if args and args[0] == "DREAMPLAN_IDL_PACKAGES":
            idl_packages = set(args[1:])
    if not idl_packages:
        errors.append("CMakeLists.txt: no set(DREAMPLAN_IDL_PACKAGES ...) list for r2r")
    mirrored = sorted(p.name for p in (root / "src/msg/defs").iterdir() if p.is_dir())
    for dep_pkg in mirrored:
        if idl_packages and dep_pkg not in idl_packages:
            errors.append(f"CMakeLists.txt: the nodes use {dep_pkg} types (src/msg/defs/"
                          f"{dep_pkg}); add {dep_pkg} to DREAMPLAN_IDL_PACKAGES, or r2r "
                          "refuses them at run time")
        if dep_pkg not in depends:
            errors.append(f"package.xml: the nodes use {dep_pkg} types (src/msg/defs/"
                          f"{dep_pkg}); add <depend>{dep_pkg}</depend>")

    # --- Cargo.toml [[bin]] ----------------------------------------------------------
    bins: dict[str, dict] = {}
    if need(root / "Cargo.toml"):
        with open(root / "Cargo.toml", "rb") as f:
            cargo = tomllib.load(f)
        bins = {b.get("name"): b for b in cargo.get("bin", [])}
        features = cargo.get("features", {})
        if "ros2" not in features:
            errors.append("Cargo.toml: no [features] ros2 (colcon builds with --features ros2)")
        # System libraries that crates link or run at build time, by their rosdep keys:
        # `rosdep install` is how a ROS user gets them, and ros-<distro>-ros-base brings
        # none (libopencv-dev was missing until session 53: colcon build stopped in the
        # opencv crate's build script).
        deps = cargo.get("dependencies", {})
        for crate, keys in SYSTEM_DEPS.items():
            if crate not in deps:
                continue
            for key, when in keys:
                have = depends if when == "depend" else build_depends
                if key not in have:
                    errors.append(f"package.xml: the {crate} crate needs {key}; add "
                                  f"<{when}>{key}</{when}>")
    missing_bins = [n for n in nodes if n not in bins]
    if missing_bins:
        errors.append(
            f"Cargo.toml: no [[bin]] for {', '.join(missing_bins)} (listed in {NODES_VAR}; "
            "the colcon build runs cargo with --bin for each). Add e.g.\n"
            + "\n\n".join(f'      [[bin]]\n      name = "{n}"\n      path = "src/bin/{n}.rs"\n'
                        '      required-features = ["ros2"]' for n in missing_bins))
    for n in nodes:
        if n in bins and "ros2" not in bins[n].get("required-features", []):
            errors.append(f"Cargo.toml: [[bin]] {n} should have required-features = [\"ros2\"] "
                          "so that builds without ROS skip it")
        if n in bins and bins[n].get("path") and not (root / bins[n]["path"]).is_file():
            notes.append(f"Cargo.toml: [[bin]] {n} path {bins[n]['path']} does not exist yet")

    # --- launch/*.launch.xml -----------------------------------------------------------
    launch_files = sorted((root / "launch").glob("*.launch.xml"))
    if not launch_files:
        errors.append("launch/: no *.launch.xml files")
    for lf in launch_files:
        rel = f"launch/{lf.name}"
        try:
            tree = ET.parse(lf).getroot()
        except ET.ParseError as e:
            errors.append(f"{rel}: not well-formed XML: {e}")
            continue
        # Other packages a launch file starts must be in package.xml.
        used: set[str] = set()
        for node in tree.iter("node"):
            if node.get("pkg") != PKG:
                used.add(node.get("pkg") or "")
        for inc in tree.iter("include"):
            m = re.match(r"\$\(find-pkg-share ([\w-]+)\)", inc.get("file") or "")
            if m and m.group(1) != PKG:
                used.add(m.group(1))
        for ex in tree.iter("executable"):
            words = (ex.get("cmd") or "").split()
            if words[:1] == ["ros2"] and len(words) > 1:
                used.add(f"ros2{words[1]}")  # `ros2 bag` is package ros2bag, and so on
        text = lf.read_text(encoding="utf-8")
        for m in re.finditer(r"\$\(command '(\w+)", text):
            used.add(m.group(1))  # e.g. $(command 'xacro ...'): the xacro package
        # Every file of this package a launch file names must exist in the source tree
        # (it is installed from there).
        for m in re.finditer(r"\$\(find-pkg-share " + PKG + r"\)/([\w./-]+)", text):
            if not (root / m.group(1)).is_file():
                errors.append(f"{rel}: names $(find-pkg-share {PKG})/{m.group(1)}, which has "
                              "no source file")
        # A parameter whose value is a command's output (a URDF from xacro) must say
        # type="str": without it launch_ros reads the value as YAML and stops the launch on
        # the first comment line holding ": ".
        for node in tree.iter("node"):
            for param in node.iter("param"):
                if "$(command" in (param.get("value") or "") and param.get("type") != "str":
                    errors.append(f"{rel}: parameter {param.get('name')} takes a command's "
                                  "output without type=\"str\" (launch_ros parses it as YAML)")
        # Its Python twin includes exactly it.
        twin = lf.with_name(lf.name[: -len(".xml")] + ".py")
        if not twin.is_file():
            errors.append(f"{rel}: no launch/{twin.name} (the Python form of each launch file)")
        for dep in sorted(used - runtime):
            errors.append(f"{rel}: starts something from package {dep}, which package.xml "
                          "does not list")
        for node in tree.iter("node"):
            if node.get("pkg") != PKG:
                continue
            exe = node.get("exec")
            if exe not in nodes:
                errors.append(f"{rel}: exec=\"{exe}\" is not in {NODES_VAR} in CMakeLists.txt, "
                              "so it is not installed")
            if exe not in bins:
                errors.append(f"{rel}: exec=\"{exe}\" is not a [[bin]] name in Cargo.toml")
            for param in node.iter("param"):
                src = param.get("from")
                if not src:
                    continue
                if not src.startswith(FIND_PKG_SHARE):
                    notes.append(f"{rel}: params file {src} is not from this package's share")
                    continue
                params = root / src[len(FIND_PKG_SHARE):]
                if not params.is_file():
                    errors.append(f"{rel}: params file {src} has no source "
                                  f"{params.relative_to(root)}")
                    continue
                # The params file's top-level key must be the node's name (or a wildcard).
                name = node.get("name") or exe
                keys = [ln.split(":", 1)[0].strip() for ln in
                        params.read_text(encoding="utf-8").splitlines()
                        if ln and not ln[0].isspace() and not ln.startswith("#")]
                if not any(k in (name, f"/{name}", "/**") for k in keys):
                    errors.append(f"{params.relative_to(root)}: no top-level '{name}:' key for "
                                  f"node {name} launched by {rel}")

    # --- launch/*.launch.py: each includes its XML twin -----------------------------------
    import ast
    for py in sorted((root / "launch").glob("*.launch.py")):
        rel = f"launch/{py.name}"
        try:
            tree = ast.parse(py.read_text(encoding="utf-8"))
        except SyntaxError as e:
            errors.append(f"{rel}: not Python: {e}")
            continue
        named = {n.value for n in ast.walk(tree)
                 if isinstance(n, ast.Constant) and isinstance(n.value, str)
                 and n.value.endswith(".launch.xml")}
        want = py.name[: -len(".py")] + ".xml"
        if named != {want}:
            errors.append(f"{rel}: includes {sorted(named)}, expected its twin {want}")
        elif not (root / "launch" / want).is_file():
            errors.append(f"{rel}: its twin launch/{want} does not exist")
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom | ast.Import)
                    for a in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])}
        for dep in sorted(imported - runtime - {"os", "sys"}):
            errors.append(f"{rel}: imports {dep}, which package.xml does not list")

    # --- config/ros/*.yaml ---------------------------------------------------------------
    for y in sorted((root / "config" / "ros").glob("*.yaml")):
        for i, ln in enumerate(y.read_text(encoding="utf-8").splitlines(), 1):
            body = ln.split("#", 1)[0]
            if re.search(r":\s*\[\s*\]", body):
                errors.append(f"config/ros/{y.name}:{i}: empty list; ROS 2 params files "
                              "cannot type an empty list, leave the parameter out")
        if "ros__parameters:" not in y.read_text(encoding="utf-8"):
            errors.append(f"config/ros/{y.name}: no ros__parameters section")

    errors = list(dict.fromkeys(errors))  # same problem from two fields: report once
    for n in notes:
        print(f"note: {n}")
    if errors:
        print(f"check_package: {len(errors)} problem(s):", file=sys.stderr)
        for e in errors:
            print(f"  - {e}", file=sys.stderr)
        return 1
    print(f"check_package: OK ({len(msg_files)} msgs, nodes: {', '.join(nodes)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
