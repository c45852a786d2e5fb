//! The console's routes and pages. Every page but sign-in needs a
//! session; each renders the signed-in account's view of the store.

use crate::html::{esc, page, query_value, resource_link, status, table, Live, Section, BASE};
use crate::map::{self, Marks};
use crate::session::{cookie, expired_cookie, Session};
use crate::Console;
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use cove_model::jobs::JobKind;
use cove_model::vpc::{NetworkInterface, SgPeer, SgRule};
use cove_model::world::World;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

type Params = Query<HashMap<String, String>>;

/// The console's routes, at their full paths under [`BASE`].
pub fn router(console: Arc<Console>) -> Router {
    let at = |p: &str| format!("{BASE}{p}");
    Router::new()
        .route(BASE, get(|| async { Redirect::to(&format!("{BASE}/")) }))
        .route(&at("/"), get(overview))
        .route(&at("/login"), get(login_form).post(login))
        .route(&at("/logout"), post(logout))
        .route(&at("/vpcs/{id}"), get(vpc_page))
        .route(&at("/resource/{id}"), get(resource_page))
        .route(&at("/reach"), get(reach_page))
        .route(&at("/sagemaker"), get(sagemaker_page))
        .route(&at("/sagemaker/{kind}/{name}"), get(job_page))
        .route(&at("/flow-logs/{eni}"), get(flow_log_page))
        .route(&at("/events"), get(events))
        .route(&at("/live.js"), get(live_script))
        .with_state(console)
}

/// Headers every console answer carries: no framing, no caching, scripts
/// only from Cove itself.
fn html_response(status_code: StatusCode, body: String) -> Response {
    let mut r = (status_code, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; style-src 'unsafe-inline'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    r
}

fn cookie_header(headers: &HeaderMap) -> &str {
    headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The session, if the request carries a good one.
fn signed_in(c: &Console, headers: &HeaderMap) -> Option<Session> {
    c.sessions.session(&c.credentials, cookie_header(headers))
}

/// Where a request without a session is sent.
fn to_sign_in() -> Response {
    Redirect::to(&format!("{BASE}/login")).into_response()
}

/// Renders a page off the async workers (logs are read from a database).
async fn render<F>(c: Arc<Console>, headers: HeaderMap, f: F) -> Response
where
    F: FnOnce(&Console, &Session, &World) -> Result<String, (StatusCode, String)> + Send + 'static,
{
    let Some(session) = signed_in(&c, &headers) else {
        return to_sign_in();
    };
    let out = tokio::task::spawn_blocking(move || {
        let world = c.store.view(&session.principal.account_id);
        f(&c, &session, &world)
    })
    .await;
    match out {
        Ok(Ok(body)) => html_response(StatusCode::OK, body),
        Ok(Err((code, body))) => html_response(code, body),
        Err(e) => html_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("console page failed: {}", esc(&e.to_string())),
        ),
    }
}

/// The API calls a page stands for: `(service, operation, input)`.
type Reads<'a> = &'a [(&'static str, &'a str, serde_json::Value)];

/// Whether the viewer's identity policies allow the reads behind a page
/// (always, with IAM not enforced); the refusal is the page to show.
fn may_read(c: &Console, s: &Session, reads: Reads) -> Result<(), (StatusCode, String)> {
    let Some(authorize) = &c.authorizer else {
        return Ok(());
    };
    for (service, operation, input) in reads {
        let ctx = cove_wire::dispatch::RequestContext {
            request_id: format!("console-{operation}"),
            region: c.region.clone(),
            operation: (*operation).to_string(),
            principal: s.principal.clone(),
            source_ip: None,
            via_endpoint: None,
            on_behalf_of: None,
        };
        if let Err(e) = authorize(&ctx, service, input) {
            return Err((
                StatusCode::FORBIDDEN,
                page(
                    "Not authorized",
                    Section::None,
                    Live::No,
                    Some(&s.principal.account_id),
                    &format!(
                        "<h1>Not authorized</h1><p class=\"error\" role=\"alert\">{service}:{operation}: {}</p>",
                        esc(&e.message)
                    ),
                ),
            ));
        }
    }
    Ok(())
}

/// The reads behind a VPC's map and tables.
fn vpc_reads() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    [
        "DescribeVpcs",
        "DescribeSubnets",
        "DescribeRouteTables",
        "DescribeSecurityGroups",
        "DescribeNetworkAcls",
        "DescribeNetworkInterfaces",
        "DescribeInternetGateways",
        "DescribeNatGateways",
        "DescribeVpcEndpoints",
    ]
    .into_iter()
    .map(|op| ("ec2", op, no_input()))
    .collect()
}

/// The reads behind the SageMaker page.
fn sagemaker_reads() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    [
        "ListTrainingJobs",
        "ListProcessingJobs",
        "ListTransformJobs",
        "ListCompilationJobs",
        "ListInferenceRecommendationsJobs",
        "ListEndpoints",
        "ListApps",
    ]
    .into_iter()
    .map(|op| ("sagemaker", op, no_input()))
    .collect()
}

fn no_input() -> serde_json::Value {
    serde_json::json!({})
}

/// A page of the signed-in account.
fn account_page(s: &Session, title: &str, section: Section, live: Live, body: &str) -> String {
    page(title, section, live, Some(&s.principal.account_id), body)
}

fn not_found(s: &Session, what: &str) -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        page(
            "Not found",
            Section::None,
            Live::No,
            Some(&s.principal.account_id),
            &format!("<h1>Not found</h1><p>{}</p>", esc(what)),
        ),
    )
}

// ---- sign-in ----

async fn login_form() -> Response {
    html_response(StatusCode::OK, login_page(None))
}

fn login_page(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    page(
        "Sign in",
        Section::None,
        Live::No,
        None,
        &format!(
            "<section class=\"card login\"><h1>Sign in to Cove</h1>\
             <p class=\"muted\">Use an access key of this Cove: one of its configured pairs or an IAM user's key.</p>{error}\
             <form method=\"post\" action=\"{BASE}/login\">\
             <label for=\"access_key_id\">Access key ID</label><input id=\"access_key_id\" name=\"access_key_id\" autocomplete=\"username\" required>\
             <label for=\"secret_access_key\">Secret access key</label><input id=\"secret_access_key\" name=\"secret_access_key\" type=\"password\" autocomplete=\"current-password\" required>\
             <button class=\"primary\" type=\"submit\">Sign in</button></form></section>"
        ),
    )
}

