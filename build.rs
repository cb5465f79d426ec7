//! Generates the Rust mirrors of every ROS 2 message the nodes use from `.msg` files.
//!
//! Sources: `msg/*.msg` (this package's own interfaces, ROS package `dreamplan`) and
//! `src/msg/defs/<pkg>/msg/*.msg` (the standard types we mirror, field-identical to
//! ROS 2 Humble/Jazzy; a test checks them against PyPI `rosbags`).
//!
//! For each message this writes a serde struct (field order = CDR order), a `Default`
//! honouring `.msg` default values, its constants, and a `Message` impl carrying the ROS
//! type name and the full definition text with dependencies in rosbag2's schema layout.
//! One source of truth: the structs and the schema text cannot drift apart.
//!
//! Why hand-written: the .msg grammar we need (fields, fixed/unbounded arrays, bounded
//! strings, constants, defaults) is ~200 lines, while the crates that generate Rust from
//! .msg (roslibrust_codegen, r2r_msg_gen) either pull a whole ROS client or need a ROS
//! install at build time.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const OWN_PACKAGE: &str = "dreamplan";

#[derive(Debug, Clone)]
enum BaseType {
    Primitive(&'static str),
    Nested { pkg: String, name: String },
}

#[derive(Debug, Clone)]
enum Arity {
    Single,
    Fixed(usize),
    Unbounded,
}

#[derive(Debug, Clone)]
struct Field {
    base: BaseType,
    arity: Arity,
    name: String,
    default: Option<String>,
    doc: Vec<String>,
}

#[derive(Debug, Clone)]
struct Constant {
    prim: &'static str,
    name: String,
    value: String,
}

#[derive(Debug, Clone)]
struct MsgDef {
    pkg: String,
    name: String,
    text: String,
    doc: Vec<String>,
    fields: Vec<Field>,
    constants: Vec<Constant>,
}

/// ROS 2 primitive → (canonical name, Rust type).
fn primitive(t: &str) -> Option<(&'static str, &'static str)> {
    Some(match t {
        "bool" => ("bool", "bool"),
        "byte" => ("byte", "u8"),
        "char" => ("char", "u8"),
        "int8" => ("int8", "i8"),
        "uint8" => ("uint8", "u8"),
        "int16" => ("int16", "i16"),
        "uint16" => ("uint16", "u16"),
        "int32" => ("int32", "i32"),
        "uint32" => ("uint32", "u32"),
        "int64" => ("int64", "i64"),
        "uint64" => ("uint64", "u64"),
        "float32" => ("float32", "f32"),
        "float64" => ("float64", "f64"),
        "string" => ("string", "String"),
        _ => return None,
    })
}

fn rust_prim(p: &str) -> &'static str {
    primitive(p).map(|(_, r)| r).expect("known primitive")
}

fn parse_type(pkg: &str, raw: &str, file: &Path) -> (BaseType, Arity) {
    let (base, arity) = match raw.find('[') {
        Some(i) => {
            let inner = raw[i + 1..]
                .strip_suffix(']')
                .unwrap_or_else(|| panic!("{}: bad array type `{raw}`", file.display()));
            let arity =
                if inner.is_empty() || inner.starts_with("<=") {
                    Arity::Unbounded
                } else {
                    Arity::Fixed(inner.parse().unwrap_or_else(|_| {
                        panic!("{}: bad array size in `{raw}`", file.display())
                    }))
                };
            (&raw[..i], arity)
        }
        None => (raw, Arity::Single),
    };
    // Bounded strings (`string<=10`) are plain strings on the wire.
    let base = base.split("<=").next().unwrap_or(base);
    let bt = if let Some((canon, _)) = primitive(base) {
        BaseType::Primitive(canon)
    } else if let Some((p, n)) = base.split_once('/') {
        let n = n.rsplit('/').next().unwrap_or(n);
        BaseType::Nested {
            pkg: p.to_string(),
            name: n.to_string(),
        }
    } else if base == "Header" {
        BaseType::Nested {
            pkg: "std_msgs".into(),
            name: "Header".into(),
        }
    } else {
        BaseType::Nested {
            pkg: pkg.to_string(),
            name: base.to_string(),
        }
    };
    (bt, arity)
}

