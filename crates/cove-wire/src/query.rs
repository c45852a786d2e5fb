//! Decoding of the EC2 and query protocols' form parameters
//! (`Filter.1.Name=vpc-id&Filter.1.Value.1=vpc-1`) into a JSON value shaped by
//! the operation's input shape, keyed by the API's member names.

use crate::model::{Kind, Member, ServiceModel, Shape};
use base64::Engine;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Which naming rules apply: EC2 flattens every list and capitalises
/// `locationName`; the query protocol wraps lists in `.member.N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Ec2,
    Query,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A value that cannot be read as its shape's type.
    BadValue {
        param: String,
        value: String,
        expected: &'static str,
    },
    /// Parameters no member of the input claims.
    Unknown(Vec<String>),
}

/// Parses an `application/x-www-form-urlencoded` body or query string.
pub fn parse_form(raw: &[u8]) -> BTreeMap<String, String> {
    form_urlencoded::parse(raw).into_owned().collect()
}

/// The first value of `name` in a URL's query string, decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn wire_name(dialect: Dialect, name: &str, m: &Member) -> String {
    match dialect {
        Dialect::Ec2 => m
            .query_name
            .clone()
            .or_else(|| m.location_name.as_deref().map(capitalize))
            .unwrap_or_else(|| name.to_string()),
        Dialect::Query => m.location_name.clone().unwrap_or_else(|| name.to_string()),
    }
}

struct Decoder<'a> {
    model: &'a ServiceModel,
    params: &'a BTreeMap<String, String>,
    dialect: Dialect,
    used: Vec<&'a str>,
}

/// Decodes `params` for an input shape. `ignore` lists parameters that belong
/// to the envelope (`Action`, `Version`, presigned-auth fields).
pub fn decode(
    model: &ServiceModel,
    shape_name: &str,
    params: &BTreeMap<String, String>,
    dialect: Dialect,
    ignore: &[&str],
) -> Result<Value, DecodeError> {
    let mut d = Decoder {
        model,
        params,
        dialect,
        used: Vec::new(),
    };
    let value = d
        .structure(model.shape(shape_name), "")?
        .unwrap_or_else(|| Value::Object(Map::new()));
    let mut unknown: Vec<String> = params
        .keys()
        .filter(|k| {
            !ignore.contains(&k.as_str())
                && !k.starts_with("X-Amz-")
                && !d.used.contains(&k.as_str())
        })
        .cloned()
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(DecodeError::Unknown(unknown));
    }
    Ok(value)
}

