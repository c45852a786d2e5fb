//! AWS service models (botocore's JSON, trimmed by `tools/gen-models.py` and
//! embedded): the shapes that drive decoding, validation and encoding.

use regex::Regex;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Structure,
    List,
    Map,
    String,
    Integer,
    Long,
    Boolean,
    Timestamp,
    Blob,
    Double,
    Float,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    pub shape: String,
    #[serde(rename = "locationName")]
    pub location_name: Option<String>,
    #[serde(rename = "queryName")]
    pub query_name: Option<String>,
    #[serde(default)]
    pub flattened: bool,
    pub location: Option<String>,
    #[serde(rename = "idempotencyToken", default)]
    pub idempotency_token: bool,
}

#[derive(Debug, Deserialize)]
pub struct Shape {
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default, deserialize_with = "ordered_members")]
    pub members: Vec<(String, Member)>,
    pub member: Option<Member>,
    pub key: Option<Member>,
    pub value: Option<Member>,
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(rename = "enum")]
    pub enum_values: Option<Vec<String>>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub pattern: Option<String>,
    #[serde(default)]
    pub flattened: bool,
    #[serde(default)]
    pub exception: bool,
    #[serde(skip)]
    compiled_pattern: OnceLock<Option<Regex>>,
}

/// Reads a shape's `members` object keeping the model's order, which is the
/// order AWS serialises members in.
fn ordered_members<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, Member)>, D::Error> {
    struct Ordered;
    impl<'de> serde::de::Visitor<'de> for Ordered {
        type Value = Vec<(String, Member)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of members")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, Member>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Ordered)
}

impl Shape {
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|(n, _)| n == name).map(|(_, m)| m)
    }
    /// The shape's pattern as a whole-string regex. AWS patterns are Java
    /// regexes; the few Rust cannot compile are not enforced.
    pub fn pattern_regex(&self) -> Option<&Regex> {
        self.compiled_pattern
            .get_or_init(|| {
                let p = self.pattern.as_ref()?;
                Regex::new(&format!("^(?:{p})$")).ok()
            })
            .as_ref()
    }
}

#[derive(Debug, Deserialize)]
pub struct ShapeRef {
    pub shape: String,
    #[serde(rename = "resultWrapper")]
    pub result_wrapper: Option<String>,
    /// REST-XML: the request body's root element.
    #[serde(rename = "locationName")]
    pub location_name: Option<String>,
}

/// Where a REST operation lives: its method, URI template
/// (`/2013-04-01/hostedzone/{Id}`) and success status.
#[derive(Debug, Default, Deserialize)]
pub struct Http {
    #[serde(default)]
    pub method: String,
    #[serde(rename = "requestUri", default)]
    pub request_uri: String,
    #[serde(rename = "responseCode")]
    pub response_code: Option<u16>,
}

#[derive(Debug, Deserialize)]
pub struct Operation {
    pub name: String,
    #[serde(default)]
    pub http: Http,
    pub input: Option<ShapeRef>,
    pub output: Option<ShapeRef>,
}

#[derive(Debug, Deserialize)]
pub struct Metadata {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub protocol: String,
    #[serde(rename = "xmlNamespace")]
    pub xml_namespace: Option<String>,
    #[serde(rename = "targetPrefix")]
    pub target_prefix: Option<String>,
    #[serde(rename = "endpointPrefix")]
    pub endpoint_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ServiceModel {
    pub metadata: Metadata,
    // Shapes are looked up several times per member of every request and
    // response; FxHash is several times cheaper than SipHash for these keys,
    // which come from the embedded models, not from clients.
    pub operations: FxHashMap<String, Operation>,
    pub shapes: FxHashMap<String, Shape>,
}

impl ServiceModel {
    pub fn from_json(json: &str) -> ServiceModel {
        serde_json::from_str(json).expect("embedded service models are valid")
    }
    pub fn shape(&self, name: &str) -> &Shape {
        self.shapes
            .get(name)
            .unwrap_or_else(|| panic!("shape {name} missing from the model"))
    }
    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations.get(name)
    }
}

macro_rules! embedded_model {
    ($fn:ident, $file:literal) => {
        pub fn $fn() -> &'static ServiceModel {
            static MODEL: OnceLock<ServiceModel> = OnceLock::new();
            MODEL
                .get_or_init(|| ServiceModel::from_json(include_str!(concat!("../models/", $file))))
        }
    };
}

embedded_model!(ec2, "ec2.json");
embedded_model!(sts, "sts.json");
embedded_model!(logs, "logs.json");
embedded_model!(ecr, "ecr.json");
embedded_model!(iam, "iam.json");
embedded_model!(sagemaker, "sagemaker.json");
embedded_model!(sagemaker_runtime, "sagemaker-runtime.json");
embedded_model!(route53, "route53.json");
embedded_model!(efs, "efs.json");
embedded_model!(cloudformation, "cloudformation.json");

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_models_load() {
        let ec2 = super::ec2();
        assert_eq!(ec2.metadata.protocol, "ec2");
        let req = ec2.shape("CreateSubnetRequest");
        assert!(req.required.contains(&"VpcId".to_string()));
        assert_eq!(
            req.member("DryRun").unwrap().location_name.as_deref(),
            Some("dryRun")
        );
        assert_eq!(super::sts().metadata.protocol, "query");
    }
}
