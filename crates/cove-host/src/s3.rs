//! Moving job data between S3 and a job's instance, as SageMaker's agent
//! does: S3 REST calls signed with the execution role's session. The caller
//! runs these on a thread that entered the job's ENI namespace, so the
//! packets leave through the ENI and the VPC's routes, ACLs, security groups
//! and endpoint policies decide whether they arrive.
//!
//! The requests are presigned by `rusty-s3` (SigV4 in the query, the session
//! token included) and sent over a hyper [`Connection`] opened from the
//! caller's namespace; list responses are parsed by `rusty-s3` too.

use crate::http::{self, Connection};
use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Request;
use rusty_s3::{Bucket, S3Action, UrlStyle};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// How long a presigned request stays valid: it is sent at once.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(900);
/// How long S3 may take to start answering.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// S3's answers that ask to be tried again (InternalError, SlowDown,
/// ServiceUnavailable, a gateway's), and the waits before each retry, as
/// the AWS SDKs' standard mode backs off.
const RETRIED_STATUSES: &[u16] = &[500, 502, 503, 504];
const RETRY_WAITS: &[Duration] = &[
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1600),
];

#[derive(Debug)]
pub enum TransferError {
    /// Nothing answered: no route, a dropped packet, a refused connection.
    Network(String),
    /// S3 answered with an error.
    Service {
        status: u16,
        code: String,
        message: String,
    },
    Local(String),
    /// The host's ML storage volume is full (ENOSPC or EDQUOT).
    DiskFull,
}

impl TransferError {
    /// A local I/O error: `DiskFull` when the volume is full.
    pub fn from_io(e: std::io::Error) -> TransferError {
        match e.raw_os_error() {
            Some(28 | 122) => TransferError::DiskFull,
            _ => TransferError::Local(e.to_string()),
        }
    }
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::Network(e) => write!(f, "network: {e}"),
            TransferError::Service {
                status,
                code,
                message,
            } => write!(f, "{code} ({status}): {message}"),
            TransferError::Local(e) => write!(f, "{e}"),
            TransferError::DiskFull => write!(f, "Insufficient disk space"),
        }
    }
}

pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

/// A job's `FailureReason` for a failed transfer: `network_message` when S3
/// could not be reached, S3's own error otherwise.
pub fn transfer_failure(e: TransferError, network_message: &str) -> String {
    match e {
        TransferError::Network(_) => network_message.to_string(),
        TransferError::Service {
            status,
            code,
            message,
        } => format!("ClientError: {code} ({status}): {message}"),
        TransferError::Local(detail) => format!("ClientError: {detail}"),
        TransferError::DiskFull => "ClientError: Insufficient disk space".to_string(),
    }
}

pub use cove_model::s3_uri::parse_s3_uri;

pub struct S3Client {
    /// S3 as the instance reaches it.
    addr: SocketAddr,
    endpoint: url::Url,
    region: String,
    credentials: rusty_s3::Credentials,
    connect_timeout: Duration,
    /// One kept-alive connection, opened on first use from the caller's
    /// namespace and opened again when S3 has closed it.
    connection: std::sync::Mutex<Option<Connection>>,
}

/// A request body, made again if the request must be sent twice.
type MakeBody<'a> = &'a dyn Fn(&Connection) -> Result<(http::Body, Option<u64>), TransferError>;

/// How long a transfer waits for an S3 that refuses connections.
const REFUSED_PATIENCE: Duration = Duration::from_secs(60);

/// Opens a connection to S3. A refused connection is Cove's S3 restarting
/// (the control plane's process, while an instance on an agent moves its
/// data), never the network's rules, which drop: it is tried again for up
/// to [`REFUSED_PATIENCE`], as S3 on AWS does not go away under a job.
fn open_waiting_while_refused(
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<Connection, TransferError> {
    let deadline = std::time::Instant::now() + REFUSED_PATIENCE;
    loop {
        match Connection::open(addr, connect_timeout) {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(500));
            }
            opened => return opened.map_err(network),
        }
    }
}

