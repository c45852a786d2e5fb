//! SageMaker Runtime for Cove: `InvokeEndpoint` (REST-JSON,
//! `POST /endpoints/{EndpointName}/invocations`, signing name `sagemaker`).
//!
//! A request is checked against the service model, routed to a variant by
//! weight (or to `TargetVariant`) and to one of its in-service instances in
//! turn, and forwarded to that instance's serving container at
//! 127.0.0.1:8080 inside the container's own network namespace, the way
//! SageMaker's front end reaches a model without the customer's security
//! groups having to admit it. Connections are opened by a thread that
//! entered the namespace and then kept in a pool per instance, so the
//! namespace switch is paid once per connection, not per request; each
//! connection is driven by the request using it, not by a task of its own.
//!
//! The pure parts (path parsing, input checks, variant choice, AWS's error
//! messages) are functions below, unit-tested without a network.

use bytes::Bytes;
use cove_model::endpoints::{EndpointInstance, EndpointVariant, SageMakerEndpoint};
use cove_store::Store;
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod relay;

/// The largest request body InvokeEndpoint accepts (the model's `BodyBlob` max).
pub const MAX_BODY: usize = 6_291_456;
/// How long a model may take to answer before the caller gets a ModelError (AWS: 60 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The port every serving container listens on.
const SERVING_PORT: u16 = 8080;

/// Request headers passed to the container, as SageMaker passes them.
const FORWARDED: &[&str] = &[
    "content-type",
    "accept",
    "x-amzn-sagemaker-custom-attributes",
    "x-amzn-sagemaker-target-model",
    "x-amzn-sagemaker-inference-id",
    "x-amzn-sagemaker-enable-explanations",
];

/// The endpoint name of an `InvokeEndpoint` path, if it is one.
pub fn invocation_endpoint(method: &str, path: &str) -> Option<String> {
    let rest = path.strip_prefix("/endpoints/")?;
    let name = rest.strip_suffix("/invocations")?;
    if method != "POST" || name.is_empty() || name.contains('/') {
        return None;
    }
    Some(percent_decode(name))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An error as SageMaker Runtime answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// ModelError's extra members.
    pub original_status: Option<u16>,
    pub original_message: Option<String>,
    pub log_stream_arn: Option<String>,
}

impl RuntimeError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        RuntimeError {
            status,
            code,
            message: message.into(),
            original_status: None,
            original_message: None,
            log_stream_arn: None,
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationError", message)
    }

    fn body(&self) -> Value {
        let mut v = json!({ "ErrorCode": self.code, "Message": self.message });
        if let Some(s) = self.original_status {
            v["OriginalStatusCode"] = json!(s);
        }
        if let Some(m) = &self.original_message {
            v["OriginalMessage"] = json!(m);
        }
        if let Some(a) = &self.log_stream_arn {
            v["LogStreamArn"] = json!(a);
        }
        v
    }

    pub fn into_response(self, request_id: &str) -> Response<Full<Bytes>> {
        Response::builder()
            .status(self.status)
            .header(CONTENT_TYPE, "application/json")
            .header("x-amzn-requestid", request_id)
            .header("x-amzn-errortype", self.code)
            .body(Full::new(Bytes::from(self.body().to_string())))
            .expect("valid error response")
    }
}

/// What the caller asked for, from the path and headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub endpoint: String,
    pub target_variant: Option<String>,
    pub target_container_hostname: Option<String>,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the request against the service model's constraints (AWS's
/// `1 validation error detected: …` message on failure).
pub fn check_input(
    endpoint: &str,
    headers: &HeaderMap,
    body_len: usize,
) -> Result<Invocation, RuntimeError> {
    let mut input = json!({ "EndpointName": endpoint, "Body": "" });
    for (member, name) in [
        ("ContentType", "content-type"),
        ("Accept", "accept"),
        ("CustomAttributes", "x-amzn-sagemaker-custom-attributes"),
        ("TargetModel", "x-amzn-sagemaker-target-model"),
        ("TargetVariant", "x-amzn-sagemaker-target-variant"),
        (
            "TargetContainerHostname",
            "x-amzn-sagemaker-target-container-hostname",
        ),
        ("InferenceId", "x-amzn-sagemaker-inference-id"),
    ] {
        if let Some(v) = header(headers, name) {
            input[member] = json!(v);
        }
    }
    let model = cove_wire::model::sagemaker_runtime();
    let mut violations = cove_wire::validate::validate(model, "InvokeEndpointInput", &input);
    if body_len > MAX_BODY {
        violations.push(cove_wire::validate::Violation {
            path: "body".into(),
            member: "Body".into(),
            value: "[...]".into(),
            constraint: format!("Member must have length less than or equal to {MAX_BODY}"),
            missing: false,
        });
    }
    if !violations.is_empty() {
        return Err(RuntimeError::validation(
            cove_wire::validate::coral_message(&violations),
        ));
    }
    Ok(Invocation {
        endpoint: endpoint.to_string(),
        target_variant: input["TargetVariant"].as_str().map(str::to_string),
        target_container_hostname: input["TargetContainerHostname"]
            .as_str()
            .map(str::to_string),
    })
}

