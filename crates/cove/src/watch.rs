//! `cove watch-job`: follows a training or processing job from the terminal
//! the way the SageMaker Python SDK's `logs=True` does — each secondary
//! status as it happens, the container's log lines as they arrive, a spinner
//! with the elapsed time in between — through the public API, signed like
//! any other client.

use cove_host::http::Connection;
use cove_wire::sigv4;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long one call may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Client {
    /// Where the endpoint listens, resolved once.
    addr: std::net::SocketAddr,
    host: String,
    region: String,
    access_key: String,
    secret_key: String,
}

impl Client {
    pub fn from_env(endpoint: &str, region: &str) -> anyhow::Result<Client> {
        let host = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let with_port = if host.contains(':') {
            host.clone()
        } else {
            format!("{host}:80")
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&with_port)?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{endpoint} does not resolve"))?;
        Ok(Client {
            addr,
            host,
            region: region.to_string(),
            access_key: env("AWS_ACCESS_KEY_ID", crate::config::DEFAULT_ACCESS_KEY_ID),
            secret_key: env(
                "AWS_SECRET_ACCESS_KEY",
                crate::config::DEFAULT_SECRET_ACCESS_KEY,
            ),
        })
    }

    /// One awsJson 1.1 call (`SageMaker.DescribeTrainingJob`, `Logs_20140328.GetLogEvents`).
    pub fn call(&self, service: &str, target: &str, body: &Value) -> anyhow::Result<Value> {
        let body = body.to_string();
        let mut headers = vec![
            (
                "content-type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
            ("host".to_string(), self.host.clone()),
            ("x-amz-target".to_string(), target.to_string()),
        ];
        sigv4::sign_headers(
            &mut headers,
            "POST",
            "/",
            "",
            &sigv4::sha256_hex(body.as_bytes()),
            &self.access_key,
            &self.secret_key,
            &self.region,
            service,
        );
        let mut connection = Connection::open(self.addr, TIMEOUT)?;
        let mut request = hyper::Request::post("/");
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        let response = connection.send(request.body(cove_host::http::full(body))?, TIMEOUT)?;
        let status = response.status().as_u16();
        let text = connection.read_body(response.into_body())?;
        let text = String::from_utf8_lossy(&text);
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status >= 300 {
            anyhow::bail!(
                "{}: {}",
                value["__type"].as_str().unwrap_or("error"),
                value["message"].as_str().unwrap_or(&text)
            );
        }
        Ok(value)
    }
}

/// Follows a job until it ends; the result is its final Describe answer.
pub fn watch(client: &Client, name: &str, processing: bool) -> anyhow::Result<Value> {
    let (describe, status_key, group) = if processing {
        (
            "SageMaker.DescribeProcessingJob",
            "ProcessingJobStatus",
            "/aws/sagemaker/ProcessingJobs",
        )
    } else {
        (
            "SageMaker.DescribeTrainingJob",
            "TrainingJobStatus",
            "/aws/sagemaker/TrainingJobs",
        )
    };
    let key = if processing {
        "ProcessingJobName"
    } else {
        "TrainingJobName"
    };
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed:>4}] {msg}").expect("static template"),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let bar_ref = &bar;
    let started = Instant::now();
    let mut shown_transitions = 0;
    let mut log_tokens: std::collections::BTreeMap<String, Option<String>> = Default::default();
    loop {
        let d = client.call("sagemaker", describe, &json!({ key: name }))?;
        let transitions = d["SecondaryStatusTransitions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for t in transitions.iter().skip(shown_transitions) {
            say(
                bar_ref,
                format!(
                    "{:>6.1}s  {:<12} {}",
                    started.elapsed().as_secs_f64(),
                    t["Status"].as_str().unwrap_or_default(),
                    t["StatusMessage"].as_str().unwrap_or_default()
                ),
            );
        }
        shown_transitions = transitions.len();
        follow_logs(client, group, name, &mut log_tokens, &bar);
        let status = d[status_key].as_str().unwrap_or_default().to_string();
        bar.set_message(format!(
            "{name}: {status} / {}",
            d["SecondaryStatus"].as_str().unwrap_or("-")
        ));
        if matches!(status.as_str(), "Completed" | "Failed" | "Stopped") {
            follow_logs(client, group, name, &mut log_tokens, &bar);
            bar.finish_and_clear();
            return Ok(d);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Prints a line above the spinner; without a terminal (the spinner is
/// hidden) straight to stdout, so logs and pipes see the progress too.
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

/// Prints the log lines of the job's streams that arrived since the last call.
fn follow_logs(
    client: &Client,
    group: &str,
    job: &str,
    tokens: &mut std::collections::BTreeMap<String, Option<String>>,
    bar: &ProgressBar,
) {
    let Ok(streams) = client.call(
        "logs",
        "Logs_20140328.DescribeLogStreams",
        &json!({"logGroupName": group, "logStreamNamePrefix": format!("{job}/")}),
    ) else {
        return;
    };
    for s in streams["logStreams"].as_array().into_iter().flatten() {
        let stream = s["logStreamName"].as_str().unwrap_or_default().to_string();
        let token = tokens.entry(stream.clone()).or_default();
        let mut req =
            json!({"logGroupName": group, "logStreamName": stream, "startFromHead": true});
        if let Some(t) = token.as_ref() {
            req["nextToken"] = json!(t);
        }
        let Ok(page) = client.call("logs", "Logs_20140328.GetLogEvents", &req) else {
            continue;
        };
        // Streams are `<job>/algo-N-<epoch>`: show the host.
        let host = stream
            .rsplit('/')
            .next()
            .and_then(|h| h.rsplit_once('-'))
            .map(|(h, _)| h)
            .unwrap_or_default();
        for e in page["events"].as_array().into_iter().flatten() {
            say(
                bar,
                format!(
                    "          [{host}] {}",
                    e["message"].as_str().unwrap_or_default()
                ),
            );
        }
        if let Some(next) = page["nextForwardToken"].as_str() {
            *token = Some(next.to_string());
        }
    }
}
