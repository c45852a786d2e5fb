//! The request pipeline, independent of the HTTP server: authenticate,
//! route by credential scope, decode, validate, call the service, render.

use crate::model::ServiceModel;
use crate::query::{self, DecodeError, Dialect};
use crate::validate::{self, Violation};
use crate::{json, sigv4, xml};
use cove_model::{AwsError, AwsResult};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// EC2's query dialect with EC2 XML (`<Response><Errors>`).
    Ec2,
    /// The classic query protocol (STS, IAM): `<ErrorResponse>`, `.member.N` lists.
    Query,
    /// awsJson 1.1 (SageMaker, CloudWatch Logs).
    Json,
    /// REST-XML (Route 53): operations by method and URI, XML bodies.
    RestXml,
    /// REST-JSON (EFS): operations by method and URI, JSON bodies.
    RestJson,
}

/// Who signed a request: a configured key pair or temporary STS credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
    pub account_id: String,
    pub arn: String,
    pub user_id: String,
}

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub region: String,
    pub operation: String,
    pub principal: Principal,
    pub source_ip: Option<IpAddr>,
    /// Set when the request came through a VPC endpoint (`aws:SourceVpce`, `aws:SourceVpc`).
    pub via_endpoint: Option<Arrival>,
    /// The AWS service making this call for its caller (`cloudformation`
    /// for a stack's resources): it may set the tags of its reserved
    /// `aws:<service>:` namespace, which callers may not.
    pub on_behalf_of: Option<&'static str>,
}

/// Where a request came in when it did not come from the public listener: an
/// interface endpoint serves one service only and tells the service which
/// endpoint and VPC the caller used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// The API the listener serves, by endpoint prefix (`ec2`,
    /// `runtime.sagemaker`…); requests signed for another service are refused.
    pub only_service: Option<&'static str>,
    pub vpc_endpoint_id: Option<String>,
    pub vpc_id: Option<String>,
}

impl RequestContext {
    pub fn account_id(&self) -> &str {
        &self.principal.account_id
    }

    /// A context for a call Cove makes itself (not from the wire), as
    /// `arn` of `account` in `region`: for internal callers and tests.
    pub fn internal(
        operation: &str,
        region: &str,
        account: &str,
        arn: &str,
        access_key: &str,
    ) -> RequestContext {
        RequestContext {
            request_id: format!("internal-{operation}"),
            region: region.into(),
            operation: operation.into(),
            principal: Principal {
                access_key: access_key.into(),
                secret_key: String::new(),
                session_token: None,
                account_id: account.into(),
                arn: arn.into(),
                user_id: account.into(),
            },
            source_ip: None,
            via_endpoint: None,
            on_behalf_of: None,
        }
    }
}

/// One AWS service Cove serves.
pub trait Service: Send + Sync {
    /// The SigV4 signing name that routes to it (`ec2`, `sts`, `sagemaker`…).
    fn signing_name(&self) -> &'static str;
    fn protocol(&self) -> Protocol;
    fn model(&self) -> &'static ServiceModel;
    /// Handles a decoded, validated input (keyed by the API's member names).
    fn handle(&self, ctx: &RequestContext, input: Value) -> AwsResult<Value>;
    /// The code a JSON service answers input that breaks its model's
    /// constraints with (CloudWatch Logs says `InvalidParameterException`).
    fn validation_error_code(&self) -> &'static str {
        "ValidationException"
    }
}

pub struct HttpRequest {
    pub method: String,
    pub raw_path: String,
    pub raw_query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: Option<IpAddr>,
    pub arrival: Option<Arrival>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// What an answered call was, as far as it got: the service (its signing
/// name), the operation, the caller's account and the AWS error code (if
/// it failed). Empty strings where the request never got that far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Call {
    pub service: String,
    pub operation: String,
    pub account: Option<String>,
    pub code: Option<String>,
}

/// A call refused at some step, to be rendered in its service's protocol
/// (with its model, once the call was decoded).
struct Refusal {
    protocol: Protocol,
    error: AwsError,
    model: Option<&'static ServiceModel>,
}

/// Looks up the principal for an access key id.
pub type CredentialLookup = Arc<dyn Fn(&str) -> Option<Principal> + Send + Sync>;