async fn login(
    State(c): State<Arc<Console>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let key = form.get("access_key_id").map(String::as_str).unwrap_or("");
    let secret = form
        .get("secret_access_key")
        .map(String::as_str)
        .unwrap_or("");
    let c2 = c.clone();
    let (key, secret) = (key.to_string(), secret.to_string());
    let outcome =
        tokio::task::spawn_blocking(move || c2.sessions.sign_in(&c2.credentials, &key, &secret))
            .await;
    match outcome {
        Ok(Ok(token)) => {
            tracing::info!("console: signed in");
            let mut r = Redirect::to(&format!("{BASE}/")).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie(&token)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(Err(why)) => html_response(StatusCode::UNAUTHORIZED, login_page(Some(why))),
        Err(_) => html_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            login_page(Some("Signing in failed.")),
        ),
    }
}

async fn logout(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    c.sessions.sign_out(cookie_header(&headers));
    let mut r = Redirect::to(&format!("{BASE}/login")).into_response();
    if let Ok(v) = HeaderValue::from_str(&expired_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

// ---- live updates ----

async fn live_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crate::html::LIVE_SCRIPT,
    )
        .into_response()
}

/// Server-sent events: `change` when the store moves on, `tick` every two
/// seconds otherwise (pages showing logs refresh on both).
async fn events(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if signed_in(&c, &headers).is_none() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let seen = c.store.generation();
    let stream = futures::stream::unfold((c, seen), |(c, seen)| async move {
        let store = c.store.clone();
        let now = tokio::task::spawn_blocking(move || {
            store.wait_for_change(seen, Duration::from_secs(2))
        })
        .await
        .unwrap_or(seen);
        let event = if now > seen {
            Event::default().event("change").data(now.to_string())
        } else {
            Event::default().event("tick").data(now.to_string())
        };
        Some((Ok::<_, std::convert::Infallible>(event), (c, now)))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

// ---- VPCs ----

fn name_of(w: &World, id: &str) -> String {
    w.tags_of(id)
        .get("Name")
        .map(|n| esc(n))
        .unwrap_or_default()
}

fn overview_body(c: &Console, s: &Session, w: &World) -> Result<String, (StatusCode, String)> {
    may_read(c, s, &[("ec2", "DescribeVpcs", no_input())])?;
    let rows: Vec<Vec<String>> = w
        .vpcs
        .values()
        .map(|v| {
            let cidrs: Vec<String> = v.cidrs().iter().map(|c| c.to_string()).collect();
            vec![
                format!(
                    "<a class=\"mono\" href=\"{BASE}/vpcs/{}\">{}</a>",
                    query_value(&v.id),
                    esc(&v.id)
                ),
                name_of(w, &v.id),
                esc(&cidrs.join(", ")),
                esc(&v.region),
                if v.is_default {
                    "yes".into()
                } else {
                    "no".into()
                },
                w.subnets
                    .values()
                    .filter(|x| x.vpc_id == v.id)
                    .count()
                    .to_string(),
                w.network_interfaces
                    .values()
                    .filter(|x| x.vpc_id == v.id)
                    .count()
                    .to_string(),
            ]
        })
        .collect();
    let body = format!(
        "<h1>Your VPCs</h1><section class=\"card\">{}</section><p class=\"muted\">\
         Open a VPC for its resource map, security groups, network ACLs and route tables.</p>",
        table(
            &[
                "VPC ID",
                "Name",
                "IPv4 CIDR",
                "Region",
                "Default",
                "Subnets",
                "Network interfaces"
            ],
            &rows
        )
    );
    Ok(account_page(
        s,
        "VPCs",
        Section::Vpcs,
        Live::OnChange,
        &body,
    ))
}

async fn overview(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    render(c, headers, overview_body).await
}

fn ports(from: Option<i64>, to: Option<i64>) -> String {
    match (from, to) {
        (Some(-1), _) | (None, None) => "all".into(),
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}-{b}"),
        (Some(a), None) | (None, Some(a)) => a.to_string(),
    }
}

/// A rule's protocol as the console's tables show it (`-1` is "all").
fn protocol_text(p: cove_model::protocol::Protocol) -> String {
    match p {
        cove_model::protocol::Protocol::All => "all".into(),
        other => esc(&other.to_string()),
    }
}

fn peer(p: &SgPeer) -> String {
    match p {
        SgPeer::Cidr { cidr } => esc(&cidr.to_string()),
        SgPeer::PrefixList { id } => resource_link(id),
        SgPeer::Group { group_id, .. } => resource_link(group_id),
    }
}

fn rule_rows(rules: &[SgRule]) -> Vec<Vec<String>> {
    rules
        .iter()
        .map(|r| {
            vec![
                format!("<span class=\"mono\">{}</span>", esc(&r.id)),
                protocol_text(r.protocol),
                ports(r.from_port, r.to_port),
                peer(&r.peer),
                esc(r.description.as_deref().unwrap_or("")),
            ]
        })
        .collect()
}

fn eni_rows(enis: &[&NetworkInterface], owners: &HashMap<String, String>) -> Vec<Vec<String>> {
    enis.iter()
        .map(|e| {
            vec![
                resource_link(&e.id),
                resource_link(&e.subnet_id),
                esc(&e.private_ip.to_string()),
                esc(owners.get(&e.id).map(String::as_str).unwrap_or(&e.description)),
                e.group_ids.iter().map(|g| resource_link(g)).collect::<Vec<_>>().join(" "),
                status(&e.status.to_string()),
                format!(
                    "<a href=\"{BASE}/flow-logs/{id}\">flow log</a> · <a href=\"{BASE}/reach?from={id}\">reach from</a>",
                    id = query_value(&e.id)
                ),
            ]
        })
        .collect()
}

/// The security groups, network ACLs and route tables of a VPC, as tables.
fn vpc_tables(w: &World, vpc_id: &str, owners: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let enis: Vec<&NetworkInterface> = w
        .network_interfaces
        .values()
        .filter(|e| e.vpc_id == vpc_id)
        .map(|e| e.as_ref())
        .collect();
    let _ = write!(
        out,
        "<h2 id=\"enis\">Network interfaces</h2><section class=\"card\">{}</section>",
        table(
            &[
                "ENI",
                "Subnet",
                "Private IP",
                "Owner",
                "Security groups",
                "Status",
                ""
            ],
            &eni_rows(&enis, owners)
        )
    );
    out.push_str("<h2 id=\"security-groups\">Security groups</h2>");
    for g in w.security_groups.values().filter(|g| g.vpc_id == vpc_id) {
        let _ = write!(
            out,
            "<section class=\"card\" data-group=\"{id}\"><h3>{link} · {name}</h3>\
             <p class=\"muted\">{desc}</p>\
             <h4>Inbound rules</h4>{inbound}<h4>Outbound rules</h4>{outbound}</section>",
            id = esc(&g.id),
            link = resource_link(&g.id),
            name = esc(&g.name),
            desc = esc(&g.description),
            inbound = table(
                &["Rule ID", "Protocol", "Ports", "Source", "Description"],
                &rule_rows(&g.ingress)
            ),
            outbound = table(
                &["Rule ID", "Protocol", "Ports", "Destination", "Description"],
                &rule_rows(&g.egress)
            ),
        );
    }
    out.push_str("<h2 id=\"network-acls\">Network ACLs</h2>");
    for a in w.network_acls.values().filter(|a| a.vpc_id == vpc_id) {
        let mut entries = a.entries.clone();
        entries.sort_by_key(|e| (e.egress, e.rule_number));
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| {
                vec![
                    if e.rule_number == 32767 {
                        "*".into()
                    } else {
                        e.rule_number.to_string()
                    },
                    if e.egress {
                        "outbound".into()
                    } else {
                        "inbound".into()
                    },
                    protocol_text(e.protocol),
                    ports(e.from_port, e.to_port),
                    esc(&e.cidr.to_string()),
                    status(if e.allow { "ALLOW" } else { "DENY" }),
                ]
            })
            .collect();
        let subnets: Vec<String> = a
            .associations
            .iter()
            .map(|s| resource_link(&s.subnet_id))
            .collect();
        let _ = write!(
            out,
            "<section class=\"card\"><h3>{}{}</h3><p>Subnets: {}</p>{}</section>",
            resource_link(&a.id),
            if a.is_default { " · default" } else { "" },
            if subnets.is_empty() {
                "none".into()
            } else {
                subnets.join(" ")
            },
            table(
                &["Rule #", "Direction", "Protocol", "Ports", "CIDR", "Action"],
                &rows
            )
        );
    }
    out.push_str("<h2 id=\"route-tables\">Route tables</h2>");
    for rt in w.route_tables.values().filter(|r| r.vpc_id == vpc_id) {
        let main = rt.associations.iter().any(|a| a.main);
        let subnets: Vec<String> = w
            .subnets
            .values()
            .filter(|s| {
                s.vpc_id == vpc_id && map::route_table_of(w, vpc_id, &s.id) == Some(rt.id.as_str())
            })
            .map(|s| resource_link(&s.id))
            .collect();
        let rows: Vec<Vec<String>> = rt
            .routes
            .iter()
            .map(|r| {
                let dest = r
                    .destination_cidr
                    .map(|c| esc(&c.to_string()))
                    .or_else(|| r.destination_prefix_list_id.as_deref().map(resource_link))
                    .unwrap_or_default();
                let target = r.target.member().1;
                let target = if target == "local" {
                    "local".into()
                } else {
                    resource_link(target)
                };
                vec![dest, target, esc(&format!("{:?}", r.origin))]
            })
            .collect();
        let _ = write!(
            out,
            "<section class=\"card\"><h3>{}{}</h3><p>Subnets: {}</p>{}</section>",
            resource_link(&rt.id),
            if main { " · main" } else { "" },
            if subnets.is_empty() {
                "none".into()
            } else {
                subnets.join(" ")
            },
            table(&["Destination", "Target", "Origin"], &rows)
        );
    }
    out
}

/// A VPC's page without its frame: the map and the tables; `None` when
/// the world has no such VPC.
pub fn vpc_page_body(w: &World, id: &str) -> Option<String> {
    let owners = map::eni_owners(w);
    let layout = map::layout_with_owners(w, id, &owners)?;
    Some(format!(
        "<h1>{} {}</h1><h2>Resource map</h2><div class=\"map\">{}</div>{}",
        esc(id),
        name_of(w, id),
        map::render(&layout, &Marks::default()),
        vpc_tables(w, id, &owners)
    ))
}

fn vpc_body(c: &Console, s: &Session, w: &World, id: &str) -> Result<String, (StatusCode, String)> {
    may_read(c, s, &vpc_reads())?;
    let Some(body) = vpc_page_body(w, id) else {
        return Err(not_found(s, &format!("The vpc ID '{id}' does not exist")));
    };
    Ok(account_page(s, id, Section::Vpcs, Live::OnChange, &body))
}

async fn vpc_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    render(c, headers, move |c, s, w| vpc_body(c, s, w, &id)).await
}

