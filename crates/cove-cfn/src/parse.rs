//! Template text → one JSON value. JSON templates are read as they are;
//! YAML templates go through yaml-rust2's event parser so that the
//! short-form tags (`!Ref`, `!Sub`, `!GetAtt a.b`, …) become the long form
//! (`{"Ref": …}`, `{"Fn::Sub": …}`, `{"Fn::GetAtt": ["a", "b"]}`) that the
//! rest of the engine reads. Anchors and aliases are resolved.

use serde_json::{Map, Value};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Short-form tags and the long-form key each becomes.
const SHORT_FORMS: [(&str, &str); 18] = [
    ("Ref", "Ref"),
    ("Condition", "Condition"),
    ("GetAtt", "Fn::GetAtt"),
    ("Sub", "Fn::Sub"),
    ("Join", "Fn::Join"),
    ("Select", "Fn::Select"),
    ("Split", "Fn::Split"),
    ("If", "Fn::If"),
    ("Equals", "Fn::Equals"),
    ("And", "Fn::And"),
    ("Or", "Fn::Or"),
    ("Not", "Fn::Not"),
    ("FindInMap", "Fn::FindInMap"),
    ("GetAZs", "Fn::GetAZs"),
    ("Base64", "Fn::Base64"),
    ("Cidr", "Fn::Cidr"),
    ("ImportValue", "Fn::ImportValue"),
    ("Transform", "Fn::Transform"),
];

/// Reads a template body, JSON or YAML, as CloudFormation's
/// `ValidateTemplate` would; the error is its `ValidationError` message.
pub fn parse_template(body: &str) -> Result<Value, String> {
    let value = if body.trim_start().starts_with('{') {
        serde_json::from_str::<Value>(body).map_err(|e| {
            format!(
                "Template format error: JSON not well-formed. (line {}, column {})",
                e.line(),
                e.column()
            )
        })?
    } else {
        parse_yaml(body)?
    };
    if !value.is_object() {
        return Err("Template format error: unsupported structure.".into());
    }
    Ok(value)
}

enum Open {
    Sequence(Vec<Value>, Option<Tag>, usize),
    Mapping(Map<String, Value>, Option<String>, Option<Tag>, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Value>,
    root: Option<Value>,
    error: Option<String>,
}

/// A plain scalar's YAML 1.1 type (what CloudFormation's reader assumes).
fn plain_scalar(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(n) = text.parse::<i64>() {
        return Value::from(n);
    }
    if text.contains(['.', 'e', 'E'])
        && text.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
    {
        if let Some(n) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    Value::String(text.to_string())
}

/// The long form of a node carrying a short-form tag.
fn apply_tag(tag: Option<Tag>, value: Value) -> Result<Value, String> {
    let Some(tag) = tag else {
        return Ok(value);
    };
    if tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:" {
        return Ok(match (tag.suffix.as_str(), value) {
            ("str", Value::Null) => Value::String(String::new()),
            ("str", Value::Bool(b)) => Value::String(b.to_string()),
            ("str", Value::Number(n)) => Value::String(n.to_string()),
            (_, v) => v,
        });
    }
    let Some((_, long)) = SHORT_FORMS.iter().find(|(short, _)| *short == tag.suffix) else {
        return Err(format!(
            "Template format error: YAML not well-formed. Unknown tag !{}",
            tag.suffix
        ));
    };
    let value = match (*long, value) {
        // `!GetAtt Resource.Attribute`: the first dot splits the two.
        ("Fn::GetAtt", Value::String(s)) => {
            let (resource, attribute) = s.split_once('.').ok_or_else(|| {
                format!("Template error: every Fn::GetAtt object requires two non-empty parameters: {s}")
            })?;
            Value::Array(vec![resource.into(), attribute.into()])
        }
        (_, v) => v,
    };
    let mut m = Map::new();
    m.insert((*long).to_string(), value);
    Ok(Value::Object(m))
}

impl Builder {
    fn complete(&mut self, value: Value, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Open::Sequence(items, ..)) => items.push(value),
            Some(Open::Mapping(map, key, ..)) => match key.take() {
                None => {
                    let k = match value {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    *key = Some(k);
                }
                Some(k) => {
                    map.insert(k, value);
                }
            },
        }
    }

    /// A finished node, its tag applied.
    fn tagged(&mut self, tag: Option<Tag>, value: Value, anchor: usize, mark: &Marker) {
        match apply_tag(tag, value) {
            Ok(v) => self.complete(v, anchor),
            Err(e) => self.fail(format!(
                "{e} (line {}, column {})",
                mark.line(),
                mark.col() + 1
            )),
        }
    }