fn parse_msg(pkg: &str, name: &str, file: &Path) -> MsgDef {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    let mut fields = Vec::new();
    let mut constants = Vec::new();
    let mut pending_doc: Vec<String> = Vec::new();
    let mut msg_doc: Option<Vec<String>> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            if msg_doc.is_none() && fields.is_empty() && constants.is_empty() {
                msg_doc = Some(std::mem::take(&mut pending_doc));
            }
            continue;
        }
        if let Some(c) = trimmed.strip_prefix('#') {
            pending_doc.push(c.trim().to_string());
            continue;
        }
        let (code, trailing) = match trimmed.find('#') {
            // A '#' inside a string constant's value is part of the value.
            Some(i) if !trimmed[..i].contains('=') => {
                (&trimmed[..i], Some(trimmed[i + 1..].trim()))
            }
            _ => (trimmed, None),
        };
        let code = code.trim();
        let (ty, rest) = code
            .split_once(char::is_whitespace)
            .unwrap_or_else(|| panic!("{}: cannot parse line `{line}`", file.display()));
        let rest = rest.trim();
        if let Some((cname, value)) = rest.split_once('=') {
            let prim = primitive(ty)
                .unwrap_or_else(|| panic!("{}: constant of non-primitive type", file.display()))
                .0;
            let value = value
                .trim()
                .trim_matches('"')
                .trim_matches('\'')
                .to_string();
            constants.push(Constant {
                prim,
                name: cname.trim().to_string(),
                value,
            });
            pending_doc.clear();
            continue;
        }
        let (fname, default) = match rest.split_once(char::is_whitespace) {
            Some((n, d)) => (n, Some(d.trim().to_string())),
            None => (rest, None),
        };
        let (base, arity) = parse_type(pkg, ty, file);
        if msg_doc.is_none() && fields.is_empty() && constants.is_empty() {
            // Comments right above the first field document the message when no blank
            // line separates them; keep them on the field instead.
            msg_doc = Some(Vec::new());
        }
        let mut doc = std::mem::take(&mut pending_doc);
        if let Some(t) = trailing {
            doc.push(t.to_string());
        }
        fields.push(Field {
            base,
            arity,
            name: fname.to_string(),
            default,
            doc,
        });
    }
    assert!(
        !fields.is_empty(),
        "{}: messages without fields are not supported",
        file.display()
    );
    MsgDef {
        pkg: pkg.to_string(),
        name: name.to_string(),
        text,
        doc: msg_doc.unwrap_or_default(),
        fields,
        constants,
    }
}

fn collect(dir: &Path, pkg: &str, out: &mut BTreeMap<(String, String), MsgDef>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "msg"))
        .collect();
    entries.sort();
    for path in entries {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .to_string();
        let def = parse_msg(pkg, &name, &path);
        out.insert((pkg.to_string(), name), def);
    }
}

fn rust_ident(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn",
        "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
        "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
        "where", "while", "async", "await", "dyn", "box", "final", "override", "priv", "virtual",
    ];
    if KEYWORDS.contains(&name) {
        format!("r#{name}")
    } else {
        name.to_string()
    }
}

fn base_rust(b: &BaseType) -> String {
    match b {
        BaseType::Primitive(p) => rust_prim(p).to_string(),
        BaseType::Nested { pkg, name } => format!("super::{pkg}::{name}"),
    }
}

fn field_rust(f: &Field) -> String {
    let b = base_rust(&f.base);
    match f.arity {
        Arity::Single => b,
        Arity::Fixed(n) => format!("[{b}; {n}]"),
        Arity::Unbounded => format!("Vec<{b}>"),
    }
}