/// `vpc-0a1b…`, `subnet-…`, `sg-…`: an EC2 resource id, which is linked.
fn looks_like_id(text: &str) -> bool {
    text.split_once('-').is_some_and(|(prefix, hex)| {
        (2..=8).contains(&prefix.len())
            && prefix.bytes().all(|b| b.is_ascii_lowercase())
            && (8..=17).contains(&hex.len())
            && hex
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// A stored document's fields as a table.
fn fields_table(doc: &serde_json::Value) -> String {
    let rows: Vec<Vec<String>> = match doc {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let cell = if looks_like_id(&text) {
                    resource_link(&text)
                } else {
                    format!("<span class=\"mono\">{}</span>", esc(&text))
                };
                vec![esc(k), cell]
            })
            .collect(),
        other => vec![vec!["value".into(), esc(&other.to_string())]],
    };
    table(&["Field", "Value"], &rows)
}

/// The stored document of any VPC resource by id, and the VPC it is in.
fn find_resource(w: &World, id: &str) -> Option<(&'static str, serde_json::Value, Option<String>)> {
    macro_rules! look {
        ($table:ident, $label:literal, |$r:ident| $vpc:expr) => {
            if let Some($r) = w.$table.get(id) {
                return Some((
                    $label,
                    serde_json::to_value($r.as_ref()).unwrap_or_default(),
                    $vpc,
                ));
            }
        };
    }
    look!(vpcs, "VPC", |r| Some(r.id.clone()));
    look!(subnets, "Subnet", |r| Some(r.vpc_id.clone()));
    look!(security_groups, "Security group", |r| Some(
        r.vpc_id.clone()
    ));
    look!(network_acls, "Network ACL", |r| Some(r.vpc_id.clone()));
    look!(route_tables, "Route table", |r| Some(r.vpc_id.clone()));
    look!(internet_gateways, "Internet gateway", |r| r
        .attached_vpc_id
        .clone());
    look!(nat_gateways, "NAT gateway", |r| Some(r.vpc_id.clone()));
    look!(vpc_endpoints, "VPC endpoint", |r| Some(r.vpc_id.clone()));
    look!(network_interfaces, "Network interface", |r| Some(
        r.vpc_id.clone()
    ));
    look!(vpc_peering_connections, "Peering connection", |r| Some(
        r.requester_vpc_id.clone()
    ));
    look!(addresses, "Elastic IP", |_r| None);
    look!(flow_logs, "Flow log", |_r| None);
    look!(managed_prefix_lists, "Prefix list", |_r| None);
    None
}

fn resource_body(
    c: &Console,
    s: &Session,
    w: &World,
    id: &str,
) -> Result<String, (StatusCode, String)> {
    may_read(c, s, &vpc_reads())?;
    let Some((label, doc, vpc)) = find_resource(w, id) else {
        return Err(not_found(
            s,
            &format!("No resource of yours has the id '{id}'."),
        ));
    };
    let mut body = format!("<h1>{label} {}</h1>", esc(id));
    if let Some(vpc) = vpc.filter(|v| w.vpcs.contains_key(v)) {
        let _ = write!(
            body,
            "<p>In <a class=\"mono\" href=\"{BASE}/vpcs/{q}\">{v}</a> (resource map)</p>",
            q = query_value(&vpc),
            v = esc(&vpc)
        );
    }
    if id.starts_with("eni-") {
        let owner = map::eni_owners(w)
            .get(id)
            .cloned()
            .unwrap_or_else(|| "no SageMaker resource or gateway".into());
        let _ = write!(
            body,
            "<p>Owner: {}. <a href=\"{BASE}/flow-logs/{q}\">Flow log records</a> · <a href=\"{BASE}/reach?from={q}\">Can it reach…?</a></p>",
            esc(&owner),
            q = query_value(id)
        );
    }
    let tags = w.tags_of(id);
    if !tags.is_empty() {
        let rows: Vec<Vec<String>> = tags.iter().map(|(k, v)| vec![esc(k), esc(v)]).collect();
        let _ = write!(
            body,
            "<h2>Tags</h2><section class=\"card\">{}</section>",
            table(&["Key", "Value"], &rows)
        );
    }
    let _ = write!(
        body,
        "<h2>Details</h2><section class=\"card\">{}</section>",
        fields_table(&doc)
    );
    Ok(account_page(s, id, Section::Vpcs, Live::OnChange, &body))
}

async fn resource_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    render(c, headers, move |c, s, w| resource_body(c, s, w, &id)).await
}

