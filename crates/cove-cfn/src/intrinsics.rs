//! Conditions and intrinsic functions, evaluated as CloudFormation does
//! when it creates or updates a stack: `Ref`, `Fn::GetAtt`, `Fn::Sub`,
//! `Fn::Join`, `Fn::Select`, `Fn::Split`, `Fn::If`, `Fn::Equals`, `Fn::And`,
//! `Fn::Or`, `Fn::Not`, `Fn::FindInMap`, `Fn::GetAZs`, `Fn::Base64`,
//! `Fn::Cidr` and `Fn::ImportValue`, with `AWS::NoValue` removing the
//! property it stands for. What lies outside the template (resources'
//! physical ids and attributes, exports, zones) comes through [`Lookups`].

use base64::Engine;
use cove_model::cidr::Cidr;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// What a stack knows beyond its template.
pub trait Lookups {
    /// What `Ref` of a created resource answers (its physical id).
    fn reference(&self, logical_id: &str) -> Option<Value>;
    /// A created resource's attribute, or why it has none.
    fn attribute(&self, logical_id: &str, attribute: &str) -> Result<Value, String>;
    /// An export of another stack in the region.
    fn export(&self, name: &str) -> Option<Value>;
    /// The region's availability zones.
    fn availability_zones(&self, region: &str) -> Vec<String>;
}

/// The template-side inputs of an evaluation.
pub struct Context<'a> {
    /// Parameters' values and the pseudo parameters (`AWS::Region`, …).
    pub parameters: &'a BTreeMap<String, Value>,
    /// The template's `Mappings` section (or null).
    pub mappings: &'a Value,
    /// Every condition's value (see [`conditions`]).
    pub conditions: &'a BTreeMap<String, bool>,
    pub region: &'a str,
    pub lookups: &'a dyn Lookups,
}

fn err<T>(message: impl Into<String>) -> Result<T, String> {
    Err(message.into())
}

/// The single key of an intrinsic function object.
fn function(v: &Value) -> Option<(&str, &Value)> {
    let m = v.as_object()?;
    if m.len() != 1 {
        return None;
    }
    let (k, arg) = m.iter().next()?;
    (k == "Ref" || k == "Condition" || k.starts_with("Fn::")).then_some((k.as_str(), arg))
}

/// A value as the string functions see it.
pub fn text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => err(format!("Template error: expected a string, got {other}")),
    }
}

/// Evaluates `v`; `None` is `AWS::NoValue` (the property is left out).
pub fn evaluate(v: &Value, cx: &Context) -> Result<Option<Value>, String> {
    if let Some((name, arg)) = function(v) {
        if name == "Condition" {
            // Inside a value, `{"Condition": x}` is a plain property (a
            // resource's `Condition` key is read by the deployer).
            let name = arg.as_str().unwrap_or_default();
            return condition(cx, name).map(|b| Some(Value::Bool(b)));
        }
        return call(name, arg, cx);
    }
    Ok(Some(match v {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if let Some(x) = evaluate(item, cx)? {
                    out.push(x);
                }
            }
            Value::Array(out)
        }
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, item) in m {
                if let Some(x) = evaluate(item, cx)? {
                    out.insert(k.clone(), x);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }))
}

/// Evaluates an argument that must not be `AWS::NoValue`.
fn value(v: &Value, cx: &Context) -> Result<Value, String> {
    Ok(evaluate(v, cx)?.unwrap_or(Value::Null))
}

fn condition(cx: &Context, name: &str) -> Result<bool, String> {
    cx.conditions.get(name).copied().ok_or_else(|| {
        format!("Template format error: Unresolved condition dependency {name} in Fn::If")
    })
}

fn args<'v>(name: &str, arg: &'v Value, n: usize) -> Result<&'v [Value], String> {
    match arg.as_array() {
        Some(a) if a.len() == n => Ok(a),
        _ => err(format!("Template error: {name} requires {n} arguments")),
    }
}

fn reference(name: &str, cx: &Context) -> Result<Option<Value>, String> {
    if name == "AWS::NoValue" {
        return Ok(None);
    }
    if let Some(p) = cx.parameters.get(name) {
        return Ok(Some(p.clone()));
    }
    match cx.lookups.reference(name) {
        Some(v) => Ok(Some(v)),
        None => err(format!(
            "Template format error: Unresolved resource dependencies [{name}] in the Resources block of the template"
        )),
    }
}