    fn fail(&mut self, message: String) {
        if self.error.is_none() {
            self.error = Some(message);
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let value = if style == TScalarStyle::Plain {
                    plain_scalar(&text)
                } else {
                    Value::String(text)
                };
                self.tagged(tag, value, anchor, &mark)
            }
            Event::SequenceStart(anchor, tag) => {
                self.stack.push(Open::Sequence(Vec::new(), tag, anchor))
            }
            Event::MappingStart(anchor, tag) => {
                self.stack
                    .push(Open::Mapping(Map::new(), None, tag, anchor))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, tag, anchor) = match self.stack.pop() {
                    Some(Open::Sequence(items, tag, anchor)) => (Value::Array(items), tag, anchor),
                    Some(Open::Mapping(map, _, tag, anchor)) => (Value::Object(map), tag, anchor),
                    None => return,
                };
                self.tagged(tag, value, anchor, &mark)
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(v) => self.complete(v, 0),
                None => {
                    self.fail("Template format error: YAML not well-formed. Unknown alias".into())
                }
            },
            _ => {}
        }
    }
}

fn parse_yaml(body: &str) -> Result<Value, String> {
    let mut builder = Builder::default();
    Parser::new_from_str(body)
        .load(&mut builder, false)
        .map_err(|e| {
            format!(
                "Template format error: YAML not well-formed. (line {}, column {})",
                e.marker().line(),
                e.marker().col() + 1
            )
        })?;
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder.root.unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_forms_become_long_forms() {
        let t = parse_template(
            r#"
AWSTemplateFormatVersion: "2010-09-09"
Resources:
  Subnet:
    Type: AWS::EC2::Subnet
    Properties:
      VpcId: !Ref Vpc
      CidrBlock: !Select [0, !Cidr [!GetAtt Vpc.CidrBlock, 4, 8]]
      AvailabilityZone: !Select
        - 0
        - !GetAZs ""
      Tags:
        - Key: Name
          Value: !Sub "${AWS::StackName}-private"
    Condition: IsProd
"#,
        )
        .unwrap();
        let p = &t["Resources"]["Subnet"]["Properties"];
        assert_eq!(p["VpcId"], json!({"Ref": "Vpc"}));
        assert_eq!(
            p["CidrBlock"],
            json!({"Fn::Select": [0, {"Fn::Cidr": [{"Fn::GetAtt": ["Vpc", "CidrBlock"]}, 4, 8]}]})
        );
        assert_eq!(
            p["AvailabilityZone"],
            json!({"Fn::Select": [0, {"Fn::GetAZs": ""}]})
        );
        assert_eq!(
            p["Tags"][0]["Value"],
            json!({"Fn::Sub": "${AWS::StackName}-private"})
        );
        assert_eq!(t["AWSTemplateFormatVersion"], json!("2010-09-09"));
    }

    #[test]
    fn plain_scalars_are_typed_and_quoted_ones_are_strings() {
        let t =
            parse_template("A: 10\nB: '10'\nC: true\nD: ~\nE: 1.5\nF: 10.0.0.0/16\nG: !!str 5\n")
                .unwrap();
        assert_eq!(
            t,
            json!({"A": 10, "B": "10", "C": true, "D": null, "E": 1.5, "F": "10.0.0.0/16", "G": "5"})
        );
    }

    #[test]
    fn anchors_and_aliases_are_resolved() {
        let t = parse_template("A: &tags {Key: k, Value: v}\nB: *tags\n").unwrap();
        assert_eq!(t["B"], json!({"Key": "k", "Value": "v"}));
    }

    #[test]
    fn bad_text_gets_cloudformations_message() {
        assert_eq!(
            parse_template("{\"Resources\": ").unwrap_err(),
            "Template format error: JSON not well-formed. (line 1, column 14)"
        );
        assert!(parse_template("A: [1, 2\nB: 3\n")
            .unwrap_err()
            .starts_with("Template format error: YAML not well-formed. (line"));
        assert!(parse_template("A: !Bogus x\n")
            .unwrap_err()
            .contains("Unknown tag !Bogus"));
        assert_eq!(
            parse_template("- a\n").unwrap_err(),
            "Template format error: unsupported structure."
        );
    }

    #[test]
    fn json_templates_are_read_as_they_are() {
        let t = parse_template(r#"{"Resources": {"B": {"Type": "AWS::S3::Bucket"}}}"#).unwrap();
        assert_eq!(t["Resources"]["B"]["Type"], "AWS::S3::Bucket");
    }
}
