//! The Studio front: `/_cove/studio/<domain>/<profile>/…` on Cove's HTTP
//! listener.
//!
//! - `auth?token=…` (the URL `CreatePresignedDomainUrl` gives) checks the
//!   signed login token, sets a session cookie for that user and redirects
//!   to the landing page.
//! - Every other request needs that cookie. It is proxied to the user's
//!   `JupyterServer` app on port 8888 inside the app's ENI namespace,
//!   WebSocket upgrades (Jupyter's kernels) included.
//!
//! The app serves under the same path prefix, so nothing is rewritten.

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use cove_model::studio::StudioApp;
use cove_sagemaker::studio;
use cove_store::Store;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

const PREFIX: &str = "/_cove/studio/";

fn plain(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Body::from(message.into() + "\n"));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn cookie_name(profile: &str) -> String {
    format!(
        "cove_studio_{}",
        profile.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
}

fn cookie<'r>(req: &'r Request<Body>, name: &str) -> Option<&'r str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn query_param(req: &Request<Body>, name: &str) -> Option<String> {
    req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
    })
}

/// Where the presigned URL lands: `LandingUri` as Studio reads it.
fn landing(landing: Option<&str>) -> &str {
    match landing {
        Some(l) if !l.contains(':') && !l.starts_with('/') && !l.contains("..") => l,
        _ => "jupyter/default/lab",
    }
}

pub async fn handle(store: Arc<Store>, key: Arc<Vec<u8>>, req: Request<Body>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    let mut parts = rest.splitn(3, '/');
    let (Some(domain), Some(profile)) = (parts.next(), parts.next()) else {
        return plain(StatusCode::NOT_FOUND, "Not a Studio URL.");
    };
    let (domain, profile) = (domain.to_string(), profile.to_string());
    let tail = parts.next().unwrap_or_default();
    let base = format!("{PREFIX}{domain}/{profile}/");
    if tail == "auth" {
        let token = query_param(&req, "token").unwrap_or_default();
        let Some(session) = studio::check(&key, &token, "login", &domain, &profile) else {
            return plain(StatusCode::FORBIDDEN, "Invalid or expired URL.");
        };
        let value = studio::session_cookie(&key, &domain, &profile, session);
        let target = format!("{base}{}", landing(query_param(&req, "landing").as_deref()));
        let mut r = plain(StatusCode::FOUND, "");
        let headers = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&target) {
            headers.insert(header::LOCATION, v);
        }
        let set = format!(
            "{}={value}; Path={base}; Max-Age={session}; HttpOnly; SameSite=Lax",
            cookie_name(&profile)
        );
        if let Ok(v) = HeaderValue::from_str(&set) {
            headers.insert(header::SET_COOKIE, v);
        }
        return r;
    }
    let authorized = cookie(&req, &cookie_name(&profile))
        .and_then(|c| studio::check(&key, c, "session", &domain, &profile))
        .is_some();
    if !authorized {
        return plain(
            StatusCode::FORBIDDEN,
            "Not signed in to this Studio user profile: open a URL from CreatePresignedDomainUrl.",
        );
    }
    let app_key = StudioApp::key_of(&domain, &profile, "JupyterServer", "default");
    let app = store.snapshot().studio_apps.get(&app_key).cloned();
    let Some(netns) = app
        .as_ref()
        .filter(|a| a.status == "InService")
        .and_then(|a| a.netns_path.clone())
    else {
        let status = app
            .map(|a| a.status)
            .unwrap_or_else(|| "not created".into());
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("The JupyterServer app of {profile} is not running ({status}); create it with CreateApp."),
        );
    };
    match forward(&netns, req).await {
        Ok(r) => r,
        Err(e) => plain(
            StatusCode::BAD_GATEWAY,
            format!("The app did not answer: {e}"),
        ),
    }
}

/// Sends the request to the app inside its namespace and streams the answer
/// back; an upgraded connection is spliced both ways.
async fn forward(netns: &str, mut req: Request<Body>) -> anyhow::Result<Response<Body>> {
    let ns = netns.to_string();
    let stream = tokio::task::spawn_blocking(move || {
        cove_net::netns::run_in_path(&ns, || {
            let s =
                std::net::TcpStream::connect(("127.0.0.1", cove_sagemaker::contract::STUDIO_PORT))?;
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            Ok::<_, std::io::Error>(s)
        })
    })
    .await???;
    let stream = tokio::net::TcpStream::from_std(stream)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut response = sender.send_request(req).await?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let app_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                if let (Ok(client), Ok(app)) = (client_upgrade.await, app_upgrade.await) {
                    let (mut client, mut app) = (TokioIo::new(client), TokioIo::new(app));
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut app).await;
                }
            });
        }
    }
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}