fn call(name: &str, arg: &Value, cx: &Context) -> Result<Option<Value>, String> {
    let v = match name {
        "Ref" => return reference(&text(arg)?, cx),
        "Fn::GetAtt" => {
            let a =
                match arg {
                    Value::String(s) => {
                        let (r, at) = s.split_once('.').ok_or(
                        "Template error: every Fn::GetAtt object requires two non-empty parameters",
                    )?;
                        vec![Value::from(r), Value::from(at)]
                    }
                    Value::Array(a) if a.len() == 2 => a.clone(),
                    _ => return err(
                        "Template error: every Fn::GetAtt object requires two non-empty parameters",
                    ),
                };
            let resource = text(&a[0])?;
            let attribute = text(&value(&a[1], cx)?)?;
            cx.lookups.attribute(&resource, &attribute)?
        }
        "Fn::Sub" => Value::String(sub(arg, cx)?),
        "Fn::Join" => {
            let a = args(name, arg, 2).map_err(|_| "Template error: every Fn::Join object requires two parameters, (1) a string delimiter and (2) a list of strings to be joined or a function that returns a list of strings (such as Fn::GetAZs) to be joined.".to_string())?;
            let delimiter = text(&a[0])?;
            let items = value(&a[1], cx)?;
            let items = items
                .as_array()
                .ok_or("Template error: Fn::Join requires a list of strings to join")?;
            let parts: Result<Vec<String>, String> = items.iter().map(text).collect();
            Value::String(parts?.join(&delimiter))
        }
        "Fn::Select" => {
            let a = args(name, arg, 2)?;
            let index = value(&a[0], cx)?;
            let index: usize = text(&index)?.parse().map_err(|_| {
                "Template error: Fn::Select requires a list index as a number".to_string()
            })?;
            let list = value(&a[1], cx)?;
            let list = list
                .as_array()
                .ok_or("Template error: Fn::Select requires a list argument")?;
            list.get(index).cloned().ok_or_else(|| {
                format!(
                    "Template error: Fn::Select cannot select nonexistent value at index {index}"
                )
            })?
        }
        "Fn::Split" => {
            let a = args(name, arg, 2)?;
            let delimiter = text(&a[0])?;
            let source = text(&value(&a[1], cx)?)?;
            if delimiter.is_empty() {
                return err("Template error: Fn::Split requires a non-empty delimiter");
            }
            Value::Array(source.split(delimiter.as_str()).map(Value::from).collect())
        }
        "Fn::If" => {
            let a = args(name, arg, 3)?;
            let chosen = if condition(cx, &text(&a[0])?)? {
                &a[1]
            } else {
                &a[2]
            };
            return evaluate(chosen, cx);
        }
        "Fn::Equals" | "Fn::And" | "Fn::Or" | "Fn::Not" => Value::Bool(truth(name, arg, cx)?),
        "Fn::FindInMap" => {
            let a = args(name, arg, 3)?;
            let keys: Vec<String> = a
                .iter()
                .map(|k| value(k, cx).and_then(|v| text(&v)))
                .collect::<Result<_, _>>()?;
            cx.mappings
                .get(&keys[0])
                .and_then(|m| m.get(&keys[1]))
                .and_then(|m| m.get(&keys[2]))
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "Template error: Unable to get mapping for {}::{}::{}",
                        keys[0], keys[1], keys[2]
                    )
                })?
        }
        "Fn::GetAZs" => {
            let region = text(&value(arg, cx)?)?;
            let region = if region.is_empty() {
                cx.region
            } else {
                region.as_str()
            };
            Value::Array(
                cx.lookups
                    .availability_zones(region)
                    .into_iter()
                    .map(Value::from)
                    .collect(),
            )
        }
        "Fn::Base64" => {
            let s = text(&value(arg, cx)?)?;
            Value::String(base64::engine::general_purpose::STANDARD.encode(s))
        }
        "Fn::Cidr" => {
            let a = args(name, arg, 3)?;
            let block = text(&value(&a[0], cx)?)?;
            let count = text(&value(&a[1], cx)?)?;
            let bits = text(&value(&a[2], cx)?)?;
            Value::Array(
                cidr(&block, &count, &bits)?
                    .into_iter()
                    .map(Value::from)
                    .collect(),
            )
        }
        "Fn::ImportValue" => {
            let export = text(&value(arg, cx)?)?;
            cx.lookups
                .export(&export)
                .ok_or_else(|| format!("No export named {export} found."))?
        }
        other => {
            return err(format!(
                "Template format error: Unrecognized intrinsic function {other}"
            ))
        }
    };
    Ok(Some(v))
}

