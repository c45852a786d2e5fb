//! Generates the typed request structs of the AWS services Cove serves from
//! the botocore models the wire layer validates against
//! (`cove-wire/models/<service>.json`), one Rust module per service: one
//! struct per input structure, members named in snake case and renamed back
//! to AWS's names for serde, required members plain and the others
//! `Option`, lists as `Vec`, maps as `BTreeMap`, timestamps as
//! [`crate::Timestamp`]; and a `Request` enum with `Request::parse`. The
//! wire layer has already checked every constraint, so parsing into these
//! types only fails on a request the model itself would refuse.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// The services to generate: the module (`$OUT_DIR/<module>.rs`, included
/// by `pub mod <module>` in lib.rs) and the model it comes from. Adding a
/// service is one line here and one `pub mod` line in lib.rs.
const SERVICES: &[(&str, &str)] = &[("sagemaker", "../cove-wire/models/sagemaker.json")];

fn snake(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if i > 0 && (prev_lower || (next_lower && chars[i - 1].is_uppercase())) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(*c);
        }
    }
    match out.as_str() {
        "type" | "match" | "ref" | "self" | "struct" | "enum" | "use" | "mod" | "where" | "in"
        | "for" | "loop" | "move" | "static" | "const" | "async" | "await" | "dyn" | "box"
        | "final" | "override" | "yield" | "try" => format!("r#{out}"),
        _ => out,
    }
}

fn rust_type(shapes: &Value, name: &str) -> String {
    let shape = &shapes[name];
    match shape["type"].as_str().unwrap_or_default() {
        "structure" => name.to_string(),
        "list" => format!(
            "Vec<{}>",
            rust_type(shapes, shape["member"]["shape"].as_str().unwrap())
        ),
        "map" => format!(
            "BTreeMap<String, {}>",
            rust_type(shapes, shape["value"]["shape"].as_str().unwrap())
        ),
        "integer" | "long" => "i64".into(),
        "float" | "double" => "f64".into(),
        "boolean" => "bool".into(),
        "timestamp" => "Timestamp".into(),
        _ => "String".into(),
    }
}

fn reach(shapes: &Value, name: &str, seen: &mut BTreeSet<String>) {
    if !seen.insert(name.to_string()) {
        return;
    }
    let shape = &shapes[name];
    match shape["type"].as_str().unwrap_or_default() {
        "structure" => {
            for m in shape["members"].as_object().into_iter().flatten() {
                reach(shapes, m.1["shape"].as_str().unwrap(), seen);
            }
        }
        "list" => reach(shapes, shape["member"]["shape"].as_str().unwrap(), seen),
        "map" => reach(shapes, shape["value"]["shape"].as_str().unwrap(), seen),
        _ => {}
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = std::env::var("OUT_DIR").expect("OUT_DIR");
    for (module, path) in SERVICES {
        println!("cargo:rerun-if-changed={path}");
        let model: Value = serde_json::from_str(
            &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}")),
        )
        .unwrap_or_else(|e| panic!("{path}: {e}"));
        let dest = std::path::Path::new(&out_dir).join(format!("{module}.rs"));
        std::fs::write(&dest, generate(&model)).expect("writing the generated module");
    }
}

/// One service's module: its input structures and its `Request` enum.
fn generate(model: &Value) -> String {
    let service = model["metadata"]["serviceId"]
        .as_str()
        .expect("metadata.serviceId");
    let shapes = &model["shapes"];
    let operations: BTreeMap<String, String> = model["operations"]
        .as_object()
        .expect("operations")
        .iter()
        .filter_map(|(op, o)| Some((op.clone(), o["input"]["shape"].as_str()?.to_string())))
        .collect();
    let mut seen = BTreeSet::new();
    for input in operations.values() {
        reach(shapes, input, &mut seen);
    }
    let mut out = String::new();
    writeln!(out, "use crate::Timestamp;").unwrap();
    writeln!(out, "use serde::Deserialize;").unwrap();
    writeln!(
        out,
        "#[allow(unused_imports)] // why: not every service has a map."
    )
    .unwrap();
    writeln!(out, "use std::collections::BTreeMap;\n").unwrap();
    for name in &seen {
        let shape = &shapes[name.as_str()];
        if shape["type"] != "structure" {
            continue;
        }
        let required: BTreeSet<&str> = shape["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        writeln!(out, "/// `{name}` of the {service} API.").unwrap();
        writeln!(
            out,
            "#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]"
        )
        .unwrap();
        writeln!(out, "pub struct {name} {{").unwrap();
        for (member, m) in shape["members"].as_object().into_iter().flatten() {
            let ty = rust_type(shapes, m["shape"].as_str().unwrap());
            let field = snake(member);
            if required.contains(member.as_str()) {
                writeln!(out, "    #[serde(rename = \"{member}\")]").unwrap();
                writeln!(out, "    pub {field}: {ty},").unwrap();
            } else {
                writeln!(
                    out,
                    "    #[serde(rename = \"{member}\", default, skip_serializing_if = \"Option::is_none\")]"
                )
                .unwrap();
                writeln!(out, "    pub {field}: Option<{ty}>,").unwrap();
            }
        }
        writeln!(out, "}}\n").unwrap();
    }
    writeln!(
        out,
        "/// A request to one of the operations Cove serves, parsed once."
    )
    .unwrap();
    writeln!(out, "#[derive(Debug, Clone)]").unwrap();
    writeln!(out, "#[allow(clippy::large_enum_variant)]").unwrap();
    writeln!(out, "pub enum Request {{").unwrap();
    for (op, input) in &operations {
        writeln!(out, "    {op}({input}),").unwrap();
    }
    writeln!(out, "}}\n").unwrap();
    writeln!(out, "impl Request {{").unwrap();
    writeln!(
        out,
        "    /// Parses `input` as operation `operation`'s request; `None` for an operation the model does not have."
    )
    .unwrap();
    writeln!(
        out,
        "    pub fn parse(operation: &str, input: &serde_json::Value) -> Option<Result<Request, serde_json::Error>> {{"
    )
    .unwrap();
    writeln!(out, "        Some(match operation {{").unwrap();
    for (op, input) in &operations {
        writeln!(
            out,
            "            \"{op}\" => {input}::deserialize(input).map(Request::{op}),"
        )
        .unwrap();
    }
    writeln!(out, "            _ => return None,").unwrap();
    writeln!(out, "        }})").unwrap();
    writeln!(out, "    }}").unwrap();
    writeln!(out, "}}").unwrap();
    out
}