/// AWS's answer for an endpoint that does not exist or does not serve yet.
pub fn endpoint_not_found(name: &str, account: &str) -> RuntimeError {
    RuntimeError::validation(format!("Endpoint {name} of account {account} not found."))
}

/// Picks the variant for a request: `TargetVariant` if given, otherwise by
/// weight among the variants that have an instance in service. `roll` is
/// uniform in [0, 1).
pub fn choose_variant<'a>(
    serving: &[(&'a EndpointVariant, Vec<&'a EndpointInstance>)],
    target: Option<&str>,
    roll: f64,
) -> Option<usize> {
    if let Some(t) = target {
        return serving
            .iter()
            .position(|(v, i)| v.name == t && !i.is_empty());
    }
    let live: Vec<usize> = (0..serving.len())
        .filter(|&n| !serving[n].1.is_empty())
        .collect();
    let total: f64 = live
        .iter()
        .map(|&n| serving[n].0.current_weight.max(0.0))
        .sum();
    if total <= 0.0 {
        return live.first().copied();
    }
    let mut at = roll * total;
    for &n in &live {
        let w = serving[n].0.current_weight.max(0.0);
        if at < w {
            return Some(n);
        }
        at -= w;
    }
    live.last().copied()
}

fn log_group_url(region: &str, endpoint: &str, account: &str) -> String {
    format!(
        "https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logEventViewer:group=/aws/sagemaker/Endpoints/{endpoint} in account {account} for more information."
    )
}

/// AWS's ModelError for a container that answered with an error status.
pub fn model_error(
    status: u16,
    body: &str,
    region: &str,
    endpoint: &str,
    account: &str,
) -> RuntimeError {
    let kind = if status >= 500 { "server" } else { "client" };
    let mut e = RuntimeError::new(
        424,
        "ModelError",
        format!(
            "Received {kind} error ({status}) from primary with message \"{body}\". See {}",
            log_group_url(region, endpoint, account)
        ),
    );
    e.original_status = Some(status);
    e.original_message = Some(body.to_string());
    e.log_stream_arn = Some(format!(
        "arn:aws:logs:{region}:{account}:log-group:/aws/sagemaker/Endpoints/{endpoint}"
    ));
    e
}

/// AWS's ModelError for a container that did not answer in time.
pub fn model_timeout(region: &str, endpoint: &str, account: &str) -> RuntimeError {
    let mut e = RuntimeError::new(
        424,
        "ModelError",
        "Your invocation timed out while waiting for a response from container primary. Review the latency metrics for each container in Amazon CloudWatch, resolve the issue, and try again.",
    );
    e.log_stream_arn = Some(format!(
        "arn:aws:logs:{region}:{account}:log-group:/aws/sagemaker/Endpoints/{endpoint}"
    ));
    e
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;
type Connection =
    Pin<Box<hyper::client::conn::http1::Connection<TokioIo<tokio::net::TcpStream>, Full<Bytes>>>>;

/// A keep-alive connection to one serving container. Its connection
/// future is polled by the request that uses it (not by a task of its
/// own), so an invocation wakes no other task on the way to the model.
struct PooledConnection {
    sender: Sender,
    connection: Connection,
}

/// Idle connections per instance.
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<String, Vec<PooledConnection>>>,
}

/// Most idle connections kept per instance.
const MAX_IDLE: usize = 512;