/// The condition functions' value.
fn truth(name: &str, arg: &Value, cx: &Context) -> Result<bool, String> {
    let operand = |v: &Value| -> Result<bool, String> {
        match function(v) {
            Some(("Condition", c)) => condition(cx, &text(c)?),
            Some((f @ ("Fn::Equals" | "Fn::And" | "Fn::Or" | "Fn::Not"), a)) => truth(f, a, cx),
            _ => match value(v, cx)? {
                Value::Bool(b) => Ok(b),
                other => err(format!(
                    "Template error: {name} requires conditions, got {other}"
                )),
            },
        }
    };
    match name {
        "Fn::Equals" => {
            let a = args(name, arg, 2)?;
            Ok(text(&value(&a[0], cx)?)? == text(&value(&a[1], cx)?)?)
        }
        "Fn::Not" => operand(&args(name, arg, 1)?[0]).map(|b| !b),
        _ => {
            let list = arg
                .as_array()
                .filter(|a| (2..=10).contains(&a.len()))
                .ok_or_else(|| {
                    format!("Template error: {name} requires a list of between 2 and 10 conditions")
                })?;
            let mut all = Vec::with_capacity(list.len());
            for c in list {
                all.push(operand(c)?);
            }
            Ok(if name == "Fn::And" {
                all.iter().all(|b| *b)
            } else {
                all.iter().any(|b| *b)
            })
        }
    }
}

