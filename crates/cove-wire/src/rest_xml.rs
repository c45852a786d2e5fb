//! The REST-XML protocol (Route 53): an operation is found by its method
//! and URI template; its input comes from the URI's labels, the query
//! string, headers and an XML body read by the input shape; its answer is
//! an XML document, with the members the model places in headers sent as
//! headers and the model's success status.

use crate::dispatch::{HttpRequest, HttpResponse};
use crate::model::{Kind, ServiceModel, Shape};
use cove_model::{AwsError, AwsResult};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The namespace of a REST-XML service's documents.
pub fn namespace(model: &ServiceModel) -> String {
    model.metadata.xml_namespace.clone().unwrap_or_else(|| {
        format!(
            "https://{}.amazonaws.com/doc/{}/",
            model
                .metadata
                .endpoint_prefix
                .as_deref()
                .unwrap_or_default(),
            model.metadata.api_version
        )
    })
}

fn invalid_input(message: String) -> AwsError {
    AwsError::client("InvalidInput", message)
}

/// One element of an XML body.
#[derive(Debug, Default)]
struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

/// Reads an XML document into its root element.
fn parse(body: &[u8]) -> AwsResult<Element> {
    use quick_xml::events::Event;
    let malformed =
        |e: &dyn std::fmt::Display| invalid_input(format!("Could not parse the XML body: {e}"));
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut buf = Vec::new();
    loop {
        match reader
            .read_event_into(&mut buf)
            .map_err(|e| malformed(&e))?
        {
            Event::Start(e) => stack.push(Element {
                name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                ..Element::default()
            }),
            Event::Empty(e) => {
                let el = Element {
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ..Element::default()
                };
                stack.last_mut().expect("the document").children.push(el);
            }
            Event::End(_) => {
                let done = stack.pop().expect("a start before each end");
                stack
                    .last_mut()
                    .ok_or_else(|| malformed(&"unbalanced elements"))?
                    .children
                    .push(done);
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| malformed(&e))?;
                let text = quick_xml::escape::unescape(&text).map_err(|e| malformed(&e))?;
                stack.last_mut().expect("the document").text.push_str(&text);
            }
            Event::CData(t) => {
                let text = String::from_utf8_lossy(&t.into_inner()).into_owned();
                stack.last_mut().expect("the document").text.push_str(&text);
            }
            Event::GeneralRef(r) => {
                let entity = format!("&{};", String::from_utf8_lossy(&r.into_inner()));
                let text = quick_xml::escape::unescape(&entity).map_err(|e| malformed(&e))?;
                stack.last_mut().expect("the document").text.push_str(&text);
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    let mut document = stack
        .pop()
        .filter(|_| stack.is_empty())
        .ok_or_else(|| malformed(&"unclosed elements"))?;
    document
        .children
        .pop()
        .ok_or_else(|| malformed(&"no root element"))
}

/// An element read as a value of `shape`.
fn value_of(model: &ServiceModel, shape: &Shape, el: &Element) -> AwsResult<Value> {
    match shape.kind {
        Kind::Structure => {
            let mut out = Map::new();
            for child in &el.children {
                let member = shape
                    .members
                    .iter()
                    .find(|(name, m)| m.location_name.as_deref().unwrap_or(name) == child.name);
                if let Some((name, m)) = member {
                    out.insert(name.clone(), value_of(model, model.shape(&m.shape), child)?);
                }
            }
            Ok(Value::Object(out))
        }
        Kind::List => {
            let member = shape.member.as_ref().expect("lists have a member");
            let item = model.shape(&member.shape);
            el.children
                .iter()
                .map(|c| value_of(model, item, c))
                .collect::<AwsResult<Vec<_>>>()
                .map(Value::Array)
        }
        _ => crate::rest::scalar(shape, &el.text, &el.name, invalid_input),
    }
}

/// The operation a request names and its input, keyed by member names.
pub fn decode(
    model: &ServiceModel,
    req: &HttpRequest,
    params: &BTreeMap<String, String>,
) -> AwsResult<(String, Value)> {
    crate::rest::decode(model, req, params, invalid_input, |shape| {
        value_of(model, shape, &parse(&req.body)?)
    })
}

/// A successful answer: the model's status, header members as headers and
/// the rest as `<{Operation}Response>`.
pub fn encode(
    model: &ServiceModel,
    operation: &str,
    output: &Value,
    request_id: &str,
) -> HttpResponse {
    let op = model
        .operation(operation)
        .expect("dispatched operations exist");
    let mut headers: Vec<(&'static str, String)> = vec![
        ("content-type", "text/xml".into()),
        ("x-amzn-requestid", request_id.into()),
    ];
    let mut body = output.clone();
    if let (Some(o), Some(fields)) = (&op.output, body.as_object_mut()) {
        for (name, m) in &model.shape(&o.shape).members {
            if m.location.as_deref() == Some("header") {
                if let Some(v) = fields.remove(name) {
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    // Route 53's only header member is `Location`.
                    if m.location_name.as_deref() == Some("Location") {
                        headers.push(("location", text));
                    }
                }
            }
        }
    }
    let ns = namespace(model);
    let mut out = String::with_capacity(512);
    out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    out.push_str(&format!(r#"<{operation}Response xmlns="{ns}">"#));
    if let Some(o) = &op.output {
        crate::xml::encode_members(model, model.shape(&o.shape), &body, &mut out);
    }
    out.push_str(&format!("</{operation}Response>"));
    HttpResponse {
        status: op.http.response_code.unwrap_or(200),
        headers,
        body: out.into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_whole_segments_and_capture_labels() {
        use crate::rest::match_template;
        let l = match_template(
            "/2013-04-01/hostedzone/{Id}/rrset/",
            "/2013-04-01/hostedzone/Z123/rrset/",
        )
        .unwrap();
        assert_eq!(l["Id"], "Z123");
        assert!(match_template("/2013-04-01/hostedzone/{Id}", "/2013-04-01/hostedzone/").is_none());
        assert!(match_template("/2013-04-01/hostedzone", "/2013-04-01/hostedzone/Z1").is_none());
        assert_eq!(
            match_template("/2013-04-01/change/{Id}", "/2013-04-01/change/C%2F1").unwrap()["Id"],
            "C/1"
        );
    }

    #[test]
    fn a_body_is_read_by_its_shape() {
        let model = crate::model::route53();
        let body = br#"<?xml version="1.0"?><ChangeResourceRecordSetsRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeBatch><Changes><Change><Action>CREATE</Action><ResourceRecordSet><Name>db.corp.internal</Name><Type>A</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>10.2.1.4</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"#;
        let req = HttpRequest {
            method: "POST".into(),
            raw_path: "/2013-04-01/hostedzone/ZABC/rrset/".into(),
            raw_query: String::new(),
            headers: vec![],
            body: body.to_vec(),
            peer: None,
            arrival: None,
        };
        let (op, input) = decode(model, &req, &BTreeMap::new()).unwrap();
        assert_eq!(op, "ChangeResourceRecordSets");
        assert_eq!(input["HostedZoneId"], "ZABC");
        let set = &input["ChangeBatch"]["Changes"][0]["ResourceRecordSet"];
        assert_eq!(set["TTL"], 60);
        assert_eq!(set["ResourceRecords"][0]["Value"], "10.2.1.4");
        let bad = HttpRequest {
            body: b"<ChangeResourceRecordSetsRequest>".to_vec(),
            ..req
        };
        assert_eq!(
            decode(model, &bad, &BTreeMap::new()).unwrap_err().code,
            "InvalidInput"
        );
    }
}