// ---- can A reach B? ----

const SERVICES: [&str; 6] = [
    "s3",
    "sts",
    "logs",
    "ec2",
    "api.sagemaker",
    "runtime.sagemaker",
];

fn reach_form(w: &World, from: &str, to: &str, protocol: &str, port: &str) -> String {
    let owners = map::eni_owners(w);
    let mut options = String::new();
    for e in w.network_interfaces.values() {
        let owner = owners
            .get(&e.id)
            .map(String::as_str)
            .unwrap_or(&e.description);
        let _ = write!(
            options,
            "<option value=\"{}\">{} · {}</option>",
            esc(&e.id),
            esc(&e.private_ip.to_string()),
            esc(owner)
        );
    }
    let mut destinations = options.clone();
    for s in w.subnets.values() {
        let _ = write!(
            options,
            "<option value=\"{}\">a new ENI in {}</option>",
            esc(&s.id),
            esc(&s.cidr.to_string())
        );
    }
    options.push_str("<option value=\"internet\">a host on the internet</option>");
    destinations.push_str("<option value=\"internet\">the internet</option>");
    for s in SERVICES {
        let _ = write!(
            destinations,
            "<option value=\"{s}\">the {s} service</option>"
        );
    }
    let protocols: String = ["tcp", "udp", "icmp"]
        .iter()
        .map(|p| {
            format!(
                "<option{}>{p}</option>",
                if *p == protocol { " selected" } else { "" }
            )
        })
        .collect();
    format!(
        "<section class=\"card\"><form class=\"ask\" method=\"get\" action=\"{BASE}/reach\">\
         <label>Source<input name=\"from\" list=\"sources\" value=\"{from}\" placeholder=\"eni-…, subnet-… or internet\" required size=\"26\"></label>\
         <label>Destination<input name=\"to\" list=\"destinations\" value=\"{to}\" placeholder=\"eni-…, address, s3, internet\" required size=\"26\"></label>\
         <label>Protocol<select name=\"protocol\">{protocols}</select></label>\
         <label>Port<input name=\"port\" type=\"number\" min=\"0\" max=\"65535\" value=\"{port}\" size=\"6\"></label>\
         <button class=\"primary\" type=\"submit\">Analyze path</button>\
         <datalist id=\"sources\">{options}</datalist><datalist id=\"destinations\">{destinations}</datalist></form></section>",
        from = esc(from),
        to = esc(to),
        port = esc(port),
    )
}

fn hop_rows(hops: &[cove_reach::Hop]) -> Vec<Vec<String>> {
    hops.iter()
        .enumerate()
        .map(|(i, h)| {
            let id = &h.component.id;
            let component = if h.component.kind == cove_reach::Kind::Address {
                esc(id)
            } else {
                resource_link(id)
            };
            vec![
                (i + 1).to_string(),
                esc(h.component.kind.label()),
                component,
                esc(&cove_reach::hop_detail(h)),
            ]
        })
        .collect()
}