/// `Fn::Sub`: `${Name}` (parameter, pseudo parameter or resource),
/// `${Resource.Attribute}`, `${!Literal}`; in the list form, variables first.
fn sub(arg: &Value, cx: &Context) -> Result<String, String> {
    let (template, vars) = match arg {
        Value::String(s) => (s.clone(), Map::new()),
        Value::Array(a) if a.len() == 2 => {
            let vars = match value(&a[1], cx)? {
                Value::Object(m) => m,
                _ => {
                    return err(
                        "Template error: Fn::Sub's second argument must be a map of variables",
                    )
                }
            };
            (text(&a[0])?, vars)
        }
        _ => {
            return err(
                "Template error: Fn::Sub requires a string or a string and a map of variables",
            )
        }
    };
    let mut out = String::with_capacity(template.len());
    let mut rest = template.as_str();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        if let Some(literal) = name.strip_prefix('!') {
            out.push_str("${");
            out.push_str(literal);
            out.push('}');
        } else if let Some(v) = vars.get(name) {
            out.push_str(&text(v)?);
        } else if let Some((resource, attribute)) =
            name.split_once('.').filter(|_| !name.contains("::"))
        {
            out.push_str(&text(&cx.lookups.attribute(resource, attribute)?)?);
        } else {
            let v = reference(name, cx)?.unwrap_or(Value::String(String::new()));
            out.push_str(&text(&v)?);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `Fn::Cidr`: `count` blocks of `2^bits` addresses from the start of `block`.
pub fn cidr(block: &str, count: &str, bits: &str) -> Result<Vec<String>, String> {
    let bad = || {
        format!("Template error: Fn::Cidr cannot divide {block} into {count} blocks of {bits} bits")
    };
    let (addr, prefix) = block.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let block = Cidr::new(addr, prefix).ok_or_else(bad)?;
    let count: u32 = count.parse().map_err(|_| bad())?;
    let bits: u8 = bits.parse().map_err(|_| bad())?;
    if !(1..=256).contains(&count) || bits == 0 || bits > 32 - prefix {
        return Err(bad());
    }
    let size = 1u64 << bits;
    if u64::from(count) * size > block.size() {
        return Err(bad());
    }
    Ok((0..u64::from(count))
        .map(|i| {
            let base = u64::from(block.base) + i * size;
            let base = u32::try_from(base).unwrap_or(u32::MAX);
            format!("{}/{}", Ipv4Addr::from(base), 32 - bits)
        })
        .collect())
}

/// Every condition of the template's `Conditions` section, in terms of the
/// parameters (a condition may name another; a cycle is an error).
pub fn conditions(template: &Value, cx: &Context) -> Result<BTreeMap<String, bool>, String> {
    let Some(section) = template.get("Conditions").and_then(Value::as_object) else {
        return Ok(BTreeMap::new());
    };
    let mut done: BTreeMap<String, bool> = BTreeMap::new();
    fn visit(
        name: &str,
        section: &Map<String, Value>,
        done: &mut BTreeMap<String, bool>,
        visiting: &mut BTreeSet<String>,
        cx: &Context,
    ) -> Result<bool, String> {
        if let Some(b) = done.get(name) {
            return Ok(*b);
        }
        let body = section.get(name).ok_or_else(|| {
            format!("Template format error: Unresolved condition dependency {name}")
        })?;
        if !visiting.insert(name.to_string()) {
            return err(format!(
                "Template error: circular condition dependency involving {name}"
            ));
        }
        // The conditions it names first, then itself with those known.
        let mut named = BTreeSet::new();
        collect_conditions(body, &mut named);
        for n in &named {
            visit(n, section, done, visiting, cx)?;
        }
        let known = Context {
            conditions: done,
            ..*cx
        };
        let (f, arg) = function(body)
            .filter(|(f, _)| {
                matches!(
                    *f,
                    "Fn::Equals" | "Fn::And" | "Fn::Or" | "Fn::Not" | "Condition"
                )
            })
            .ok_or_else(|| {
                format!("Template format error: Condition {name} must be a condition function")
            })?;
        let b = if f == "Condition" {
            condition(&known, &text(arg)?)?
        } else {
            truth(f, arg, &known)?
        };
        visiting.remove(name);
        done.insert(name.to_string(), b);
        Ok(b)
    }
    let mut visiting = BTreeSet::new();
    for name in section.keys() {
        visit(name, section, &mut done, &mut visiting, cx)?;
    }
    Ok(done)
}

fn collect_conditions(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let (1, Some(Value::String(c))) = (m.len(), m.get("Condition")) {
                out.insert(c.clone());
            }
            m.values().for_each(|x| collect_conditions(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_conditions(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Created;
    impl Lookups for Created {
        fn reference(&self, id: &str) -> Option<Value> {
            (id == "Vpc").then(|| json!("vpc-0123456789abcdef0"))
        }
        fn attribute(&self, id: &str, attribute: &str) -> Result<Value, String> {
            match (id, attribute) {
                ("Vpc", "CidrBlock") => Ok(json!("10.0.0.0/16")),
                _ => Err(format!("Template error: resource {id} does not support attribute type {attribute} in Fn::GetAtt")),
            }
        }
        fn export(&self, name: &str) -> Option<Value> {
            (name == "shared-vpc").then(|| json!("vpc-0aaaabbbbccccdddd"))
        }
        fn availability_zones(&self, region: &str) -> Vec<String> {
            ["a", "b", "c"]
                .iter()
                .map(|z| format!("{region}{z}"))
                .collect()
        }
    }

    fn eval_with(v: Value, conditions: &BTreeMap<String, bool>) -> Result<Option<Value>, String> {
        let parameters: BTreeMap<String, Value> = [
            ("Env".to_string(), json!("prod")),
            ("AWS::Region".to_string(), json!("us-east-1")),
            ("AWS::StackName".to_string(), json!("ml-net")),
        ]
        .into();
        let mappings = json!({"Sizes": {"prod": {"Cidr": "10.1.0.0/16"}}});
        let cx = Context {
            parameters: &parameters,
            mappings: &mappings,
            conditions,
            region: "us-east-1",
            lookups: &Created,
        };
        evaluate(&v, &cx)
    }

    fn eval(v: Value) -> Result<Option<Value>, String> {
        eval_with(v, &[("IsProd".to_string(), true)].into())
    }

    #[test]
    fn ref_and_getatt() {
        assert_eq!(eval(json!({"Ref": "Env"})).unwrap(), Some(json!("prod")));
        assert_eq!(
            eval(json!({"Ref": "Vpc"})).unwrap(),
            Some(json!("vpc-0123456789abcdef0"))
        );
        assert_eq!(
            eval(json!({"Fn::GetAtt": ["Vpc", "CidrBlock"]})).unwrap(),
            Some(json!("10.0.0.0/16"))
        );
        assert_eq!(
            eval(json!({"Fn::GetAtt": "Vpc.CidrBlock"})).unwrap(),
            Some(json!("10.0.0.0/16"))
        );
        assert_eq!(
            eval(json!({"Ref": "Nope"})).unwrap_err(),
            "Template format error: Unresolved resource dependencies [Nope] in the Resources block of the template"
        );
        assert!(eval(json!({"Fn::GetAtt": ["Vpc", "Bogus"]}))
            .unwrap_err()
            .contains("does not support attribute type Bogus"));
    }

    #[test]
    fn no_value_removes_the_property() {
        let v = eval(json!({"A": {"Ref": "AWS::NoValue"}, "B": [1, {"Fn::If": ["IsProd", {"Ref": "AWS::NoValue"}, 2]}]})).unwrap();
        assert_eq!(v, Some(json!({"B": [1]})));
    }

    #[test]
    fn sub_in_both_forms() {
        assert_eq!(
            eval(
                json!({"Fn::Sub": "${AWS::StackName}-${Env}-${Vpc}-${Vpc.CidrBlock}-${!Literal}"})
            )
            .unwrap(),
            Some(json!(
                "ml-net-prod-vpc-0123456789abcdef0-10.0.0.0/16-${Literal}"
            ))
        );
        assert_eq!(
            eval(json!({"Fn::Sub": ["arn:aws:s3:::${Bucket}/*", {"Bucket": {"Fn::Join": ["-", ["data", {"Ref": "Env"}]]}}]})).unwrap(),
            Some(json!("arn:aws:s3:::data-prod/*"))
        );
    }

    #[test]
    fn lists_and_strings() {
        assert_eq!(
            eval(json!({"Fn::Join": [",", ["a", 1, true]]})).unwrap(),
            Some(json!("a,1,true"))
        );
        assert_eq!(
            eval(json!({"Fn::Split": [",", "a,b,,c"]})).unwrap(),
            Some(json!(["a", "b", "", "c"]))
        );
        assert_eq!(
            eval(json!({"Fn::Select": ["1", {"Fn::GetAZs": ""}]})).unwrap(),
            Some(json!("us-east-1b"))
        );
        assert_eq!(
            eval(json!({"Fn::Select": [5, ["a"]]})).unwrap_err(),
            "Template error: Fn::Select cannot select nonexistent value at index 5"
        );
        assert_eq!(
            eval(json!({"Fn::Base64": "#!/bin/sh"})).unwrap(),
            Some(json!("IyEvYmluL3No"))
        );
        assert_eq!(
            eval(json!({"Fn::FindInMap": ["Sizes", {"Ref": "Env"}, "Cidr"]})).unwrap(),
            Some(json!("10.1.0.0/16"))
        );
        assert_eq!(
            eval(json!({"Fn::FindInMap": ["Sizes", "dev", "Cidr"]})).unwrap_err(),
            "Template error: Unable to get mapping for Sizes::dev::Cidr"
        );
        assert_eq!(
            eval(json!({"Fn::ImportValue": "shared-vpc"})).unwrap(),
            Some(json!("vpc-0aaaabbbbccccdddd"))
        );
        assert_eq!(
            eval(json!({"Fn::ImportValue": "other"})).unwrap_err(),
            "No export named other found."
        );
        assert!(eval(json!({"Fn::Join": [","]}))
            .unwrap_err()
            .starts_with("Template error: every Fn::Join object requires two parameters"));
    }

    #[test]
    fn cidr_divides_a_block() {
        assert_eq!(
            eval(json!({"Fn::Cidr": [{"Fn::GetAtt": ["Vpc", "CidrBlock"]}, 3, 8]})).unwrap(),
            Some(json!(["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]))
        );
        assert_eq!(
            cidr("10.0.0.0/24", "2", "5").unwrap(),
            ["10.0.0.0/27", "10.0.0.32/27"]
        );
        assert!(
            cidr("10.0.0.0/24", "9", "5").is_err(),
            "256 addresses hold 8 blocks of 32"
        );
        assert!(cidr("10.0.0.0/24", "1", "9").is_err());
    }

    #[test]
    fn conditions_follow_parameters_and_each_other() {
        let template = json!({"Conditions": {
            "IsProd": {"Fn::Equals": [{"Ref": "Env"}, "prod"]},
            "IsDev": {"Fn::Not": [{"Condition": "IsProd"}]},
            "Either": {"Fn::Or": [{"Condition": "IsDev"}, {"Condition": "IsProd"}]},
            "Both": {"Fn::And": [{"Condition": "IsDev"}, {"Condition": "IsProd"}]}
        }});
        let parameters: BTreeMap<String, Value> = [("Env".to_string(), json!("prod"))].into();
        let none = BTreeMap::new();
        let cx = Context {
            parameters: &parameters,
            mappings: &Value::Null,
            conditions: &none,
            region: "us-east-1",
            lookups: &Created,
        };
        let c = conditions(&template, &cx).unwrap();
        assert_eq!(
            c,
            [
                ("Both".to_string(), false),
                ("Either".into(), true),
                ("IsDev".into(), false),
                ("IsProd".into(), true)
            ]
            .into()
        );
        assert_eq!(
            eval_with(json!({"Fn::If": ["IsDev", "small", "large"]}), &c).unwrap(),
            Some(json!("large"))
        );
        let cyclic = json!({"Conditions": {"A": {"Fn::Not": [{"Condition": "B"}]}, "B": {"Fn::Not": [{"Condition": "A"}]}}});
        assert!(conditions(&cyclic, &cx)
            .unwrap_err()
            .contains("circular condition dependency"));
        assert!(eval_with(json!({"Fn::If": ["Missing", 1, 2]}), &c)
            .unwrap_err()
            .contains("Unresolved condition dependency Missing"));
    }
}