impl Pool {
    /// An idle connection that is still open, or a new one opened from
    /// inside the container's namespace or through its host's relay.
    async fn checkout(&self, key: &str, route: &Route) -> std::io::Result<PooledConnection> {
        loop {
            let idle = self
                .idle
                .lock()
                .expect("lock")
                .get_mut(key)
                .and_then(Vec::pop);
            let Some(mut c) = idle else { break };
            // A connection the container closed while idle ends at once.
            if c.sender.is_closed() || (&mut c.connection).now_or_never().is_some() {
                continue;
            }
            return Ok(c);
        }
        let stream = route.connect(SERVING_PORT).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(stream)
            .await
            .map_err(std::io::Error::other)?;
        Ok(PooledConnection {
            sender,
            connection: Box::pin(connection),
        })
    }

    fn checkin(&self, key: &str, c: PooledConnection) {
        let mut idle = self.idle.lock().expect("lock");
        let list = idle.entry(key.to_string()).or_default();
        if list.len() < MAX_IDLE {
            list.push(c);
        }
    }
}

/// How a front on the control plane reaches one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// On this host: from inside the namespace at this path.
    Here(String),
    /// On an agent's host: through its relay.
    Relay(relay::RelayRoute),
}

impl Route {
    /// How to reach a container placed on `placed_on` (`None`: this host)
    /// in the namespace `netns_path`: through the relay the agent
    /// registered in `world`, as `target`.
    pub fn to(
        world: &cove_model::world::World,
        placed_on: Option<&str>,
        netns_path: Option<&str>,
        target: impl FnOnce() -> String,
    ) -> Option<Route> {
        let Some(host) = placed_on else {
            return Some(Route::Here(netns_path?.to_string()));
        };
        let h = world.hosts.get(host)?;
        let r = h.serving_relay.as_ref()?;
        Some(Route::Relay(relay::RelayRoute {
            address: std::net::SocketAddr::from((h.underlay, r.port)),
            token: r.token.clone(),
            target: target(),
        }))
    }

    /// A connection to `port` of the container (the relay knows the port
    /// of its target), with Nagle off.
    pub async fn connect(&self, port: u16) -> std::io::Result<TokioIo<tokio::net::TcpStream>> {
        match self {
            Route::Here(netns_path) => connect_in_namespace(netns_path.clone(), port).await,
            Route::Relay(r) => relay::connect(r, Duration::from_secs(2)).await,
        }
    }
}

/// How to reach endpoint instance `instance`'s serving container.
fn route_to(world: &cove_model::world::World, instance: &EndpointInstance) -> Option<Route> {
    Route::to(
        world,
        instance.placed_on.as_deref(),
        instance.netns_path.as_deref(),
        || format!("{}:{SERVING_PORT}", instance.id),
    )
}

/// Connects to 127.0.0.1:`port` from a thread inside the namespace at
/// `path` (a serving container's, or a Studio app's), with Nagle off.
pub async fn connect_in_namespace(
    path: String,
    port: u16,
) -> std::io::Result<TokioIo<tokio::net::TcpStream>> {
    let std_stream = tokio::task::spawn_blocking(move || {
        cove_net::netns::run_in_path(&path, move || {
            std::net::TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(2),
            )
        })?
    })
    .await
    .map_err(std::io::Error::other)??;
    std_stream.set_nonblocking(true)?;
    std_stream.set_nodelay(true)?;
    Ok(TokioIo::new(tokio::net::TcpStream::from_std(std_stream)?))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends one request on `c` and reads the whole answer, driving the
/// connection in the same task.
async fn exchange(
    c: &mut PooledConnection,
    request: Request<Full<Bytes>>,
) -> Result<(hyper::http::response::Parts, Bytes), BoxError> {
    let sender = &mut c.sender;
    let work = async move {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await?.to_bytes();
        Ok::<_, BoxError>((parts, bytes))
    };
    tokio::select! {
        biased;
        done = work => done,
        ended = c.connection.as_mut() => Err(match ended {
            Ok(()) => "the container closed the connection".into(),
            Err(e) => Box::new(e),
        }),
    }
}

pub struct Runtime {
    store: Arc<Store>,
    pool: Pool,
    timeout: Duration,
    next: AtomicUsize,
}

impl Runtime {
    pub fn new(store: Arc<Store>, timeout: Duration) -> Runtime {
        Runtime {
            store,
            pool: Pool::default(),
            timeout,
            next: AtomicUsize::new(0),
        }
    }

    /// Serves one authenticated `InvokeEndpoint`.
    pub async fn invoke(
        &self,
        account: &str,
        region: &str,
        endpoint: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let request_id = uuid::Uuid::new_v4().to_string();
        match self
            .route_and_forward(account, region, endpoint, headers, body)
            .await
        {
            Ok(mut r) => {
                if let Ok(v) = HeaderValue::from_str(&request_id) {
                    r.headers_mut().insert("x-amzn-requestid", v);
                }
                r
            }
            Err(e) => e.into_response(&request_id),
        }
    }