fn reach_body(
    c: &Console,
    s: &Session,
    w: &World,
    q: &HashMap<String, String>,
) -> Result<String, (StatusCode, String)> {
    may_read(
        c,
        s,
        &[
            ("ec2", "DescribeNetworkInterfaces", no_input()),
            ("ec2", "StartNetworkInsightsAnalysis", no_input()),
        ],
    )?;
    let get = |k: &str| q.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
    let (from, to, port) = (get("from"), get("to"), get("port"));
    let protocol = match get("protocol").as_str() {
        "" => "tcp".to_string(),
        p => p.to_string(),
    };
    let mut body = format!(
        "<h1>Can A reach B?</h1>{}",
        reach_form(w, &from, &to, &protocol, &port)
    );
    if !from.is_empty() && !to.is_empty() {
        match answer(w, &from, &to, &protocol, &port) {
            Ok(html) => body.push_str(&html),
            Err(e) => {
                let _ = write!(
                    body,
                    "<section class=\"card\"><p class=\"error\" role=\"alert\">{}</p></section>",
                    esc(&e)
                );
            }
        }
    }
    Ok(account_page(
        s,
        "Can A reach B?",
        Section::Reach,
        Live::No,
        &body,
    ))
}

async fn reach_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    render(c, headers, move |c, s, w| reach_body(c, s, w, &q)).await
}

/// The analysis of one question, as the result section of the page.
fn answer(w: &World, from: &str, to: &str, protocol: &str, port: &str) -> Result<String, String> {
    let mut world = w.clone();
    let proto = cove_reach::Protocol::parse(protocol)
        .ok_or_else(|| format!("{protocol}: the protocol is tcp, udp or icmp"))?;
    let port = match port {
        "" => None,
        p => Some(
            p.parse::<u16>()
                .map_err(|_| format!("{p}: a port is a number from 0 to 65535"))?,
        ),
    };
    let source = cove_reach::question::source_of(&mut world, from, &[])?;
    let target = cove_reach::question::target_of(&world, &source, to)?;
    let query = cove_reach::Query {
        source: source.clone(),
        target,
        protocol: proto,
        port: port.or((proto != cove_reach::Protocol::Icmp).then_some(443)),
        source_port: None,
    };
    let a = cove_reach::analyze(&world, &query).map_err(|e| e.0)?;
    let mut out = String::from("<section class=\"card\" id=\"answer\">");
    let _ = write!(
        out,
        "<p class=\"verdict {}\" data-verdict=\"{}\">{} → {}: {}</p><p class=\"mono\">{}</p>",
        if a.found { "good" } else { "bad" },
        if a.found {
            "reachable"
        } else {
            "not-reachable"
        },
        esc(from),
        esc(to),
        if a.found {
            "Reachable"
        } else {
            "Not reachable"
        },
        esc(&cove_reach::packet_text(&a.packet))
    );
    if !a.explanations.is_empty() {
        let rows: Vec<Vec<String>> = a
            .explanations
            .iter()
            .map(|e| {
                let mut at = resource_link(&e.component.id);
                for g in &e.security_groups {
                    if *g != e.component.id {
                        at.push(' ');
                        at.push_str(&resource_link(g));
                    }
                }
                vec![
                    format!(
                        "<span class=\"mono\">{}</span>{}",
                        esc(e.code),
                        if e.on_return { " (reply)" } else { "" }
                    ),
                    esc(e.component.kind.label()),
                    at,
                    esc(e.direction.unwrap_or("")),
                    esc(&e.fix),
                ]
            })
            .collect();
        let _ = write!(
            out,
            "<h2>What blocks it</h2>{}",
            table(
                &[
                    "Explanation code",
                    "Component",
                    "Id",
                    "Direction",
                    "What would have to change"
                ],
                &rows
            )
        );
    }
    if !a.forward.is_empty() {
        let _ = write!(
            out,
            "<h2>Path</h2>{}",
            table(&["#", "Component", "Id", "Detail"], &hop_rows(&a.forward))
        );
    }
    if !a.ret.is_empty() {
        let _ = write!(
            out,
            "<h2>Return path</h2>{}",
            table(&["#", "Component", "Id", "Detail"], &hop_rows(&a.ret))
        );
    }
    out.push_str("</section>");
    // The source's VPC, with the path and the blocking settings outlined.
    let vpc = match &source {
        cove_reach::Source::Eni(eni) => world.network_interfaces.get(eni).map(|e| e.vpc_id.clone()),
        _ => a.forward.iter().find_map(|h| h.vpc.clone()),
    };
    if let Some(layout) = vpc.and_then(|v| map::layout(&world, &v)) {
        let mut marks = Marks::default();
        for h in a.forward.iter().chain(&a.ret) {
            marks.on_path.insert(h.component.id.clone());
            marks.on_path.extend(h.subnet.clone());
        }
        for e in &a.explanations {
            marks.blocked.insert(e.component.id.clone());
            marks.blocked.extend(e.security_groups.iter().cloned());
        }
        let _ = write!(
            out,
            "<h2>On the map</h2><div class=\"map\">{}</div>",
            map::render(&layout, &marks)
        );
    }
    Ok(out)
}

// ---- SageMaker ----

fn job_link(kind: &str, name: &str) -> String {
    format!(
        "<a href=\"{BASE}/sagemaker/{kind}/{}\">{}</a>",
        query_value(name),
        esc(name)
    )
}

fn eni_links<'a>(enis: impl Iterator<Item = &'a String>) -> String {
    enis.map(|e| resource_link(e)).collect::<Vec<_>>().join(" ")
}

/// A titled card holding a table.
fn card(body: &mut String, title: &str, headers: &[&str], rows: &[Vec<String>]) {
    let _ = write!(
        body,
        "<h2>{}</h2><section class=\"card\">{}</section>",
        esc(title),
        table(headers, rows)
    );
}

/// The columns every job listing has.
const JOB_COLUMNS: [&str; 5] = ["Name", "Status", "Created", "ENIs", "Failure reason"];

fn job_row<'a>(
    link: String,
    state: String,
    created: &str,
    enis: impl Iterator<Item = &'a String>,
    failure: Option<&str>,
) -> Vec<String> {
    vec![
        link,
        status(&state),
        esc(created),
        eni_links(enis),
        esc(failure.unwrap_or("")),
    ]
}