fn is_bytes(f: &Field) -> bool {
    matches!(f.arity, Arity::Unbounded)
        && matches!(f.base, BaseType::Primitive(p) if rust_prim(p) == "u8")
}

fn literal(prim: &str, value: &str) -> String {
    match rust_prim(prim) {
        "String" => format!("{value:?}"),
        "bool" => {
            let v = matches!(value.to_ascii_lowercase().as_str(), "true" | "1");
            v.to_string()
        }
        "f32" | "f64" => {
            let v: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad float literal `{value}`"));
            format!("{v:?}")
        }
        r => format!("{value}{r}"),
    }
}

/// The definition text with every dependency appended in rosbag2's layout.
fn full_definition(key: &(String, String), defs: &BTreeMap<(String, String), MsgDef>) -> String {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        key: &(String, String),
        defs: &BTreeMap<(String, String), MsgDef>,
        seen: &mut BTreeSet<(String, String)>,
        order: &mut Vec<(String, String)>,
    ) {
        let def = defs
            .get(key)
            .unwrap_or_else(|| panic!("message {}/{} is referenced but not defined", key.0, key.1));
        for f in &def.fields {
            if let BaseType::Nested { pkg, name } = &f.base {
                let dep = (pkg.clone(), name.clone());
                if seen.insert(dep.clone()) {
                    order.push(dep.clone());
                    visit(&dep, defs, seen, order);
                }
            }
        }
    }
    visit(key, defs, &mut seen, &mut order);
    let mut text = defs[key].text.trim_end().to_string();
    text.push('\n');
    for dep in order {
        text.push_str(&"=".repeat(80));
        let _ = writeln!(text, "\nMSG: {}/{}", dep.0, dep.1);
        text.push_str(defs[&dep].text.trim_end());
        text.push('\n');
    }
    text
}