fn network(e: impl std::fmt::Display) -> TransferError {
    TransferError::Network(e.to_string())
}

fn local(e: impl std::fmt::Display) -> TransferError {
    TransferError::Local(e.to_string())
}

impl S3Client {
    /// A client for S3 at `host` (`ip` or `ip:port`).
    pub fn new(
        host: &str,
        region: &str,
        credentials: Credentials,
        connect_timeout: Duration,
    ) -> Result<S3Client, TransferError> {
        let addr = host
            .parse::<SocketAddr>()
            .or_else(|_| format!("{host}:80").parse())
            .map_err(|_| local(format!("S3 address {host:?} is not ip[:port]")))?;
        let endpoint = format!("http://{host}").parse().map_err(local)?;
        let credentials = match credentials.session_token {
            Some(token) => rusty_s3::Credentials::new_with_token(
                credentials.access_key,
                credentials.secret_key,
                token,
            ),
            None => rusty_s3::Credentials::new(credentials.access_key, credentials.secret_key),
        };
        Ok(S3Client {
            addr,
            endpoint,
            region: region.to_string(),
            credentials,
            connect_timeout,
            connection: std::sync::Mutex::new(None),
        })
    }

    fn bucket(&self, name: &str) -> Result<Bucket, TransferError> {
        Bucket::new(
            self.endpoint.clone(),
            UrlStyle::Path,
            name.to_string(),
            self.region.clone(),
        )
        .map_err(local)
    }

    /// Sends one presigned request and hands the response body to `read`;
    /// an S3 error answer becomes [`TransferError::Service`]. The
    /// connection is kept for the next request once its body is read.
    fn call<T>(
        &self,
        method: &str,
        url: url::Url,
        body: MakeBody<'_>,
        read: impl FnOnce(&mut Connection, hyper::body::Incoming) -> Result<T, TransferError>,
    ) -> Result<T, TransferError> {
        let mut cached = self.connection.lock().expect("connection lock");
        let open = || open_waiting_while_refused(self.addr, self.connect_timeout);
        let mut waits = RETRY_WAITS.iter();
        let (mut connection, response) = loop {
            let (mut connection, reused) = match cached.take() {
                Some(c) if !c.is_closed() => (c, true),
                _ => (open()?, false),
            };
            let response = match Self::send(&mut connection, method, &url, body) {
                Ok(r) => r,
                // S3 may close an idle connection just as it is reused: the
                // request goes once more, on a fresh one.
                Err(_) if reused => {
                    connection = open()?;
                    Self::send(&mut connection, method, &url, body)?
                }
                Err(e) => return Err(e),
            };
            let retried = RETRIED_STATUSES.contains(&response.status().as_u16());
            match waits.next().filter(|_| retried) {
                Some(wait) => {
                    if connection.read_body(response.into_body()).is_ok() {
                        *cached = Some(connection);
                    }
                    std::thread::sleep(*wait);
                }
                None => break (connection, response),
            }
        };
        let status = response.status().as_u16();
        if status < 300 {
            let value = read(&mut connection, response.into_body())?;
            *cached = Some(connection);
            return Ok(value);
        }
        let text = connection
            .read_body(response.into_body())
            .map_err(network)?;
        *cached = Some(connection);
        let error = S3ErrorBody::parse(&text);
        Err(TransferError::Service {
            status,
            code: error.code.unwrap_or_else(|| format!("HTTP{status}")),
            message: error.message.unwrap_or_default(),
        })
    }