    async fn route_and_forward(
        &self,
        account: &str,
        region: &str,
        endpoint: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response<Full<Bytes>>, RuntimeError> {
        let call = check_input(endpoint, headers, body.len())?;
        let world = self.store.view(account);
        let e = world
            .sagemaker_endpoints
            .get(&SageMakerEndpoint::key_of(region, account, &call.endpoint))
            .filter(|e| {
                matches!(
                    e.status.as_str(),
                    "InService" | "Updating" | "SystemUpdating"
                )
            })
            .ok_or_else(|| endpoint_not_found(&call.endpoint, account))?;
        if call.target_container_hostname.is_some() {
            return Err(RuntimeError::validation(format!(
                "Endpoint {} of account {account} does not run its containers in Direct invocation mode, so TargetContainerHostname cannot be used.",
                call.endpoint
            )));
        }
        let serving = e.serving();
        if let Some(t) = &call.target_variant {
            if !serving.iter().any(|(v, _)| v.name == *t) {
                return Err(RuntimeError::validation(format!(
                    "Variant {t} does not exist on endpoint {} of account {account}.",
                    call.endpoint
                )));
            }
        }
        let roll: f64 = rand::random();
        let Some(v) = choose_variant(&serving, call.target_variant.as_deref(), roll) else {
            return Err(RuntimeError::new(
                503,
                "ServiceUnavailable",
                format!(
                    "No instance of endpoint {} is in service right now. Try your call again.",
                    call.endpoint
                ),
            ));
        };
        let (variant, instances) = &serving[v];
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let mut request = Request::post("/invocations").header(HOST, "localhost");
        for name in FORWARDED {
            if let Some(value) = headers.get(*name) {
                request = request.header(*name, value.clone());
            }
        }
        let request = request.body(Full::new(body)).map_err(|_| {
            RuntimeError::new(500, "InternalFailure", "could not build the request")
        })?;
        let world = self.store.snapshot();
        // The instances in turn from this call's: one that cannot even be
        // connected to (its host down and not yet marked lost) is passed
        // over, as the request has not reached it.
        let mut instance = instances[turn % instances.len()];
        let forwarded = async {
            let mut refused = None;
            for n in 0..instances.len() {
                instance = instances[(turn + n) % instances.len()];
                // The pool keys by route too: an instance's host
                // re-registered with a new relay token gets new connections.
                let route =
                    route_to(&world, instance).unwrap_or_else(|| Route::Here(String::new()));
                let key = format!("{}/{}/{route:?}", e.name, instance.id);
                let mut c = match self.pool.checkout(&key, &route).await {
                    Ok(c) => c,
                    Err(err) => {
                        tracing::warn!(endpoint = %e.name, instance = %instance.id, error = %err, "cannot connect to a serving container; trying the next instance");
                        refused = Some(err);
                        continue;
                    }
                };
                let answer = exchange(&mut c, request).await?;
                self.pool.checkin(&key, c);
                return Ok::<_, BoxError>(answer);
            }
            Err(refused.map_or_else(|| "no instance".into(), BoxError::from))
        };
        let (parts, bytes) = match tokio::time::timeout(self.timeout, forwarded).await {
            Err(_) => return Err(model_timeout(region, &e.name, account)),
            Ok(Err(err)) => {
                tracing::warn!(endpoint = %e.name, instance = %instance.id, error = %err, "model container unreachable");
                return Err(model_error(0, &err.to_string(), region, &e.name, account));
            }
            Ok(Ok(x)) => x,
        };
        if !parts.status.is_success() {
            return Err(model_error(
                parts.status.as_u16(),
                &String::from_utf8_lossy(&bytes),
                region,
                &e.name,
                account,
            ));
        }
        let mut out = Response::builder().status(StatusCode::OK);
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("application/json"));
        out = out.header(CONTENT_TYPE, content_type);
        if let Ok(v) = HeaderValue::from_str(&variant.name) {
            out = out.header(
                HeaderName::from_static("x-amzn-invoked-production-variant"),
                v,
            );
        }
        if let Some(v) = parts.headers.get("x-amzn-sagemaker-custom-attributes") {
            out = out.header("x-amzn-sagemaker-custom-attributes", v.clone());
        }
        out.body(Full::new(bytes))
            .map_err(|_| RuntimeError::new(500, "InternalFailure", "could not build the response"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_model::endpoints::InstanceState;

    #[test]
    fn invocation_paths() {
        assert_eq!(
            invocation_endpoint("POST", "/endpoints/my-ep/invocations"),
            Some("my-ep".into())
        );
        assert_eq!(
            invocation_endpoint("GET", "/endpoints/my-ep/invocations"),
            None
        );
        assert_eq!(invocation_endpoint("POST", "/endpoints//invocations"), None);
        assert_eq!(
            invocation_endpoint("POST", "/endpoints/a/b/invocations"),
            None
        );
        assert_eq!(invocation_endpoint("POST", "/"), None);
    }

    #[test]
    fn inputs_are_checked_against_the_model() {
        let mut h = HeaderMap::new();
        assert!(check_input("ep-1", &h, 10).is_ok());
        let e = check_input("bad_name", &h, 10).unwrap_err();
        assert_eq!(e.code, "ValidationError");
        assert!(e.message.starts_with("1 validation error detected: Value 'bad_name' at 'endpointName' failed to satisfy constraint: Member must satisfy regular expression pattern"), "{}", e.message);
        let e = check_input("ep", &h, MAX_BODY + 1).unwrap_err();
        assert!(e.message.contains("at 'body'"), "{}", e.message);
        h.insert(
            "x-amzn-sagemaker-target-variant",
            HeaderValue::from_static("B"),
        );
        assert_eq!(
            check_input("ep", &h, 1).unwrap().target_variant.as_deref(),
            Some("B")
        );
        let long = HeaderValue::from_str(&"x".repeat(65)).unwrap();
        h.insert("x-amzn-sagemaker-inference-id", long);
        assert!(check_input("ep", &h, 1).is_err());
    }

    fn variant(name: &str, weight: f64) -> EndpointVariant {
        EndpointVariant {
            name: name.into(),
            model_name: "m".into(),
            instance_type: "ml.m5.large".into(),
            current_weight: weight,
            desired_weight: weight,
            current_instance_count: 1,
            desired_instance_count: 1,
            image: "i".into(),
        }
    }

    fn instance(id: &str) -> EndpointInstance {
        EndpointInstance {
            id: id.into(),
            variant: "A".into(),
            config_name: "c".into(),
            eni_id: None,
            state: InstanceState::InService,
            netns_path: Some("/x".into()),
            failure_reason: None,
            session_access_key: None,
            retiring_since: None,
            placed_on: None,
            transformed: false,
            image_pull: None,
        }
    }

    #[test]
    fn variants_are_chosen_by_weight() {
        let (a, b, c) = (variant("A", 1.0), variant("B", 3.0), variant("C", 5.0));
        let i = instance("i-1");
        let serving = vec![(&a, vec![&i]), (&b, vec![&i]), (&c, vec![])];
        assert_eq!(choose_variant(&serving, None, 0.0), Some(0));
        assert_eq!(choose_variant(&serving, None, 0.24), Some(0));
        assert_eq!(choose_variant(&serving, None, 0.26), Some(1));
        assert_eq!(choose_variant(&serving, None, 0.99), Some(1));
        assert_eq!(choose_variant(&serving, Some("B"), 0.0), Some(1));
        assert_eq!(
            choose_variant(&serving, Some("C"), 0.0),
            None,
            "no instance in service"
        );
        let zero = (variant("Z", 0.0), variant("Y", 0.0));
        let serving = vec![(&zero.0, vec![&i]), (&zero.1, vec![&i])];
        assert_eq!(choose_variant(&serving, None, 0.7), Some(0));
    }

    #[test]
    fn model_errors_carry_the_original_answer() {
        let e = model_error(415, "no csv", "us-east-1", "ep", "123456789012");
        assert_eq!(e.status, 424);
        assert!(e.message.starts_with("Received client error (415) from primary with message \"no csv\". See https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#logEventViewer:group=/aws/sagemaker/Endpoints/ep in account 123456789012"));
        let body = e.body();
        assert_eq!(body["OriginalStatusCode"], 415);
        assert_eq!(body["OriginalMessage"], "no csv");
        assert!(model_error(500, "x", "r", "e", "a")
            .message
            .starts_with("Received server error (500)"));
        assert_eq!(percent_decode("a%2Db"), "a-b");
    }
}