fn sagemaker_body(c: &Console, s: &Session, w: &World) -> Result<String, (StatusCode, String)> {
    may_read(c, s, &sagemaker_reads())?;
    let mut body = String::from("<h1>SageMaker</h1>");
    for (kind, word, title) in [
        (JobKind::Training, "training", "Training jobs"),
        (JobKind::Processing, "processing", "Processing jobs"),
    ] {
        let mut jobs: Vec<_> = w
            .sagemaker_jobs
            .values()
            .filter(|j| j.kind == kind)
            .collect();
        jobs.sort_by(|a, b| b.creation_time.cmp(&a.creation_time));
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .map(|j| {
                let mut row = job_row(
                    job_link(word, &j.name),
                    j.status.to_string(),
                    &j.creation_time,
                    j.hosts.iter().filter_map(|h| h.eni_id.as_ref()),
                    j.failure_reason.as_deref(),
                );
                row.insert(2, esc(&j.secondary_status.to_string()));
                row
            })
            .collect();
        let mut columns = JOB_COLUMNS.to_vec();
        columns.insert(2, "Secondary status");
        card(&mut body, title, &columns, &rows);
    }
    let rows: Vec<Vec<String>> = w
        .transform_jobs
        .values()
        .map(|t| {
            job_row(
                job_link("transform", &t.name),
                t.status.to_string(),
                &t.creation_time,
                t.instances.iter().filter_map(|i| i.eni_id.as_ref()),
                t.failure_reason.as_deref(),
            )
        })
        .collect();
    card(&mut body, "Batch transform jobs", &JOB_COLUMNS, &rows);
    let rows: Vec<Vec<String>> = w
        .compilation_jobs
        .values()
        .map(|t| {
            job_row(
                job_link("compilation", &t.name),
                t.status.to_string(),
                &t.creation_time,
                t.eni_id.iter(),
                t.failure_reason.as_deref(),
            )
        })
        .collect();
    card(&mut body, "Compilation jobs", &JOB_COLUMNS, &rows);
    let rows: Vec<Vec<String>> = w
        .recommendation_jobs
        .values()
        .map(|t| {
            job_row(
                job_link("recommendation", &t.name),
                t.status.to_string(),
                &t.creation_time,
                std::iter::empty(),
                t.failure_reason.as_deref(),
            )
        })
        .collect();
    card(&mut body, "Inference recommender jobs", &JOB_COLUMNS, &rows);
    let rows: Vec<Vec<String>> = w
        .sagemaker_endpoints
        .values()
        .map(|e| {
            let mut row = job_row(
                job_link("endpoint", &e.name),
                e.status.to_string(),
                &e.creation_time,
                e.instances.iter().filter_map(|i| i.eni_id.as_ref()),
                e.failure_reason.as_deref(),
            );
            row.insert(3, e.instances.len().to_string());
            row
        })
        .collect();
    card(
        &mut body,
        "Endpoints",
        &[
            "Name",
            "Status",
            "Created",
            "Instances",
            "ENIs",
            "Failure reason",
        ],
        &rows,
    );
    let rows: Vec<Vec<String>> = w
        .studio_apps
        .values()
        .map(|a| {
            let mut row = job_row(
                esc(&format!(
                    "{} ({}, {})",
                    a.app_name, a.app_type, a.user_profile_name
                )),
                a.status.to_string(),
                &a.creation_time,
                a.eni_id.iter(),
                a.failure_reason.as_deref(),
            );
            row.insert(1, resource_link(&a.domain_id));
            row
        })
        .collect();
    card(
        &mut body,
        "Studio apps",
        &[
            "App",
            "Domain",
            "Status",
            "Created",
            "ENI",
            "Failure reason",
        ],
        &rows,
    );
    Ok(account_page(
        s,
        "SageMaker",
        Section::SageMaker,
        Live::OnChange,
        &body,
    ))
}

async fn sagemaker_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    render(c, headers, sagemaker_body).await
}

