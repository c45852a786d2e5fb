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
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    cove_wire::query::query_param(req.uri().query(), name)
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
    // Domain ids are unique across accounts and regions; the app is keyed
    // in its domain's.
    let world = store.snapshot();
    let app = world
        .studio_domains
        .values()
        .find(|d| d.id == domain)
        .and_then(|d| {
            let key = StudioApp::key_of(
                &d.region,
                &d.account_id,
                &domain,
                &profile,
                "JupyterServer",
                "default",
            );
            world.studio_apps.get(&key).cloned()
        });
    // On an agent's host, the app is reached through the agent's relay.
    let route = app
        .as_ref()
        .filter(|a| a.status == cove_model::studio::AppStatus::InService)
        .and_then(|a| {
            cove_invoke::Route::to(
                &world,
                a.placed_on.as_deref(),
                a.netns_path.as_deref(),
                || format!("{}:{}", a.tunnel_id(), cove_jobs::contract::STUDIO_PORT),
            )
        });
    let Some(route) = route else {
        let status = app.map_or("not created", |a| a.status.as_str());
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("The JupyterServer app of {profile} is not running ({status}); create it with CreateApp."),
        );
    };
    match forward(&route, req).await {
        Ok(r) => r,
        Err(e) => plain(
            StatusCode::BAD_GATEWAY,
            format!("The app did not answer: {e}"),
        ),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;

/// Idle kept-alive connections into Studio apps, by route: a page
/// of JupyterLab is dozens of requests, and a new connection into the
/// namespace costs a thread hop and a handshake each.
static IDLE: std::sync::LazyLock<Mutex<HashMap<String, Vec<Sender>>>> =
    std::sync::LazyLock::new(Default::default);
/// Most idle connections kept per app.
const MAX_IDLE: usize = 16;

/// An idle connection ready for a request, or a new one.
async fn checkout(route: &cove_invoke::Route) -> anyhow::Result<Sender> {
    let reused = {
        let mut idle = IDLE.lock().expect("lock");
        let list = idle.entry(format!("{route:?}")).or_default();
        // Closed ones go; busy ones (a body still streaming) stay for later.
        list.retain(|s| !s.is_closed());
        list.iter()
            .position(|s| s.is_ready())
            .map(|i| list.swap_remove(i))
    };
    if let Some(sender) = reused {
        return Ok(sender);
    }
    let stream = route.connect(cove_jobs::contract::STUDIO_PORT).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(stream).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

fn checkin(route: &cove_invoke::Route, sender: Sender) {
    let mut idle = IDLE.lock().expect("lock");
    let list = idle.entry(format!("{route:?}")).or_default();
    if list.len() < MAX_IDLE {
        list.push(sender);
    }
}

/// Sends the request to the app inside its namespace and streams the answer
/// back; an upgraded connection is spliced both ways.
async fn forward(
    route: &cove_invoke::Route,
    mut req: Request<Body>,
) -> anyhow::Result<Response<Body>> {
    let mut sender = checkout(route).await?;
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
    } else if !upgrade {
        // Ready again once this answer's body has been read.
        checkin(route, sender);
    }
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}