    fn send(
        connection: &mut Connection,
        method: &str,
        url: &url::Url,
        body: MakeBody<'_>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, TransferError> {
        let (body, length) = body(connection)?;
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, url.authority());
        if let Some(n) = length {
            request = request.header(hyper::header::CONTENT_LENGTH, n);
        }
        let request = request.body(body).map_err(local)?;
        connection.send(request, RESPONSE_TIMEOUT).map_err(network)
    }

    /// Reads a whole response body.
    fn whole(
        connection: &mut Connection,
        body: hyper::body::Incoming,
    ) -> Result<Bytes, TransferError> {
        connection.read_body(body).map_err(network)
    }

    fn empty(_: &Connection) -> Result<(http::Body, Option<u64>), TransferError> {
        Ok((http::full(Bytes::new()), None))
    }

    /// Every key under `prefix`, with its size, in key order.
    pub fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>, TransferError> {
        let bucket = self.bucket(bucket)?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(prefix);
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(SIGNATURE_LIFETIME);
            let body = self.call("GET", url, &Self::empty, Self::whole)?;
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&body)
                .map_err(|e| network(format!("reading the object list: {e}")))?;
            out.extend(page.contents.into_iter().map(|c| (c.key, c.size)));
            token = page.next_continuation_token;
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// Downloads one object into `dest` (written beside it, then renamed).
    pub fn get_to_file(&self, bucket: &str, key: &str, dest: &Path) -> Result<u64, TransferError> {
        let bucket = self.bucket(bucket)?;
        let url = bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNATURE_LIFETIME);
        let partial = dest.with_extension("cove-partial");
        let n = self.call("GET", url, &Self::empty, |connection, body| {
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir).map_err(TransferError::from_io)?;
            }
            let mut file = std::fs::File::create(&partial).map_err(TransferError::from_io)?;
            connection.copy_body(body, &mut file).map_err(|e| {
                if e.raw_os_error().is_some() {
                    TransferError::from_io(e)
                } else {
                    network(e)
                }
            })
        })?;
        std::fs::rename(&partial, dest).map_err(TransferError::from_io)?;
        Ok(n)
    }

    /// Uploads a file as one object, streamed from disk.
    pub fn put_file(&self, bucket: &str, key: &str, src: &Path) -> Result<u64, TransferError> {
        let len = std::fs::metadata(src).map_err(local)?.len();
        let bucket = self.bucket(bucket)?;
        let url = bucket
            .put_object(Some(&self.credentials), key)
            .sign(SIGNATURE_LIFETIME);
        let body = |connection: &Connection| {
            let file = connection
                .block_on(tokio::fs::File::open(src))
                .map_err(local)?;
            let frames = tokio_util::io::ReaderStream::new(file).map_ok(Frame::data);
            Ok((StreamBody::new(frames).boxed(), Some(len)))
        };
        self.call("PUT", url, &body, Self::whole)?;
        Ok(len)
    }
}

/// The `Code` and `Message` of an S3 error document.
#[derive(Debug, Default, PartialEq, serde::Deserialize)]
struct S3ErrorBody {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

impl S3ErrorBody {
    /// What the body says; nothing when it is not an error document.
    fn parse(body: &[u8]) -> S3ErrorBody {
        quick_xml::de::from_reader(body).unwrap_or_default()
    }
}

/// Runs `f` on a new thread with an S3 client that reaches S3 the way a
/// host in `netns` does (from inside that namespace, so through its ENI and
/// its VPC's routes), or through Cove's own listener outside a VPC.
pub fn spawn_in_network<T: Send + 'static>(
    settings: &crate::Settings,
    region: &str,
    netns: Option<String>,
    session: Option<&cove_model::jobs::StsSession>,
    f: impl FnOnce(&S3Client) -> Result<T, TransferError> + Send + 'static,
) -> std::thread::JoinHandle<Result<T, TransferError>> {
    let endpoint = match &netns {
        Some(_) => {
            cove_model::services::public_address(region, &format!("s3.{region}.amazonaws.com"))
                .map(|a| a.to_string())
                .unwrap_or_default()
        }
        None => settings.local_s3.clone(),
    };
    let credentials = Credentials {
        access_key: session.map(|s| s.access_key_id.clone()).unwrap_or_default(),
        secret_key: session
            .map(|s| s.secret_access_key.clone())
            .unwrap_or_default(),
        session_token: session.map(|s| s.session_token.clone()),
    };
    let timeout = settings.connect_timeout;
    let region = region.to_string();
    std::thread::spawn(move || {
        let work = move || {
            let client = S3Client::new(&endpoint, &region, credentials, timeout)?;
            f(&client)
        };
        match netns {
            Some(ns) => cove_net::netns::run_in(&ns, work)
                .unwrap_or_else(|e| Err(TransferError::Network(e.to_string()))),
            None => work(),
        }
    })
}