/// Decides, before a service runs an authenticated and decoded call, whether
/// the caller may make it (identity policies); an error is the answer.
pub type Authorizer =
    Arc<dyn Fn(&RequestContext, &'static str, &Value) -> Result<(), AwsError> + Send + Sync>;

pub struct Dispatcher {
    services: HashMap<&'static str, Arc<dyn Service>>,
    credentials: CredentialLookup,
    authorizer: Option<Authorizer>,
    /// Brings this process up to what other processes committed (an API
    /// replica's store); see [`Dispatcher::set_catch_up`].
    catch_up: Option<Arc<dyn Fn() + Send + Sync>>,
    /// How far a request's `X-Amz-Date` may be from the server's clock.
    pub max_clock_skew: time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthFault {
    Missing,
    Malformed,
    UnknownKey,
    BadSignature,
    Expired,
    /// A credential scope naming a region AWS does not have.
    UnknownRegion,
}

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// Whether an operation only reads (AWS names them so).
fn is_read(operation: &str) -> bool {
    ["Describe", "Get", "List"]
        .iter()
        .any(|verb| operation.starts_with(verb))
}

/// Whether an error says the thing asked about does not exist, in any of
/// the services' words (`InvalidVpcID.NotFound`, `ResourceNotFound`,
/// IAM's `NoSuchEntity`, SageMaker's "Could not find …" and "Requested
/// resource not found").
fn is_not_found(e: &AwsError) -> bool {
    e.status < 500
        && (e.code.contains("NotFound")
            || e.code.starts_with("NoSuch")
            || e.message.contains("not found")
            || e.message.contains("Could not find")
            || e.message.contains("does not exist"))
}

/// AWS's standard mismatch message, unless there is a more precise reason.
fn mismatch(detail: &str) -> String {
    if detail.is_empty() {
        SIGNATURE_MISMATCH.to_string()
    } else {
        detail.to_string()
    }
}

fn auth_error(protocol: Protocol, fault: AuthFault, detail: &str) -> AwsError {
    use AuthFault::*;
    let invalid_token = "The security token included in the request is invalid.";
    match (protocol, fault) {
        (Protocol::Ec2, Missing) => AwsError::new(
            401,
            "MissingParameter",
            "The request must contain the parameter AWSAccessKeyId",
        ),
        (Protocol::Ec2, Malformed) => AwsError::new(
            401,
            "AuthFailure",
            format!("Malformed authorization: {detail}"),
        ),
        (Protocol::Ec2, UnknownKey) => AwsError::new(
            401,
            "AuthFailure",
            "AWS was not able to validate the provided access credentials",
        ),
        (Protocol::Ec2, BadSignature) => {
            AwsError::new(403, "SignatureDoesNotMatch", mismatch(detail))
        }
        (Protocol::Ec2, Expired) => AwsError::new(400, "RequestExpired", "Request has expired."),
        (Protocol::Ec2, UnknownRegion) => AwsError::new(401, "AuthFailure", detail.to_string()),
        (Protocol::Query | Protocol::RestXml, Missing) => AwsError::new(
            403,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        ),
        (Protocol::Query | Protocol::RestXml, Malformed) => {
            AwsError::new(400, "IncompleteSignature", detail.to_string())
        }
        (Protocol::Query | Protocol::RestXml, UnknownKey) => {
            AwsError::new(403, "InvalidClientTokenId", invalid_token)
        }
        (Protocol::Query | Protocol::RestXml, BadSignature) => {
            AwsError::new(403, "SignatureDoesNotMatch", mismatch(detail))
        }
        (Protocol::Query | Protocol::RestXml, Expired | UnknownRegion) => {
            AwsError::new(403, "SignatureDoesNotMatch", detail.to_string())
        }
        (Protocol::Json, Missing) => AwsError::new(
            400,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ),
        (Protocol::Json, Malformed) => {
            AwsError::new(400, "IncompleteSignatureException", detail.to_string())
        }
        (Protocol::Json, UnknownKey) => {
            AwsError::new(400, "UnrecognizedClientException", invalid_token)
        }
        (Protocol::Json, BadSignature) => {
            AwsError::new(400, "InvalidSignatureException", mismatch(detail))
        }
        (Protocol::Json, Expired | UnknownRegion) => {
            AwsError::new(400, "InvalidSignatureException", detail.to_string())
        }
        // REST-JSON services name the faults as awsJson does, with 403.
        (Protocol::RestJson, fault) => AwsError {
            status: 403,
            ..auth_error(Protocol::Json, fault, detail)
        },
    }
}

use crate::sigv4::AMZ_DATE;

/// SigV4's longest presigned URL: seven days.
const MAX_PRESIGNED_SECONDS: i64 = 604_800;

fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    time::PrimitiveDateTime::parse(s, AMZ_DATE)
        .ok()
        .map(|t| t.assume_utc())
}

/// The signature parameters, from the `Authorization` header or a presigned query.
fn authorization_of(
    req: &HttpRequest,
    params: &BTreeMap<String, String>,
) -> Result<(sigv4::Authorization, String), (AuthFault, String)> {
    if let Some(h) = req.header("authorization") {
        let auth = sigv4::parse_authorization(h)
            .ok_or((AuthFault::Malformed, format!("Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' with algorithm {}", sigv4::ALGORITHM)))?;
        let date = req.header("x-amz-date").map(str::to_string).ok_or((
            AuthFault::Malformed,
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                .into(),
        ))?;
        return Ok((auth, date));
    }
    if params.get("X-Amz-Algorithm").map(String::as_str) == Some(sigv4::ALGORITHM) {
        let header = format!(
            "{} Credential={}, SignedHeaders={}, Signature={}",
            sigv4::ALGORITHM,
            params.get("X-Amz-Credential").cloned().unwrap_or_default(),
            params
                .get("X-Amz-SignedHeaders")
                .cloned()
                .unwrap_or_default(),
            params.get("X-Amz-Signature").cloned().unwrap_or_default()
        );
        let auth = sigv4::parse_authorization(&header)
            .ok_or((AuthFault::Malformed, "Malformed presigned query".into()))?;
        let date = params
            .get("X-Amz-Date")
            .cloned()
            .ok_or((AuthFault::Malformed, "Missing X-Amz-Date".into()))?;
        return Ok((auth, date));
    }
    Err((AuthFault::Missing, String::new()))
}

impl Dispatcher {
    pub fn new(credentials: CredentialLookup) -> Dispatcher {
        Dispatcher {
            services: HashMap::new(),
            credentials,
            authorizer: None,
            catch_up: None,
            max_clock_skew: time::Duration::minutes(15),
        }
    }

    pub fn register(&mut self, service: Arc<dyn Service>) {
        self.services.insert(service.signing_name(), service);
    }

    /// Every call then passes `authorizer` (given the service's signing
    /// name and the decoded input) before its service runs it.
    pub fn set_authorizer(&mut self, authorizer: Authorizer) {
        self.authorizer = Some(authorizer);
    }

    /// For a server that shares its state with other processes: a read
    /// that finds nothing is answered again after `catch_up` has applied
    /// what the others committed, so a resource another replica just
    /// created (and acknowledged) is found. Reads never wait for the
    /// database otherwise; writes always decide on its newest state.
    pub fn set_catch_up(&mut self, catch_up: Arc<dyn Fn() + Send + Sync>) {
        self.catch_up = Some(catch_up);
    }

    /// The protocol to answer in before the service is known (for auth errors).
    fn guess_protocol(&self, req: &HttpRequest, params: &BTreeMap<String, String>) -> Protocol {
        if req.header("x-amz-target").is_some() {
            return Protocol::Json;
        }
        if req.raw_path.starts_with("/2013-04-01/") {
            return Protocol::RestXml;
        }
        if req.raw_path.starts_with("/2015-02-01/") {
            return Protocol::RestJson;
        }
        match params.get("Action") {
            Some(a)
                if crate::model::sts().operation(a).is_some()
                    || crate::model::iam().operation(a).is_some() =>
            {
                Protocol::Query
            }
            _ => Protocol::Ec2,
        }
    }

    pub fn handle(&self, req: HttpRequest) -> HttpResponse {
        self.handle_recorded(req).0
    }

    /// [`Dispatcher::handle`], also saying what the call was: for the
    /// server's request log and metrics.
    pub fn handle_recorded(&self, req: HttpRequest) -> (HttpResponse, Call) {
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut call = Call::default();
        let response = match self.answer(req, &request_id, &mut call) {
            Ok(response) => response,
            Err(Refusal {
                protocol,
                error,
                model,
            }) => {
                call.code = Some(error.code.clone());
                render_error(protocol, &error, &request_id, model)
            }
        };
        (response, call)
    }

    /// Authenticates, decodes, authorizes and runs one call; a refusal at
    /// any step is rendered (and its code recorded) by the caller.
    fn answer(
        &self,
        req: HttpRequest,
        request_id: &str,
        call: &mut Call,
    ) -> Result<HttpResponse, Refusal> {
        let mut params = query::parse_form(req.raw_query.as_bytes());
        let is_form = req
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            params.extend(query::parse_form(&req.body));
        }
        let guessed = self.guess_protocol(&req, &params);
        let (service, principal, region) =
            self.authenticate(&req, &params)
                .map_err(|(fault, detail, protocol)| {
                    let protocol = protocol.unwrap_or(guessed);
                    Refusal {
                        protocol,
                        error: auth_error(protocol, fault, &detail),
                        model: None,
                    }
                })?;
        call.service = service.signing_name().to_string();
        call.account = Some(principal.account_id.clone());
        let protocol = service.protocol();
        let model = service.model();
        let undecoded = |error| Refusal {
            protocol,
            error,
            model: None,
        };
        let decoded = |error| Refusal {
            protocol,
            error,
            model: Some(model),
        };
        refuse_unwritable_xml(protocol, &params).map_err(undecoded)?;
        let (operation, input) = decode_request(
            protocol,
            model,
            service.validation_error_code(),
            &req,
            &params,
        )
        .map_err(undecoded)?;
        call.operation = operation.clone();
        let ctx = RequestContext {
            request_id: request_id.to_string(),
            region,
            operation: operation.clone(),
            principal,
            source_ip: req.peer,
            via_endpoint: req.arrival.clone().filter(|a| a.vpc_endpoint_id.is_some()),
            on_behalf_of: None,
        };
        if let Some(authorize) = &self.authorizer {
            authorize(&ctx, service.signing_name(), &input).map_err(decoded)?;
        }
        // Kept for a second answer (reads are small; writes are not kept).
        let retry = (self.catch_up.is_some() && is_read(&operation)).then(|| input.clone());
        let mut output = service.handle(&ctx, input);
        if let (Err(e), Some(catch_up), Some(input)) = (&output, &self.catch_up, retry) {
            if is_not_found(e) {
                catch_up();
                output = service.handle(&ctx, input);
            }
        }
        let output = output.map_err(|e| {
            if e.status >= 500 {
                tracing::error!(operation, code = %e.code, message = %e.message, "service error");
            }
            decoded(e)
        })?;
        Ok(render_success(
            protocol, model, &operation, &output, request_id,
        ))
    }

    /// Checks a request's SigV4 signature exactly as [`Dispatcher::handle`]
    /// does, for a front that serves its API itself (SageMaker Runtime's
    /// REST-JSON `InvokeEndpoint`). Returns the caller and the signed region,
    /// or the error response (JSON, which REST-JSON clients read alike).
    pub fn authenticate_request(
        &self,
        req: &HttpRequest,
    ) -> Result<(Principal, String), HttpResponse> {
        let params = query::parse_form(req.raw_query.as_bytes());
        match self.authenticate(req, &params) {
            Ok((_, principal, region)) => Ok((principal, region)),
            Err((fault, detail, _)) => {
                let request_id = uuid::Uuid::new_v4().to_string();
                Err(render_error(
                    Protocol::Json,
                    &auth_error(Protocol::Json, fault, &detail),
                    &request_id,
                    None,
                ))
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn authenticate(
        &self,
        req: &HttpRequest,
        params: &BTreeMap<String, String>,
    ) -> Result<(Arc<dyn Service>, Principal, String), (AuthFault, String, Option<Protocol>)> {
        let (auth, amz_date) = authorization_of(req, params).map_err(|(f, d)| (f, d, None))?;
        let service = self
            .services
            .get(auth.service.as_str())
            .cloned()
            .ok_or_else(|| {
                (
                    AuthFault::Malformed,
                    format!(
                        "Credential should be scoped to a valid service: '{}' is not served here.",
                        auth.service
                    ),
                    None,
                )
            })?;
        let protocol = Some(service.protocol());
        if let Some(api) = req.arrival.as_ref().and_then(|a| a.only_service) {
            let only = cove_model::services::signing_name_of(api);
            if only != auth.service {
                // What AWS answers when a request signed for one service reaches another's endpoint.
                return Err((
                    AuthFault::BadSignature,
                    format!("Credential should be scoped to correct service: '{only}'. "),
                    protocol,
                ));
            }
        }
        let principal = (self.credentials)(&auth.access_key).ok_or((
            AuthFault::UnknownKey,
            String::new(),
            protocol,
        ))?;
        if let Some(token) = &principal.session_token {
            let sent = req
                .header("x-amz-security-token")
                .or(params.get("X-Amz-Security-Token").map(String::as_str));
            if sent != Some(token.as_str()) {
                return Err((AuthFault::UnknownKey, String::new(), protocol));
            }
        }
        let when = parse_amz_date(&amz_date).ok_or((
            AuthFault::Malformed,
            format!("Invalid X-Amz-Date '{amz_date}'"),
            protocol,
        ))?;
        if !amz_date.starts_with(&auth.date) {
            return Err((AuthFault::BadSignature, String::new(), protocol));
        }
        let now = OffsetDateTime::now_utc();
        let presigned = req.header("authorization").is_none();
        if presigned {
            // A presigned URL is good from its date (give or take the clock
            // skew) until `X-Amz-Expires` seconds later, at most a week.
            let expires = params
                .get("X-Amz-Expires")
                .and_then(|e| e.parse::<i64>().ok())
                .filter(|e| (1..=MAX_PRESIGNED_SECONDS).contains(e))
                .ok_or((
                    AuthFault::Malformed,
                    format!("X-Amz-Expires must be a number of seconds from 1 to {MAX_PRESIGNED_SECONDS}"),
                    protocol,
                ))?;
            if now > when + time::Duration::seconds(expires) || when - now > self.max_clock_skew {
                return Err((AuthFault::Expired, "Request has expired".into(), protocol));
            }
        } else if (now - when).abs() > self.max_clock_skew {
            let fmt = |t: OffsetDateTime| t.format(AMZ_DATE).unwrap_or_default();
            let detail = format!(
                "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
                fmt(now - self.max_clock_skew),
                fmt(now)
            );
            return Err((AuthFault::Expired, detail, protocol));
        }
        // The body's own hash, never the declared `x-amz-content-sha256`:
        // a body swapped under a signed header then fails the signature.
        // Only S3's presigned URLs sign no payload.
        let payload_hash = if presigned && auth.service == "s3" {
            "UNSIGNED-PAYLOAD".to_string()
        } else {
            sigv4::sha256_hex(&req.body)
        };
        let parts = sigv4::RequestParts {
            method: &req.method,
            raw_path: &req.raw_path,
            raw_query: &req.raw_query,
            headers: &req.headers,
            payload_hash: &payload_hash,
        };
        let canonical = sigv4::canonical_request(&parts, &auth.service, &auth.signed_headers);
        let expected = sigv4::signature(&principal.secret_key, &amz_date, &auth, &canonical);
        if !sigv4::signatures_equal(&expected, &auth.signature) {
            tracing::debug!(canonical, "signature mismatch");
            return Err((AuthFault::BadSignature, String::new(), protocol));
        }
        if !cove_model::region::is_known_region(&auth.region) {
            return Err((
                AuthFault::UnknownRegion,
                format!(
                    "Credential should be scoped to a valid region, not '{}'. ",
                    auth.region
                ),
                protocol,
            ));
        }
        Ok((service, principal, auth.region))
    }
}

/// XML-speaking APIs take no parameter that XML 1.0 cannot carry (control
/// characters other than tab, line feed and carriage return): stored, it
/// would make every later answer that shows it malformed.
fn refuse_unwritable_xml(protocol: Protocol, params: &BTreeMap<String, String>) -> AwsResult<()> {
    if !matches!(protocol, Protocol::Ec2 | Protocol::Query) {
        return Ok(());
    }
    let Some((name, _)) = params
        .iter()
        .find(|(k, v)| !crate::xml::writable(k) || !crate::xml::writable(v))
    else {
        return Ok(());
    };
    let code = if protocol == Protocol::Ec2 {
        "InvalidParameterValue"
    } else {
        "ValidationError"
    };
    Err(AwsError::client(
        code,
        format!("The value of {name} contains a control character, which is not allowed."),
    ))
}

fn decode_request(
    protocol: Protocol,
    model: &'static ServiceModel,
    validation_error_code: &'static str,
    req: &HttpRequest,
    params: &BTreeMap<String, String>,
) -> AwsResult<(String, Value)> {
    match protocol {
        Protocol::Ec2 | Protocol::Query => {
            let action = params
                .get("Action")
                .filter(|a| !a.is_empty())
                .ok_or_else(|| AwsError::missing_parameter("Action"))?;
            let op = model.operation(action).ok_or_else(|| {
                AwsError::client(
                    "InvalidAction",
                    format!("The action {action} is not valid for this web service."),
                )
            })?;
            let dialect = if protocol == Protocol::Ec2 {
                Dialect::Ec2
            } else {
                Dialect::Query
            };
            let input = match &op.input {
                Some(shape) => {
                    let ignore = ["Action", "Version", "AWSAccessKeyId"];
                    let v = query::decode(model, &shape.shape, params, dialect, &ignore).map_err(
                        |e| match e {
                            DecodeError::BadValue {
                                param,
                                value,
                                expected,
                            } => AwsError::invalid_parameter_value(format!(
                                "Invalid value '{value}' for {param}. Expected: {expected}."
                            )),
                            DecodeError::Unknown(names) => AwsError::client(
                                "UnknownParameter",
                                format!("The parameter {} is not recognized", names[0]),
                            ),
                        },
                    )?;
                    let violations = validate::validate(model, &shape.shape, &v);
                    if let Some(first) = violations.first() {
                        return Err(query_violation(protocol, first, &violations));
                    }
                    v
                }
                None => Value::Object(Default::default()),
            };
            Ok((action.clone(), input))
        }
        Protocol::RestXml | Protocol::RestJson => {
            let (operation, input) = if protocol == Protocol::RestXml {
                crate::rest_xml::decode(model, req, params)?
            } else {
                crate::rest_json::decode(model, req, params)?
            };
            if let Some(shape) = model.operation(&operation).and_then(|o| o.input.as_ref()) {
                let violations = validate::validate(model, &shape.shape, &input);
                if !violations.is_empty() {
                    return Err(AwsError::client(
                        validation_error_code,
                        validate::coral_message(&violations),
                    ));
                }
            }
            Ok((operation, input))
        }
        Protocol::Json => {
            let target = req.header("x-amz-target").unwrap_or_default();
            let prefix = model.metadata.target_prefix.as_deref().unwrap_or_default();
            let op_name = target
                .strip_prefix(prefix)
                .and_then(|t| t.strip_prefix('.'))
                .unwrap_or_default();
            let op = model.operation(op_name).ok_or_else(|| {
                AwsError::client(
                    "UnknownOperationException",
                    format!("Unknown operation {target}"),
                )
            })?;
            let body = if req.body.is_empty() {
                b"{}".as_slice()
            } else {
                req.body.as_slice()
            };
            let input: Value = serde_json::from_slice(body).map_err(|e| {
                AwsError::client(
                    "SerializationException",
                    format!("Could not parse the request body: {e}"),
                )
            })?;
            if let Some(shape) = &op.input {
                json::type_check(model, model.shape(&shape.shape), &input, "")
                    .map_err(|m| AwsError::client("SerializationException", m))?;
                let violations = validate::validate(model, &shape.shape, &input);
                if !violations.is_empty() {
                    return Err(AwsError::client(
                        validation_error_code,
                        validate::coral_message(&violations),
                    ));
                }
            }
            Ok((op_name.to_string(), input))
        }
    }
}

pub(crate) fn query_violation(
    protocol: Protocol,
    first: &Violation,
    all: &[Violation],
) -> AwsError {
    match protocol {
        Protocol::Ec2 if first.missing => AwsError::missing_parameter(&first.member),
        Protocol::Ec2 => AwsError::invalid_parameter_value(format!(
            "Value ({}) for parameter {} is invalid. {}",
            first.value, first.member, first.constraint
        )),
        _ => AwsError::client("ValidationError", validate::coral_message(all)),
    }
}

fn render_success(
    protocol: Protocol,
    model: &ServiceModel,
    operation: &str,
    output: &Value,
    request_id: &str,
) -> HttpResponse {
    match protocol {
        Protocol::Ec2 | Protocol::Query => {
            let dialect = if protocol == Protocol::Ec2 {
                Dialect::Ec2
            } else {
                Dialect::Query
            };
            let body = xml::encode_response(model, dialect, operation, output, request_id);
            HttpResponse {
                status: 200,
                headers: vec![
                    ("content-type", "text/xml;charset=UTF-8".into()),
                    ("x-amzn-requestid", request_id.into()),
                ],
                body: body.into_bytes(),
            }
        }
        Protocol::RestXml => crate::rest_xml::encode(model, operation, output, request_id),
        Protocol::RestJson => crate::rest_json::encode(model, operation, output, request_id),
        Protocol::Json => {
            let op = model
                .operation(operation)
                .expect("dispatched operations exist");
            let out = match &op.output {
                Some(s) => json::encode_output(model, model.shape(&s.shape), output),
                None => Value::Object(Default::default()),
            };
            HttpResponse {
                status: 200,
                headers: vec![
                    ("content-type", "application/x-amz-json-1.1".into()),
                    ("x-amzn-requestid", request_id.into()),
                ],
                body: serde_json::to_vec(&out).expect("JSON values serialize"),
            }
        }
    }
}

/// Renders an error in the protocol's envelope.
pub fn render_error(
    protocol: Protocol,
    e: &AwsError,
    request_id: &str,
    model: Option<&ServiceModel>,
) -> HttpResponse {
    let mut body = String::with_capacity(256);
    match protocol {
        Protocol::RestJson => crate::rest_json::encode_error(e, request_id),
        Protocol::Ec2 => {
            body.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
            body.push_str("\n<Response><Errors><Error><Code>");
            xml::escape(&e.code, &mut body);
            body.push_str("</Code><Message>");
            xml::escape(&e.message, &mut body);
            body.push_str("</Message></Error></Errors><RequestID>");
            body.push_str(request_id);
            body.push_str("</RequestID></Response>");
            HttpResponse {
                status: e.status,
                headers: vec![("content-type", "text/xml;charset=UTF-8".into())],
                body: body.into_bytes(),
            }
        }
        Protocol::Query | Protocol::RestXml => {
            let ns = match (protocol, model) {
                (Protocol::RestXml, Some(m)) => crate::rest_xml::namespace(m),
                _ => model
                    .and_then(|m| m.metadata.xml_namespace.clone())
                    .unwrap_or_else(|| "https://sts.amazonaws.com/doc/2011-06-15/".into()),
            };
            body.push_str(&format!(
                r#"<ErrorResponse xmlns="{ns}"><Error><Type>{}</Type><Code>"#,
                if e.sender { "Sender" } else { "Receiver" }
            ));
            xml::escape(&e.code, &mut body);
            body.push_str("</Code><Message>");
            xml::escape(&e.message, &mut body);
            body.push_str("</Message></Error><RequestId>");
            body.push_str(request_id);
            body.push_str("</RequestId></ErrorResponse>");
            HttpResponse {
                status: e.status,
                headers: vec![
                    ("content-type", "text/xml".into()),
                    ("x-amzn-requestid", request_id.into()),
                ],
                body: body.into_bytes(),
            }
        }
        Protocol::Json => {
            let v = serde_json::json!({"__type": e.code, "message": e.message});
            HttpResponse {
                status: e.status,
                headers: vec![
                    ("content-type", "application/x-amz-json-1.1".into()),
                    ("x-amzn-requestid", request_id.into()),
                    ("x-amzn-errortype", e.code.clone()),
                ],
                body: serde_json::to_vec(&v).expect("JSON values serialize"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_that_found_nothing_are_told_apart() {
        assert!(
            is_read("DescribeTrainingJob") && is_read("ListTagsForResource") && is_read("GetRole")
        );
        assert!(!is_read("CreateTrainingJob") && !is_read("DeleteVpc"));
        for (status, code, message) in [
            (
                400,
                "InvalidVpcID.NotFound",
                "The vpc ID 'vpc-1' does not exist",
            ),
            (400, "ResourceNotFound", "Could not find endpoint \"e\"."),
            (404, "NoSuchEntity", "The role with name r cannot be found."),
            (400, "ValidationException", "Requested resource not found."),
        ] {
            assert!(
                is_not_found(&AwsError::new(status, code, message)),
                "{code}"
            );
        }
        for (status, code, message) in [
            (400, "ValidationException", "1 validation error detected"),
            (500, "InternalError", "not found in the cache"),
        ] {
            assert!(
                !is_not_found(&AwsError::new(status, code, message)),
                "{code}"
            );
        }
    }
}