/// The latest events (up to 500) of a log group's streams starting with `prefix`.
fn log_tail(
    c: &Console,
    s: &Session,
    region: &str,
    account: &str,
    group: &str,
    prefix: &str,
) -> String {
    let input = serde_json::json!({"logGroupName": group});
    if may_read(c, s, &[("logs", "FilterLogEvents", input)]).is_err() {
        return "<p class=\"error\">Not authorized to perform logs:FilterLogEvents on this log group.</p>".into();
    }
    let mut events = Vec::new();
    let mut token = None;
    for _ in 0..50 {
        let req = cove_logs::FilterRequest {
            stream_names: None,
            stream_name_prefix: Some(prefix.to_string()),
            start_time: None,
            end_time: None,
            filter_pattern: None,
            limit: None,
            next_token: token.take(),
        };
        let Ok(page) = c.logs.filter_log_events(region, account, group, &req) else {
            break;
        };
        events.extend(page.events);
        if events.len() > 500 {
            events.drain(..events.len() - 500);
        }
        match page.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    if events.is_empty() {
        return "<p class=\"muted\">No log events yet.</p>".into();
    }
    let mut out = String::from("<pre class=\"log\" aria-label=\"Log events\">");
    for e in events {
        let _ = writeln!(
            out,
            "[{}] {}",
            esc(&e.stream_name),
            esc(e.message.trim_end())
        );
    }
    out.push_str("</pre>");
    out
}

fn job_body(
    c: &Console,
    s: &Session,
    w: &World,
    kind: &str,
    name: &str,
) -> Result<String, (StatusCode, String)> {
    let mut body = String::new();
    match kind {
        "training" | "processing" => {
            let (operation, field) = if kind == "training" {
                ("DescribeTrainingJob", "TrainingJobName")
            } else {
                ("DescribeProcessingJob", "ProcessingJobName")
            };
            may_read(
                c,
                s,
                &[("sagemaker", operation, serde_json::json!({ field: name }))],
            )?;
            let k = if kind == "training" {
                cove_model::jobs::JobKind::Training
            } else {
                cove_model::jobs::JobKind::Processing
            };
            let Some(j) = w
                .sagemaker_jobs
                .values()
                .find(|j| j.kind == k && j.name == name)
            else {
                return Err(not_found(s, &format!("No {kind} job named {name}.")));
            };
            let _ = write!(
                body,
                "<h1>{} job {}</h1><section class=\"card\"><p>Status {} · {} </p>{}</section>",
                if kind == "training" {
                    "Training"
                } else {
                    "Processing"
                },
                esc(&j.name),
                status(&j.status.to_string()),
                esc(&j.secondary_status.to_string()),
                table(
                    &["Field", "Value"],
                    &[
                        vec![
                            "ARN".into(),
                            format!("<span class=\"mono\">{}</span>", esc(&j.arn))
                        ],
                        vec!["Created".into(), esc(&j.creation_time)],
                        vec!["Started".into(), esc(j.start_time.as_deref().unwrap_or(""))],
                        vec!["Ended".into(), esc(j.end_time.as_deref().unwrap_or(""))],
                        vec![
                            "Failure reason".into(),
                            format!(
                                "<span data-field=\"failure-reason\">{}</span>",
                                esc(j.failure_reason.as_deref().unwrap_or(""))
                            )
                        ],
                        vec![
                            "Model artifacts".into(),
                            esc(j.model_artifacts.as_deref().unwrap_or(""))
                        ],
                    ]
                )
            );
            let rows: Vec<Vec<String>> = j
                .transitions
                .iter()
                .map(|t| {
                    vec![
                        esc(&t.status.to_string()),
                        esc(&t.start_time),
                        esc(t.end_time.as_deref().unwrap_or("")),
                        esc(&t.status_message),
                    ]
                })
                .collect();
            let _ = write!(
                body,
                "<h2>Status transitions</h2><section class=\"card\">{}</section>",
                table(&["Status", "Start", "End", "Message"], &rows)
            );
            let rows: Vec<Vec<String>> = j
                .hosts
                .iter()
                .map(|h| {
                    let eni = h
                        .eni_id
                        .as_deref()
                        .map(|e| {
                            format!(
                                "{} · <a href=\"{BASE}/flow-logs/{}\">flow log</a>",
                                resource_link(e),
                                query_value(e)
                            )
                        })
                        .unwrap_or_else(|| "managed network".into());
                    vec![
                        esc(&h.name),
                        eni,
                        esc(h.placed_on.as_deref().unwrap_or("control plane")),
                    ]
                })
                .collect();
            let _ = write!(
                body,
                "<h2>Instances</h2><section class=\"card\">{}</section>",
                table(&["Instance", "ENI", "Host"], &rows)
            );
            let _ = write!(
                body,
                "<h2>Logs</h2>{}",
                log_tail(
                    c,
                    s,
                    &j.region,
                    &j.account_id,
                    k.log_group(),
                    &format!("{}/", j.name)
                )
            );
        }
        "endpoint" => {
            may_read(
                c,
                s,
                &[(
                    "sagemaker",
                    "DescribeEndpoint",
                    serde_json::json!({"EndpointName": name}),
                )],
            )?;
            let Some(e) = w.sagemaker_endpoints.values().find(|e| e.name == name) else {
                return Err(not_found(s, &format!("No endpoint named {name}.")));
            };
            let _ = write!(
                body,
                "<h1>Endpoint {}</h1><section class=\"card\"><p>Status {}</p><p>{}</p></section>",
                esc(&e.name),
                status(&e.status.to_string()),
                esc(e.failure_reason.as_deref().unwrap_or(""))
            );
            let rows: Vec<Vec<String>> = e
                .instances
                .iter()
                .map(|i| {
                    vec![
                        esc(&i.id),
                        esc(&i.variant),
                        esc(&format!("{:?}", i.state)),
                        i.eni_id
                            .as_deref()
                            .map(resource_link)
                            .unwrap_or_else(|| "managed network".into()),
                        esc(i.failure_reason.as_deref().unwrap_or("")),
                    ]
                })
                .collect();
            let _ = write!(
                body,
                "<h2>Instances</h2><section class=\"card\">{}</section>",
                table(
                    &["Instance", "Variant", "State", "ENI", "Failure reason"],
                    &rows
                )
            );
            let _ = write!(
                body,
                "<h2>Logs</h2>{}",
                log_tail(
                    c,
                    s,
                    &e.region,
                    &e.account_id,
                    &format!("/aws/sagemaker/Endpoints/{}", e.name),
                    ""
                )
            );
        }
        "transform" => {
            may_read(
                c,
                s,
                &[(
                    "sagemaker",
                    "DescribeTransformJob",
                    serde_json::json!({"TransformJobName": name}),
                )],
            )?;
            let Some(t) = w.transform_jobs.values().find(|t| t.name == name) else {
                return Err(not_found(s, &format!("No transform job named {name}.")));
            };
            let _ = write!(
                body,
                "<h1>Transform job {}</h1><section class=\"card\"><p>Status {}</p><p>{}</p></section>",
                esc(&t.name),
                status(&t.status.to_string()),
                esc(t.failure_reason.as_deref().unwrap_or(""))
            );
            let _ = write!(
                body,
                "<h2>Logs</h2>{}",
                log_tail(
                    c,
                    s,
                    &t.region,
                    &t.account_id,
                    "/aws/sagemaker/TransformJobs",
                    &format!("{}/", t.name)
                )
            );
        }
        "compilation" | "recommendation" => {
            let (operation, field) = if kind == "compilation" {
                ("DescribeCompilationJob", "CompilationJobName")
            } else {
                ("DescribeInferenceRecommendationsJob", "JobName")
            };
            may_read(
                c,
                s,
                &[("sagemaker", operation, serde_json::json!({ field: name }))],
            )?;
            let (doc, found) = if kind == "compilation" {
                let j = w.compilation_jobs.values().find(|j| j.name == name);
                (
                    j.and_then(|j| serde_json::to_value(j.as_ref()).ok()),
                    j.is_some(),
                )
            } else {
                let j = w.recommendation_jobs.values().find(|j| j.name == name);
                (
                    j.and_then(|j| serde_json::to_value(j.as_ref()).ok()),
                    j.is_some(),
                )
            };
            if !found {
                return Err(not_found(s, &format!("No {kind} job named {name}.")));
            }
            let _ = write!(
                body,
                "<h1>{} job {}</h1><section class=\"card\">{}</section>",
                esc(kind),
                esc(name),
                fields_table(&doc.unwrap_or_default())
            );
        }
        _ => {
            return Err(not_found(
                s,
                &format!("{kind} is not a kind of SageMaker resource the console shows."),
            ))
        }
    }
    Ok(account_page(
        s,
        name,
        Section::SageMaker,
        Live::Always,
        &body,
    ))
}

async fn job_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path((kind, name)): Path<(String, String)>,
) -> Response {
    render(c, headers, move |c, s, w| job_body(c, s, w, &kind, &name)).await
}

