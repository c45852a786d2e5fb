//! The REST-JSON protocol (EFS): operations found by method and URI
//! template as in REST-XML, a JSON body keyed by member names, answers as a
//! JSON document of the output's body members with the model's status, and
//! errors as `{"ErrorCode", "Message"}` with the code in `x-amzn-ErrorType`.

use crate::dispatch::{HttpRequest, HttpResponse};
use crate::model::ServiceModel;
use cove_model::{AwsError, AwsResult};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

fn bad_request(message: String) -> AwsError {
    AwsError::client("BadRequest", message)
}

/// The operation a request names and its input, keyed by member names.
pub fn decode(
    model: &ServiceModel,
    req: &HttpRequest,
    params: &BTreeMap<String, String>,
) -> AwsResult<(String, Value)> {
    crate::rest::decode(model, req, params, bad_request, |shape| {
        let body: Value = serde_json::from_slice(&req.body).map_err(|e| {
            AwsError::client(
                "SerializationException",
                format!("Could not parse the request body: {e}"),
            )
        })?;
        crate::json::type_check(model, shape, &body, "")
            .map_err(|m| AwsError::client("SerializationException", m))?;
        Ok(body)
    })
}

/// A successful answer: the output's body members as JSON (timestamps as
/// epoch seconds), header members as headers, the model's status. A 204
/// answer has no body.
pub fn encode(
    model: &ServiceModel,
    operation: &str,
    output: &Value,
    request_id: &str,
) -> HttpResponse {
    let op = model
        .operation(operation)
        .expect("dispatched operations exist");
    let status = op.http.response_code.unwrap_or(200);
    let mut headers: Vec<(&'static str, String)> = vec![("x-amzn-requestid", request_id.into())];
    let mut body = Map::new();
    if let Some(o) = &op.output {
        let shape = model.shape(&o.shape);
        if let Value::Object(encoded) = crate::json::encode_output(model, shape, output) {
            for (name, v) in encoded {
                let located = shape
                    .member(&name)
                    .and_then(|m| m.location.as_deref())
                    .is_some();
                if !located {
                    body.insert(name, v);
                }
            }
        }
    }
    if status == 204 {
        return HttpResponse {
            status,
            headers,
            body: vec![],
        };
    }
    headers.push(("content-type", "application/json".into()));
    HttpResponse {
        status,
        headers,
        body: serde_json::to_vec(&Value::Object(body)).expect("JSON values serialize"),
    }
}

/// An error as REST-JSON services send it.
pub fn encode_error(e: &AwsError, request_id: &str) -> HttpResponse {
    let body = serde_json::json!({"ErrorCode": e.code, "Message": e.message, "message": e.message});
    HttpResponse {
        status: e.status,
        headers: vec![
            ("content-type", "application/json".into()),
            ("x-amzn-errortype", e.code.clone()),
            ("x-amzn-requestid", request_id.into()),
        ],
        body: serde_json::to_vec(&body).expect("JSON values serialize"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, query: &str, body: &[u8]) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            raw_path: path.into(),
            raw_query: query.into(),
            headers: vec![],
            body: body.to_vec(),
            peer: None,
            arrival: None,
        }
    }

    #[test]
    fn labels_query_lists_and_body_make_the_input() {
        let model = crate::model::efs();
        let req = request(
            "DELETE",
            "/2015-02-01/resource-tags/fs-0123",
            "tagKeys=a&tagKeys=b%20c",
            b"",
        );
        let (op, input) = decode(model, &req, &BTreeMap::new()).unwrap();
        assert_eq!(op, "UntagResource");
        assert_eq!(input["ResourceId"], "fs-0123");
        assert_eq!(input["TagKeys"], serde_json::json!(["a", "b c"]));

        let req = request(
            "POST",
            "/2015-02-01/file-systems",
            "",
            br#"{"CreationToken":"t1","Encrypted":true}"#,
        );
        let (op, input) = decode(model, &req, &BTreeMap::new()).unwrap();
        assert_eq!(op, "CreateFileSystem");
        assert_eq!(input["Encrypted"], true);

        let mistyped = request(
            "POST",
            "/2015-02-01/file-systems",
            "",
            br#"{"Encrypted":"yes"}"#,
        );
        assert_eq!(
            decode(model, &mistyped, &BTreeMap::new()).unwrap_err().code,
            "SerializationException"
        );
    }

    #[test]
    fn a_fixed_path_wins_over_a_label() {
        let model = crate::model::efs();
        let params = BTreeMap::from([("MaxItems".to_string(), "5".to_string())]);
        let req = request("GET", "/2015-02-01/file-systems", "MaxItems=5", b"");
        let (op, input) = decode(model, &req, &params).unwrap();
        assert_eq!(op, "DescribeFileSystems");
        assert_eq!(input["MaxItems"], 5);
        let req = request("GET", "/2015-02-01/tags/fs-1/", "", b"");
        assert_eq!(decode(model, &req, &params).unwrap().0, "DescribeTags");
    }

    #[test]
    fn answers_drop_null_members_and_204_has_no_body() {
        let model = crate::model::efs();
        let r = encode(model, "DeleteFileSystem", &serde_json::json!({}), "rid");
        assert_eq!((r.status, r.body.len()), (204, 0));
        let r = encode(
            model,
            "DescribeFileSystemPolicy",
            &serde_json::json!({"FileSystemId": "fs-1", "Policy": null}),
            "rid",
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            serde_json::from_slice::<Value>(&r.body).unwrap(),
            serde_json::json!({"FileSystemId": "fs-1"})
        );
    }
}
