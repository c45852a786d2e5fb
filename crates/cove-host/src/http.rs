//! HTTP to a serving container on 127.0.0.1:8080 inside its network
//! namespace: `/ping` and the `/invocations` of batch transform and the
//! recommender.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The port a serving container listens on (the SageMaker contract).
pub const SERVING_PORT: u16 = 8080;

/// One HTTP/1.1 request on a kept-alive connection to a serving container.
pub fn exchange(
    stream: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let s = stream.get_mut();
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut line = String::new();
    stream.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = None;
    loop {
        line.clear();
        stream.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            }
        }
    }
    let mut out = Vec::new();
    match length {
        Some(n) => {
            out.resize(n, 0);
            stream.read_exact(&mut out)?;
        }
        None => {
            stream.read_to_end(&mut out)?;
        }
    }
    Ok((status, out))
}

/// Opens a connection to the serving container from inside its namespace.
pub fn connect(netns_path: &str) -> std::io::Result<BufReader<TcpStream>> {
    let s = cove_net::netns::run_in_path(netns_path, || {
        TcpStream::connect(("127.0.0.1", SERVING_PORT))
    })??;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    s.set_nodelay(true)?;
    Ok(BufReader::new(s))
}

/// `GET /ping` on 127.0.0.1:8080 inside the namespace at `netns_path`.
pub fn ping(netns_path: &str) -> bool {
    cove_net::netns::run_in_path(netns_path, || {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], SERVING_PORT));
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
    })
    .unwrap_or(false)
}