// ---- flow logs ----

/// One flow-log record as a table row, if `action` (ALL, ACCEPT or
/// REJECT) keeps it: its action as a status, `start` and `end` as UTC times.
fn flow_record_row(message: &str, fields: &[String], action: &str) -> Option<Vec<String>> {
    let values: Vec<&str> = message.split_whitespace().collect();
    let field = |i: usize| fields.get(i).map(String::as_str).unwrap_or("");
    let kept = action == "ALL"
        || values
            .iter()
            .enumerate()
            .any(|(i, v)| field(i) == "action" && *v == action);
    if !kept {
        return None;
    }
    Some(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| match field(i) {
                "action" => status(v),
                "start" | "end" => match v.parse::<i64>() {
                    Ok(t) => format!(
                        "<span class=\"mono\" title=\"{v}\">{}</span>",
                        esc(&cove_model::ids::rfc3339_of(t))
                    ),
                    Err(_) => format!("<span class=\"mono\">{}</span>", esc(v)),
                },
                _ => format!("<span class=\"mono\">{}</span>", esc(v)),
            })
            .collect(),
    )
}

fn flow_log_body(
    c: &Console,
    s: &Session,
    w: &World,
    eni: &str,
    q: &HashMap<String, String>,
) -> Result<String, (StatusCode, String)> {
    may_read(
        c,
        s,
        &[
            ("ec2", "DescribeFlowLogs", no_input()),
            ("ec2", "DescribeNetworkInterfaces", no_input()),
        ],
    )?;
    // A deleted ENI (a finished job's) keeps its records: every flow
    // log of the account with a stream of its name shows them.
    let e = w.network_interfaces.get(eni);
    if e.is_none() && !eni.starts_with("eni-") {
        return Err(not_found(
            s,
            &format!("The networkInterface ID '{eni}' does not exist"),
        ));
    }
    let action = q
        .get("action")
        .map(String::as_str)
        .unwrap_or("ALL")
        .to_ascii_uppercase();
    let mut body = format!("<h1>Flow log records of {}</h1>", resource_link(eni));
    let filters: String = ["ALL", "ACCEPT", "REJECT"]
        .iter()
        .map(|a| {
            let current = if *a == action {
                " aria-current=\"true\" style=\"font-weight:700\""
            } else {
                ""
            };
            format!(
                "<a href=\"{BASE}/flow-logs/{}?action={a}\"{current}>{a}</a>",
                query_value(eni)
            )
        })
        .collect::<Vec<_>>()
        .join(" · ");
    let _ = write!(body, "<p>Show: {filters}</p>");
    let logs: Vec<_> = w
        .flow_logs
        .values()
        .filter(|f| e.is_none_or(|e| f.covers(e)))
        .filter_map(|f| Some((f, f.log_group_name.clone()?)))
        .collect();
    if logs.is_empty() {
        body.push_str("<p class=\"muted\">No flow log to CloudWatch Logs covers this network interface (its VPC, its subnet or itself).</p>");
    }
    if e.is_none() {
        body.push_str(
            "<p class=\"muted\">This network interface no longer exists; its records remain.</p>",
        );
    }
    for (f, group) in logs {
        let input = serde_json::json!({"logGroupName": group});
        if may_read(c, s, &[("logs", "FilterLogEvents", input)]).is_err() {
            let _ = write!(
                body,
                "<h2>{} → log group {}</h2><p class=\"error\">Not authorized to perform logs:FilterLogEvents on this log group.</p>",
                resource_link(&f.id),
                esc(&group)
            );
            continue;
        }
        let fields: Vec<String> = f
            .log_format
            .split_whitespace()
            .map(|t| t.trim_start_matches("${").trim_end_matches('}').to_string())
            .collect();
        let req = cove_logs::FilterRequest {
            stream_names: Some(vec![eni.to_string()]),
            stream_name_prefix: None,
            start_time: None,
            end_time: None,
            filter_pattern: None,
            limit: None,
            next_token: None,
        };
        let mut rows = Vec::new();
        let mut token = None;
        let mut has_stream = true;
        for _ in 0..20 {
            let req = cove_logs::FilterRequest {
                next_token: token.take(),
                ..req.clone()
            };
            let Ok(page) =
                c.logs
                    .filter_log_events(&f.region, &s.principal.account_id, &group, &req)
            else {
                has_stream = false;
                break;
            };
            rows.extend(
                page.events
                    .iter()
                    .filter_map(|ev| flow_record_row(&ev.message, &fields, &action)),
            );
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        if e.is_none() && !has_stream {
            continue;
        }
        let keep_from = rows.len().saturating_sub(300);
        let headers: Vec<&str> = fields.iter().map(String::as_str).collect();
        let _ = write!(
            body,
            "<h2>{} → log group {}</h2><p class=\"muted\">{} record(s){}</p><section class=\"card\">{}</section>",
            resource_link(&f.id),
            esc(&group),
            rows.len(),
            if keep_from > 0 { ", the latest 300 shown" } else { "" },
            table(&headers, &rows[keep_from..])
        );
    }
    Ok(account_page(
        s,
        &format!("Flow logs of {eni}"),
        Section::Vpcs,
        Live::Always,
        &body,
    ))
}

async fn flow_log_page(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(eni): Path<String>,
    Query(q): Params,
) -> Response {
    render(c, headers, move |c, s, w| flow_log_body(c, s, w, &eni, &q)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_told_from_other_values() {
        for id in [
            "vpc-0a1b2c3d",
            "subnet-6de945d23f78ac1f5",
            "sg-70791ea7c137b4b59",
        ] {
            assert!(looks_like_id(id), "{id}");
        }
        for other in [
            "us-east-1",
            "10.0.0.0/16",
            "default",
            "vpc-",
            "x-0A1B2C3D4",
            "in-use",
        ] {
            assert!(!looks_like_id(other), "{other}");
        }
    }
}