fn doc_attr(lines: &[String], indent: &str, out: &mut String) {
    for l in lines {
        let _ = writeln!(out, "{indent}#[doc = {:?}]", format!(" {l}"));
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    fused_ptx(&root);
    let mut defs = BTreeMap::new();
    let std_root = root.join("src/msg/defs");
    println!("cargo:rerun-if-changed={}", std_root.display());
    println!("cargo:rerun-if-changed={}", root.join("msg").display());
    let mut pkgs: Vec<PathBuf> = std::fs::read_dir(&std_root)
        .expect("src/msg/defs")
        .map(|e| e.expect("entry").path())
        .collect();
    pkgs.sort();
    for p in pkgs {
        let pkg = p.file_name().expect("name").to_string_lossy().to_string();
        collect(&p.join("msg"), &pkg, &mut defs);
    }
    collect(&root.join("msg"), OWN_PACKAGE, &mut defs);

    let mut out = String::new();
    out.push_str("// @generated by build.rs from .msg files; do not edit.\n");
    let mut by_pkg: BTreeMap<&str, Vec<&(String, String)>> = BTreeMap::new();
    for key in defs.keys() {
        by_pkg.entry(key.0.as_str()).or_default().push(key);
    }
    for (pkg, keys) in &by_pkg {
        let _ = writeln!(out, "#[doc = \" Messages of the ROS 2 package `{pkg}`.\"]");
        let _ = writeln!(out, "pub mod {pkg} {{");
        for key in keys {
            let def = &defs[*key];
            let full = full_definition(key, &defs);
            let mut doc = def.doc.clone();
            if !doc.is_empty() {
                doc.push(String::new());
            }
            doc.push(format!("ROS 2 type `{}/msg/{}`.", def.pkg, def.name));
            doc_attr(&doc, "    ", &mut out);
            out.push_str(
                "    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]\n",
            );
            let _ = writeln!(out, "    pub struct {} {{", def.name);
            for f in &def.fields {
                doc_attr(&f.doc, "        ", &mut out);
                if is_bytes(f) {
                    out.push_str("        #[serde(with = \"serde_bytes\")]\n");
                }
                let _ = writeln!(
                    out,
                    "        pub {}: {},",
                    rust_ident(&f.name),
                    field_rust(f)
                );
            }
            out.push_str("    }\n");
            let _ = writeln!(out, "    impl Default for {} {{", def.name);
            out.push_str("        fn default() -> Self {\n            Self {\n");
            for f in &def.fields {
                let value = match (&f.base, &f.arity, &f.default) {
                    (BaseType::Primitive(p), Arity::Single, Some(d)) => literal(p, d),
                    (_, Arity::Fixed(n), None) => format!("[Default::default(); {n}]"),
                    (_, _, None) => "Default::default()".to_string(),
                    (_, _, Some(d)) => panic!(
                        "{}/{}: default `{d}` for field `{}` is not supported",
                        def.pkg, def.name, f.name
                    ),
                };
                let _ = writeln!(out, "                {}: {value},", rust_ident(&f.name));
            }
            out.push_str("            }\n        }\n    }\n");
            if !def.constants.is_empty() {
                let _ = writeln!(out, "    impl {} {{", def.name);
                for c in &def.constants {
                    let ty = match rust_prim(c.prim) {
                        "String" => "&'static str",
                        t => t,
                    };
                    let _ = writeln!(
                        out,
                        "        pub const {}: {ty} = {};",
                        c.name,
                        literal(c.prim, &c.value)
                    );
                }
                out.push_str("    }\n");
            }
            let _ = writeln!(out, "    impl crate::msg::Message for {} {{", def.name);
            let _ = writeln!(
                out,
                "        const TYPE_NAME: &'static str = \"{}/msg/{}\";",
                def.pkg, def.name
            );
            let _ = writeln!(out, "        const DEFINITION: &'static str = {full:?};");
            out.push_str("    }\n");
        }
        out.push_str("}\n");
    }

    // Type-name dispatch: lets tools (monitor, bag reader) go from a runtime name to a type.
    out.push_str("/// Every message type this crate knows, by ROS 2 type name (`pkg/msg/Name`).\n");
    out.push_str("pub const ALL_TYPE_NAMES: &[&str] = &[\n");
    for key in defs.keys() {
        let _ = writeln!(out, "    \"{}/msg/{}\",", key.0, key.1);
    }
    out.push_str("];\n");
    out.push_str(
        "/// Calls `visitor` with the Rust type named by `type_name` (`pkg/msg/Name` or `pkg/Name`).\n\
         /// Returns `None` for a type this crate does not mirror.\n\
         pub fn visit_type<V: crate::msg::TypeVisitor>(type_name: &str, visitor: V) -> Option<V::Output> {\n\
         \x20   let full = crate::msg::normalize_type_name(type_name)?;\n\
         \x20   Some(match full.as_str() {\n",
    );
    for key in defs.keys() {
        let _ = writeln!(
            out,
            "        \"{0}/msg/{1}\" => visitor.visit::<{0}::{1}>(),",
            key.0, key.1
        );
    }
    out.push_str("        _ => return None,\n    })\n}\n");

    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("messages.rs");
    std::fs::write(&dest, out).expect("write generated messages");
}

/// With the `cuda` feature: `src/vlm/fused.cu` compiled to PTX (`$OUT_DIR/fused.ptx`, read
/// by `src/vlm/fused.rs`) with the nvcc on `PATH` (or `$NVCC`), for `CUDA_COMPUTE_CAP`
/// (default 80: PTX that the driver compiles for any newer GPU at load). Without it,
/// nothing.
fn fused_ptx(root: &Path) {
    println!("cargo:rerun-if-changed=src/vlm/fused.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("fused.ptx");
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let status = std::process::Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("-arch=compute_{cap}"))
        .arg(root.join("src/vlm/fused.cu"))
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "the cuda feature needs nvcc ({nvcc}: {e}); scripts/cuda_toolchain.sh sets one up"
            )
        });
    assert!(
        status.success(),
        "nvcc failed on src/vlm/fused.cu ({status})"
    );
}