impl<'a> Decoder<'a> {
    fn has_prefix(&self, prefix: &str) -> bool {
        let dotted = format!("{prefix}.");
        self.params
            .range(dotted.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&dotted))
    }

    fn value(&mut self, shape: &Shape, key: &str) -> Result<Option<Value>, DecodeError> {
        match shape.kind {
            Kind::Structure => self.structure(shape, key),
            Kind::List => self.list(shape, key),
            Kind::Map => self.map(shape, key),
            _ => self.scalar(shape, key),
        }
    }

    fn structure(&mut self, shape: &Shape, prefix: &str) -> Result<Option<Value>, DecodeError> {
        if !prefix.is_empty() && !self.has_prefix(prefix) {
            return Ok(None);
        }
        let mut obj = Map::new();
        for (name, m) in &shape.members {
            let wire = wire_name(self.dialect, name, m);
            let key = if prefix.is_empty() {
                wire
            } else {
                format!("{prefix}.{wire}")
            };
            if let Some(v) = self.value(self.model.shape(&m.shape), &key)? {
                obj.insert(name.clone(), v);
            }
        }
        Ok(Some(Value::Object(obj)))
    }

    fn indices(&self, prefix: &str) -> Vec<u32> {
        let dotted = format!("{prefix}.");
        let mut idx: Vec<u32> = self
            .params
            .range(dotted.clone()..)
            .take_while(|(k, _)| k.starts_with(&dotted))
            .filter_map(|(k, _)| k[dotted.len()..].split('.').next()?.parse().ok())
            .collect();
        idx.sort_unstable();
        idx.dedup();
        idx
    }

    fn list(&mut self, shape: &Shape, key: &str) -> Result<Option<Value>, DecodeError> {
        let member = shape.member.as_ref().expect("lists have a member");
        let base = match self.dialect {
            Dialect::Ec2 => key.to_string(),
            Dialect::Query if shape.flattened => key.to_string(),
            Dialect::Query => format!(
                "{key}.{}",
                member.location_name.as_deref().unwrap_or("member")
            ),
        };
        // The query protocol sends an empty list as the bare key with no value.
        if let Some(v) = self.params.get_key_value(key) {
            if v.1.is_empty() && self.dialect == Dialect::Query {
                self.used.push(v.0.as_str());
                return Ok(Some(Value::Array(vec![])));
            }
        }
        let item_shape = self.model.shape(&member.shape);
        let mut items = Vec::new();
        for i in self.indices(&base) {
            if let Some(v) = self.value(item_shape, &format!("{base}.{i}"))? {
                items.push(v);
            }
        }
        Ok(if items.is_empty() {
            None
        } else {
            Some(Value::Array(items))
        })
    }

    fn map(&mut self, shape: &Shape, key: &str) -> Result<Option<Value>, DecodeError> {
        let base = if shape.flattened {
            key.to_string()
        } else {
            format!("{key}.entry")
        };
        let (Some(k), Some(v)) = (&shape.key, &shape.value) else {
            return Ok(None);
        };
        let (kname, vname) = (
            k.location_name.clone().unwrap_or_else(|| "key".into()),
            v.location_name.clone().unwrap_or_else(|| "value".into()),
        );
        let mut obj = Map::new();
        for i in self.indices(&base) {
            let kv = self.scalar(self.model.shape(&k.shape), &format!("{base}.{i}.{kname}"))?;
            let vv = self.value(self.model.shape(&v.shape), &format!("{base}.{i}.{vname}"))?;
            if let (Some(Value::String(k)), Some(v)) = (kv, vv) {
                obj.insert(k, v);
            }
        }
        Ok(if obj.is_empty() {
            None
        } else {
            Some(Value::Object(obj))
        })
    }

    fn scalar(&mut self, shape: &Shape, key: &str) -> Result<Option<Value>, DecodeError> {
        let Some((k, raw)) = self.params.get_key_value(key) else {
            return Ok(None);
        };
        self.used.push(k.as_str());
        let bad = |expected| DecodeError::BadValue {
            param: key.to_string(),
            value: raw.clone(),
            expected,
        };
        let v = match shape.kind {
            Kind::String | Kind::Timestamp => Value::String(raw.clone()),
            Kind::Integer | Kind::Long => {
                Value::from(raw.trim().parse::<i64>().map_err(|_| bad("Integer"))?)
            }
            Kind::Double | Kind::Float => {
                let n: f64 = raw.trim().parse().map_err(|_| bad("Double"))?;
                serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .ok_or_else(|| bad("Double"))?
            }
            Kind::Boolean => match raw.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(bad("Boolean")),
            },
            Kind::Blob => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(raw.trim())
                    .map_err(|_| bad("Blob"))?;
                Value::String(String::from_utf8_lossy(&bytes).into_owned())
            }
            Kind::Structure | Kind::List | Kind::Map => {
                unreachable!("scalar called on an aggregate")
            }
        };
        Ok(Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_ec2_filters_lists_and_scalars() {
        let model = crate::model::ec2();
        let params = parse_form(
            b"Action=DescribeVpcs&Version=2016-11-15&Filter.1.Name=cidr&Filter.1.Value.1=10.0.0.0%2F16&Filter.1.Value.2=x\
              &Filter.10.Name=state&Filter.10.Value.1=available&VpcId.1=vpc-1&MaxResults=5&DryRun=false",
        );
        let v = decode(
            model,
            "DescribeVpcsRequest",
            &params,
            Dialect::Ec2,
            &["Action", "Version"],
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"DryRun": false, "Filters": [
                {"Name": "cidr", "Values": ["10.0.0.0/16", "x"]},
                {"Name": "state", "Values": ["available"]}],
                "MaxResults": 5, "VpcIds": ["vpc-1"]})
        );
    }

    #[test]
    fn reports_bad_and_unknown_parameters() {
        let model = crate::model::ec2();
        let params = parse_form(b"MaxResults=lots");
        let err = decode(model, "DescribeVpcsRequest", &params, Dialect::Ec2, &[]).unwrap_err();
        assert!(matches!(err, DecodeError::BadValue { ref param, .. } if param == "MaxResults"));
        let params = parse_form(b"Colour=blue&VpcId.1=vpc-1");
        let err = decode(model, "DescribeVpcsRequest", &params, Dialect::Ec2, &[]).unwrap_err();
        assert_eq!(err, DecodeError::Unknown(vec!["Colour".into()]));
    }

    #[test]
    fn decodes_query_protocol_member_lists() {
        let model = crate::model::ServiceModel::from_json(
            r#"{"metadata":{"apiVersion":"1","protocol":"query"},"operations":{},"shapes":{
            "Req":{"type":"structure","members":{"Name":{"shape":"S"},"Tags":{"shape":"TagList"},"Flat":{"shape":"Flat"}}},
            "TagList":{"type":"list","member":{"shape":"Tag"}},
            "Flat":{"type":"list","member":{"shape":"S"},"flattened":true},
            "Tag":{"type":"structure","members":{"Key":{"shape":"S"},"Value":{"shape":"S"}}},
            "S":{"type":"string"}}}"#,
        );
        let params = parse_form(b"Name=s&Tags.member.1.Key=k&Tags.member.1.Value=v&Tags.member.2.Key=k2&Flat.1=a&Flat.2=b");
        let v = decode(&model, "Req", &params, Dialect::Query, &[]).unwrap();
        assert_eq!(
            v["Tags"],
            json!([{"Key": "k", "Value": "v"}, {"Key": "k2"}])
        );
        assert_eq!(v["Flat"], json!(["a", "b"]));
        assert_eq!(v["Name"], json!("s"));
        let empty = decode(&model, "Req", &parse_form(b"Tags="), Dialect::Query, &[]).unwrap();
        assert_eq!(empty["Tags"], json!([]));
    }
}
