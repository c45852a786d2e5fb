//! XML encoding of responses for the EC2 and query protocols, driven by the
//! output shape: element names come from `locationName`, lists are wrapped in
//! `<item>`/`<member>` unless flattened, exactly as botocore parses them.

use crate::model::{Kind, Member, ServiceModel, Shape};
use crate::query::Dialect;
use serde_json::Value;

pub fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#13;"),
            // What XML 1.0 cannot carry at all becomes U+FFFD, so every
            // answer stays well-formed whatever was stored or echoed.
            c if !writable_char(c) => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// Whether XML 1.0 can carry `c` (its `Char` production).
fn writable_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Whether XML 1.0 can carry every character of `s`.
pub fn writable(s: &str) -> bool {
    s.chars().all(writable_char)
}

fn element_name<'a>(name: &'a str, m: &'a Member) -> &'a str {
    m.location_name.as_deref().unwrap_or(name)
}

pub(crate) fn encode_members(model: &ServiceModel, shape: &Shape, value: &Value, out: &mut String) {
    let Some(obj) = value.as_object() else { return };
    for (name, m) in &shape.members {
        if let Some(v) = obj.get(name) {
            if !v.is_null() {
                encode_value(
                    model,
                    model.shape(&m.shape),
                    element_name(name, m),
                    m.flattened,
                    v,
                    out,
                );
            }
        }
    }
}

fn encode_value(
    model: &ServiceModel,
    shape: &Shape,
    tag: &str,
    flattened: bool,
    value: &Value,
    out: &mut String,
) {
    match shape.kind {
        Kind::Structure => {
            out.push('<');
            out.push_str(tag);
            out.push('>');
            encode_members(model, shape, value, out);
            out.push_str("</");
            out.push_str(tag);
            out.push('>');
        }
        Kind::List => {
            let Some(items) = value.as_array() else {
                return;
            };
            let member = shape.member.as_ref().expect("lists have a member");
            let item_shape = model.shape(&member.shape);
            if flattened || shape.flattened {
                for item in items {
                    encode_value(model, item_shape, tag, false, item, out);
                }
            } else {
                let item_tag = member.location_name.as_deref().unwrap_or("member");
                out.push('<');
                out.push_str(tag);
                out.push('>');
                for item in items {
                    encode_value(model, item_shape, item_tag, false, item, out);
                }
                out.push_str("</");
                out.push_str(tag);
                out.push('>');
            }
        }
        Kind::Map => {
            let Some(obj) = value.as_object() else { return };
            let (Some(k), Some(v)) = (&shape.key, &shape.value) else {
                return;
            };
            out.push('<');
            out.push_str(tag);
            out.push('>');
            for (key, val) in obj {
                out.push_str("<entry>");
                encode_value(
                    model,
                    model.shape(&k.shape),
                    k.location_name.as_deref().unwrap_or("key"),
                    false,
                    &Value::String(key.clone()),
                    out,
                );
                encode_value(
                    model,
                    model.shape(&v.shape),
                    v.location_name.as_deref().unwrap_or("value"),
                    false,
                    val,
                    out,
                );
                out.push_str("</entry>");
            }
            out.push_str("</");
            out.push_str(tag);
            out.push('>');
        }
        _ => {
            out.push('<');
            out.push_str(tag);
            out.push('>');
            match value {
                Value::String(s) => escape(s, out),
                Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                other => out.push_str(&other.to_string()),
            }
            out.push_str("</");
            out.push_str(tag);
            out.push('>');
        }
    }
}

/// A whole successful response document for `operation`.
pub fn encode_response(
    model: &ServiceModel,
    dialect: Dialect,
    operation: &str,
    output: &Value,
    request_id: &str,
) -> String {
    let op = model
        .operation(operation)
        .expect("dispatched operations exist");
    let ns = model.metadata.xml_namespace.clone().unwrap_or_default();
    let ns = if ns.ends_with('/') {
        ns
    } else {
        format!("{ns}/")
    };
    let mut out = String::with_capacity(512);
    out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    out.push_str(&format!(r#"<{operation}Response xmlns="{ns}">"#));
    match dialect {
        Dialect::Ec2 => {
            out.push_str("<requestId>");
            out.push_str(request_id);
            out.push_str("</requestId>");
            if let Some(o) = &op.output {
                encode_members(model, model.shape(&o.shape), output, &mut out);
            }
        }
        Dialect::Query => {
            if let Some(o) = &op.output {
                let wrapper = o
                    .result_wrapper
                    .clone()
                    .unwrap_or_else(|| format!("{operation}Result"));
                out.push_str(&format!("<{wrapper}>"));
                encode_members(model, model.shape(&o.shape), output, &mut out);
                out.push_str(&format!("</{wrapper}>"));
            }
            out.push_str(&format!(
                "<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
            ));
        }
    }
    out.push_str(&format!("</{operation}Response>"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_xml_cannot_carry_is_replaced_and_carriage_returns_survive() {
        let mut out = String::new();
        escape("a\u{1}b\r\n\tc\u{FFFE}<", &mut out);
        assert_eq!(out, "a\u{FFFD}b&#13;\n\tc\u{FFFD}&lt;");
        assert!(writable("tab\tand\nlines\r"));
        assert!(!writable("bell\u{7}"));
    }

    #[test]
    fn ec2_lists_are_wrapped_in_items() {
        let model = crate::model::ec2();
        let out = json!({"Vpcs": [{"VpcId": "vpc-1", "CidrBlock": "10.0.0.0/16", "IsDefault": false,
                         "Tags": [{"Key": "a<b", "Value": "c"}]}]});
        let xml = encode_response(model, Dialect::Ec2, "DescribeVpcs", &out, "req-1");
        assert!(
            xml.contains("<requestId>req-1</requestId><vpcSet><item>"),
            "{xml}"
        );
        assert!(xml.contains("<vpcId>vpc-1</vpcId>"), "{xml}");
        assert!(xml.contains("<isDefault>false</isDefault>"), "{xml}");
        assert!(
            xml.contains("<tagSet><item><key>a&lt;b</key><value>c</value></item></tagSet>"),
            "{xml}"
        );
    }

    #[test]
    fn query_responses_have_result_wrapper_and_metadata() {
        let model = crate::model::sts();
        let out = json!({"Account": "123456789012", "Arn": "arn:aws:iam::123456789012:root", "UserId": "AKID"});
        let xml = encode_response(model, Dialect::Query, "GetCallerIdentity", &out, "r");
        assert!(
            xml.contains(
                "<GetCallerIdentityResult><UserId>AKID</UserId><Account>123456789012</Account>"
            ),
            "{xml}"
        );
        assert!(xml.ends_with("<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></GetCallerIdentityResponse>"));
    }
}
