//! Generates the typed request structs of the AWS services Cove serves from
//! the botocore models the wire layer validates against
//! (`cove-wire/models/<service>.json`), one Rust module per service: one
//! struct per input structure, members named in snake case and renamed back
//! to AWS's names for serde, required members plain and the others
//! `Option`, lists as `Vec`, maps as `BTreeMap`, timestamps as
//! [`crate::Timestamp`] (as text for the query protocols, whose wire
//! carries them as text the handlers interpret), blobs as the `String` the
//! wire layer decodes them to; and a `Request` enum with `Request::parse`.
//! The wire layer has already checked every constraint, so parsing into
//! these types only fails on a request the model itself would refuse.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// One service to generate.
struct Service {
    /// The module: `$OUT_DIR/<module>.rs`, included by `pub mod <module>`
    /// in lib.rs.
    module: &'static str,
    /// The botocore model it comes from.
    model: &'static str,
    /// Every member `Option`, required or not: for a service whose
    /// handlers answer a missing required member with their own error
    /// (EC2's `MissingParameter`), which the wire layer leaves to them.
    all_optional: bool,
}

/// The services to generate. Adding a service is one line here and one
/// `pub mod` line in lib.rs.
const SERVICES: &[Service] = &[
    Service {
        module: "sagemaker",
        model: "../cove-wire/models/sagemaker.json",
        all_optional: false,
    },
    Service {
        module: "sts",
        model: "../cove-wire/models/sts.json",
        all_optional: false,
    },
    Service {
        module: "logs",
        model: "../cove-wire/models/logs.json",
        all_optional: false,
    },
    Service {
        module: "ec2",
        model: "../cove-wire/models/ec2.json",
        all_optional: true,
    },
    Service {
        module: "ecr",
        model: "../cove-wire/models/ecr.json",
        all_optional: false,
    },
    Service {
        module: "iam",
        model: "../cove-wire/models/iam.json",
        all_optional: false,
    },
    Service {
        module: "route53",
        model: "../cove-wire/models/route53.json",
        all_optional: false,
    },
    Service {
        module: "cloudformation",
        model: "../cove-wire/models/cloudformation.json",
        all_optional: false,
    },
    Service {
        module: "efs",
        model: "../cove-wire/models/efs.json",
        all_optional: false,
    },
];

/// Names a generated struct may not take: the module's own items and the
/// prelude's types, which a shape of that name would shadow.
const TAKEN: &[&str] = &[
    "Request",
    "Timestamp",
    "BTreeMap",
    "Deserialize",
    "Option",
    "Result",
    "String",
    "Box",
    "Vec",
    "Some",
    "None",
    "Ok",
    "Err",
    "Default",
    "Clone",
    "Debug",
    "PartialEq",
    "Copy",
    "Send",
    "Sync",
    "Sized",
    "Drop",
    "Fn",
    "FnMut",
    "FnOnce",
    "Iterator",
    "ToString",
    "ToOwned",
    "Into",
    "From",
    "Eq",
    "Ord",
    "PartialOrd",
    "AsRef",
    "AsMut",
    "Extend",
];

/// The Rust name of the struct for shape `name`; serde never sees it.
fn type_name(name: &str) -> String {
    if TAKEN.contains(&name) {
        format!("{name}Shape")
    } else {
        name.to_string()
    }
}

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
        // Keywords a raw identifier cannot spell.
        "self" | "super" | "crate" => format!("{out}_"),
        "type" | "match" | "ref" | "struct" | "enum" | "use" | "mod" | "where" | "in" | "for"
        | "loop" | "move" | "static" | "const" | "async" | "await" | "dyn" | "box" | "final"
        | "override" | "yield" | "try" | "return" | "as" | "break" | "continue" | "else"
        | "extern" | "false" | "fn" | "if" | "impl" | "let" | "mut" | "pub" | "trait" | "true"
        | "unsafe" | "while" | "abstract" | "become" | "do" | "macro" | "priv" | "typeof"
        | "unsized" | "virtual" | "gen" => format!("r#{out}"),
        _ => out,
    }
}

fn rust_type(shapes: &Value, name: &str, text_times: bool) -> String {
    let shape = &shapes[name];
    match shape["type"].as_str().unwrap_or_default() {
        "structure" => type_name(name),
        "list" => format!(
            "Vec<{}>",
            rust_type(
                shapes,
                shape["member"]["shape"].as_str().unwrap(),
                text_times
            )
        ),
        "map" => format!(
            "BTreeMap<String, {}>",
            rust_type(
                shapes,
                shape["value"]["shape"].as_str().unwrap(),
                text_times
            )
        ),
        "integer" | "long" => "i64".into(),
        "float" | "double" => "f64".into(),
        "boolean" => "bool".into(),
        "timestamp" if !text_times => "Timestamp".into(),
        _ => "String".into(),
    }
}

/// Whether structure `from` holds structure `target` without a list or map
/// in between: a member of that type in `target` would make `target`
/// infinitely large, so it is boxed. (A `Vec` or `BTreeMap` already puts
/// its items behind a pointer.)
fn holds(shapes: &Value, from: &str, target: &str, seen: &mut BTreeSet<String>) -> bool {
    if from == target {
        return true;
    }
    if shapes[from]["type"] != "structure" || !seen.insert(from.to_string()) {
        return false;
    }
    shapes[from]["members"]
        .as_object()
        .into_iter()
        .flatten()
        .any(|(_, m)| holds(shapes, m["shape"].as_str().unwrap(), target, seen))
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
    for Service {
        module,
        model: path,
        all_optional,
    } in SERVICES
    {
        println!("cargo:rerun-if-changed={path}");
        let model: Value = serde_json::from_str(
            &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}")),
        )
        .unwrap_or_else(|e| panic!("{path}: {e}"));
        let dest = std::path::Path::new(&out_dir).join(format!("{module}.rs"));
        std::fs::write(&dest, generate(&model, *all_optional))
            .expect("writing the generated module");
    }
}

/// One service's module: its input structures and its `Request` enum.
fn generate(model: &Value, all_optional: bool) -> String {
    let service = model["metadata"]["serviceId"]
        .as_str()
        .expect("metadata.serviceId");
    let text_times = matches!(
        model["metadata"]["protocol"].as_str(),
        Some("query" | "ec2")
    );
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
    writeln!(
        out,
        "#[allow(unused_imports)] // why: not every service has a timestamp."
    )
    .unwrap();
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
        writeln!(out, "pub struct {} {{", type_name(name)).unwrap();
        for (member, m) in shape["members"].as_object().into_iter().flatten() {
            let member_shape = m["shape"].as_str().unwrap();
            let mut ty = rust_type(shapes, member_shape, text_times);
            if holds(shapes, member_shape, name, &mut BTreeSet::new()) {
                ty = format!("Box<{ty}>");
            }
            let field = snake(member);
            if required.contains(member.as_str()) && !all_optional {
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
        writeln!(out, "    {op}({}),", type_name(input)).unwrap();
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
            "            \"{op}\" => {}::deserialize(input).map(Request::{op}),",
            type_name(input)
        )
        .unwrap();
    }
    writeln!(out, "            _ => return None,").unwrap();
    writeln!(out, "        }})").unwrap();
    writeln!(out, "    }}").unwrap();
    writeln!(out, "}}").unwrap();
    out
}