/// What a transfer thread from [`spawn_in_network`] ended with, once it has:
/// a panic in it counts as a local failure.
pub fn joined<T>(
    thread: std::thread::JoinHandle<Result<T, TransferError>>,
) -> Result<T, TransferError> {
    thread
        .join()
        .unwrap_or_else(|_| Err(TransferError::Local("the transfer thread panicked".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> S3Client {
        let credentials = Credentials {
            access_key: "ASIAEXAMPLE".into(),
            secret_key: "secret".into(),
            session_token: Some("token".into()),
        };
        S3Client::new(
            "198.51.100.7",
            "us-east-1",
            credentials,
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[test]
    fn requests_are_presigned_with_the_session_and_keys_encoded_per_segment() {
        let c = client();
        assert_eq!(c.addr, "198.51.100.7:80".parse().unwrap());
        let bucket = c.bucket("b").unwrap();
        let url = bucket
            .get_object(Some(&c.credentials), "a b/c+d.txt")
            .sign(SIGNATURE_LIFETIME);
        assert_eq!(url.path(), "/b/a%20b/c%2Bd.txt");
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("X-Amz-Security-Token"), Some("token"));
        assert!(get("X-Amz-Credential").is_some_and(|v| v.starts_with("ASIAEXAMPLE/")));
        assert!(get("X-Amz-Signature").is_some());
    }

    #[test]
    fn addresses_that_are_not_ip_and_port_are_refused() {
        let credentials = Credentials {
            access_key: String::new(),
            secret_key: String::new(),
            session_token: None,
        };
        assert!(matches!(
            S3Client::new(
                "s3.example",
                "us-east-1",
                credentials,
                Duration::from_secs(1)
            ),
            Err(TransferError::Local(_))
        ));
    }

    #[test]
    fn error_documents_give_their_code_and_unescaped_message() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>a &amp; b</Message></Error>";
        assert_eq!(
            S3ErrorBody::parse(body),
            S3ErrorBody {
                code: Some("AccessDenied".into()),
                message: Some("a & b".into())
            }
        );
        assert_eq!(S3ErrorBody::parse(b"not xml <"), S3ErrorBody::default());
    }

    /// A one-connection-at-a-time HTTP server that answers with `statuses`
    /// in turn (then 200), and counts the requests it got.
    fn server(statuses: Vec<u16>) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            let mut statuses = statuses.into_iter();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if line != "\r\n" {
                        continue;
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let status = statuses.next().unwrap_or(200);
                    let body = if status == 200 {
                        "done"
                    } else {
                        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                    };
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if out.write_all(answer.as_bytes()).is_err() {
                        break;
                    }
                }
            }
        });
        (addr, seen)
    }

    fn local_client(addr: SocketAddr) -> S3Client {
        let credentials = Credentials {
            access_key: "AKIDEXAMPLE".into(),
            secret_key: "secret".into(),
            session_token: None,
        };
        S3Client::new(
            &addr.to_string(),
            "us-east-1",
            credentials,
            Duration::from_secs(1),
        )
        .unwrap()
    }

    #[test]
    fn slow_down_and_internal_errors_are_retried_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, seen) = server(vec![503, 500]);
        let n = local_client(addr)
            .get_to_file("b", "k", &dir.path().join("k"))
            .unwrap();
        assert_eq!((n, seen.load(std::sync::atomic::Ordering::SeqCst)), (4, 3));
        let (addr, seen) = server(vec![503; 10]);
        match local_client(addr).get_to_file("b", "k", &dir.path().join("k")) {
            Err(TransferError::Service {
                status: 503, code, ..
            }) => assert_eq!(code, "SlowDown"),
            other => panic!("{other:?}"),
        }
        // The first try and three retries.
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 4);
    }
}
