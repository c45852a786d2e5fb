//! The HTTP front: one listener for every AWS service (the dispatcher picks
//! the service from the SigV4 scope), a health endpoint, and the background
//! tick that moves timed resource states along.

use crate::config::{self, DataPlane, Settings};
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use cove_ec2::Ec2Service;
use cove_logs::LogsService;
use cove_s3::S3Front;
use cove_store::Store;
use cove_wire::dispatch::CredentialLookup;
use cove_wire::{Arrival, Dispatcher, HttpRequest, Principal};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest request body the control plane reads (EC2 and JSON APIs are small).
const MAX_BODY: usize = 16 * 1024 * 1024;

struct App {
    dispatcher: Dispatcher,
    runtime: cove_invoke::Runtime,
    s3: S3Front,
    store: Arc<Store>,
    started: Instant,
    region: String,
    studio_key: Arc<Vec<u8>>,
    ecr: Arc<cove_ecr::Ecr>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Why the data plane is off (`None`: it is on).
    data_plane_off: std::sync::OnceLock<Option<String>>,
}

pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    config::check_private_dir(&settings.data_dir)?;
    let _lock = config::lock_data_dir(&settings.data_dir, "cove serve")?;
    // The port first: a server that cannot listen stops before it has made
    // any kernel object or started any container.
    let tcp = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", settings.listen))?;
    let store = match &settings.store {
        config::StoreLocation::Sqlite(db) => {
            let store = Arc::new(Store::open(db)?);
            config::restrict_database(db)?;
            store
        }
        config::StoreLocation::Postgres(url) => {
            let store = Store::connect_postgres(url).map_err(|e| {
                anyhow::anyhow!("opening the store at {}: {e}", settings.store.describe())
            })?;
            // One process (the controller) runs the data plane and the
            // workloads of a store; API replicas (--api-only) serve beside it.
            if !settings.api_only {
                Store::claim_controller(url, || {
                    tracing::error!("another cove serve took this store's controller lock while PostgreSQL was away: stopping");
                    std::process::exit(1);
                })
                .map_err(|e| match e.is::<cove_store::LockHeld>() {
                    true => anyhow::anyhow!(
                        "another cove serve already controls the store at {}; start this one with --api-only to serve the API beside it",
                        settings.store.describe()
                    ),
                    false => anyhow::anyhow!(
                        "claiming the store at {}: {e:#}",
                        settings.store.describe()
                    ),
                })?;
            }
            store
        }
    };
    settings.store.record(&settings.data_dir)?;
    // What a Cove from before accounts stored was the configured account's.
    store.adopt_unowned(&settings.account_id)?;
    let ec2 = Arc::new(Ec2Service::new(store.clone()));
    ec2.ensure_region(&settings.region, &settings.account_id)
        .map_err(|e| anyhow::anyhow!("bootstrapping {}: {e}", settings.region))?;
    // Log events live beside the store: in the shared PostgreSQL, every
    // replica serves the same groups and streams.
    let logs = Arc::new(match settings.store.shared_url() {
        Some(url) => LogsService::connect_postgres(url)?,
        None => {
            let logs = LogsService::open(&settings.data_dir.join("logs.db"))?;
            config::restrict_database(&settings.data_dir.join("logs.db"))?;
            logs
        }
    });

    let lookup = credential_lookup(&settings, store.clone());
    let identity: cove_s3::access::IdentityLookup = if settings.iam_enforced {
        let store = store.clone();
        Arc::new(move |arn: &str, access_key: &str| {
            cove_iam::authority::identity_policies(&store.snapshot(), arn, access_key)
        })
    } else {
        cove_s3::access::no_identity_policies()
    };
    let shared_metadata = settings.store.shared_url();
    let s3_front = S3Front::open(
        &config::s3_dir(&settings.shared_dir),
        shared_metadata,
        &settings.account_id,
        &settings.region,
        lookup.clone(),
        identity,
    )?;
    if shared_metadata.is_none() {
        config::restrict_database(&config::s3_dir(&settings.shared_dir).join("s3.db"))?;
    }
    let mut dispatcher = Dispatcher::new(lookup.clone());
    if shared_metadata.is_some() {
        // Another replica may have created what a read asks for a moment
        // ago: a read that finds nothing looks at the database once more.
        let store = store.clone();
        dispatcher.set_catch_up(Arc::new(move || {
            cove_store::sql::off_async_worker(|| store.catch_up_now())
        }));
    }
    let authorizer = settings
        .iam_enforced
        .then(|| identity_authorizer(store.clone()));
    if let Some(a) = &authorizer {
        dispatcher.set_authorizer(a.clone());
    }
    dispatcher.register(ec2.clone());
    let sts =
        Arc::new(cove_sts::StsService::new(store.clone()).enforcing_iam(settings.iam_enforced));
    dispatcher.register(sts.clone());
    let iam = Arc::new(cove_iam::IamService::new(store.clone()));
    dispatcher.register(iam.clone());
    dispatcher.register(Arc::new(cove_route53::Route53Service::new(store.clone())));
    let templates = s3_front.clone();
    dispatcher.register(Arc::new(
        cove_cloudformation::CloudFormationService::new(store.clone()).reading_templates_with(
            Arc::new(move |account, region, bucket, key, max_bytes| {
                let object = templates.call_as(
                    account,
                    region,
                    "GetObject",
                    &serde_json::json!({"Bucket": bucket, "Key": key, "MaxBytes": max_bytes}),
                )?;
                Ok(object["Body"].as_str().map(str::to_string))
            }),
        ),
    ));
    dispatcher.register(Arc::new(cove_efs::EfsService::new(
        store.clone(),
        &settings.data_dir,
    )));
    dispatcher.register(logs.clone());
    let ecr = Arc::new(
        cove_ecr::Ecr::open(
            &settings.shared_dir.join("ecr"),
            shared_metadata,
            &settings.account_id,
            &settings.region,
        )?
        .with_credentials(
            lookup.clone(),
            settings
                .credentials
                .iter()
                .filter_map(|c| c.account_id.clone()),
        ),
    );
    if shared_metadata.is_none() {
        config::restrict_database(&settings.shared_dir.join("ecr").join("ecr.db"))?;
    }
    dispatcher.register(ecr.clone());
    let policies = s3_front.clone();
    let studio_dir = settings.shared_dir.join("studio");
    let studio_key = studio_key(&studio_dir)?;
    let sagemaker = Arc::new(
        cove_sagemaker::SageMakerService::new(
            store.clone(),
            Arc::new(move |bucket: &str| policies.bucket_policy(bucket)),
            cove_sagemaker::studio::StudioConfig {
                base_url: format!("http://{}", settings.listen),
                key: studio_key.clone(),
                dir: studio_dir.clone(),
                data_dir: settings.data_dir.clone(),
            },
        )
        .enforcing_iam(settings.iam_enforced),
    );
    dispatcher.register(sagemaker.clone());
    // What a stack's resources are made with (CloudFormation's providers).
    let stack_services: Vec<Arc<dyn cove_wire::Service>> =
        vec![ec2.clone(), iam, logs.clone(), sagemaker];
    let buckets = s3_front.clone();
    let stack_authorizer = authorizer.clone();

    let metrics = Arc::new(crate::metrics::Metrics::new());
    let app = Arc::new(App {
        metrics: metrics.clone(),
        data_plane_off: std::sync::OnceLock::new(),
        dispatcher,
        runtime: cove_invoke::Runtime::new(store.clone(), settings.invoke_timeout),
        s3: s3_front.clone(),
        store: store.clone(),
        started: Instant::now(),
        region: settings.region.clone(),
        studio_key: Arc::new(studio_key),
        ecr: ecr.clone(),
    });
    // Cove's own paths (health, the Studio front) are served on the host
    // listener only; the service addresses inside the data plane answer as
    // the AWS service there would, nothing more.
    let services_router = Router::new().fallback(aws).with_state(app.clone());
    let console = Arc::new(cove_console::Console {
        store: store.clone(),
        logs: logs.clone(),
        credentials: lookup.clone(),
        sessions: cove_console::Sessions::default(),
        authorizer,
        region: settings.region.clone(),
    });
    let router = cove_console::router(console).merge(
        Router::new()
            .route("/_cove/health", get(health))
            .route("/metrics", get(metrics_text))
            .route("/_cove/studio/{*rest}", axum::routing::any(studio))
            .fallback(aws)
            .with_state(app.clone()),
    );
    if settings.api_only {
        let _ = app.data_plane_off.set(Some(
            "an API replica: the controller runs the data plane".into(),
        ));
        tracing::info!(listen = %settings.listen, store = %settings.store.describe(), "cove serving the API as a replica");
        return listen(tcp, router).await;
    }

    let checkpointer = store.clone();
    std::thread::Builder::new()
        .name("cove-checkpoint".into())
        .spawn(move || {
            if let Err(e) = checkpointer.checkpoint_forever(Duration::from_secs(1)) {
                tracing::error!(error = %e, "checkpoint thread stopped");
            }
        })?;

    let purger = logs.clone();
    std::thread::Builder::new()
        .name("cove-logs-retention".into())
        .spawn(move || purger.purge_forever(Duration::from_secs(60)))?;

    // Cove's CA and the service certificates of the HTTPS listeners, and the
    // simulated web's CA; the bundle (host roots + both CAs) is what jobs
    // and `cove exec` trust. The host's own clients trust only Cove's CA.
    let certs = Arc::new(cove_tls::CertStore::open(
        &settings.data_dir,
        &settings.region,
    )?);
    let web_certs = Arc::new(cove_tls::WebCerts::open(&settings.data_dir)?);
    let ca_bundle = certs.ca().write_bundle_with(
        std::path::Path::new(cove_tls::HOST_BUNDLE),
        &[web_certs.ca()],
    )?;
    if let Some(host) = &settings.host {
        // Agents pull their instances' images here: the registry alone,
        // over HTTPS with Cove's CA, on the network that joins the hosts.
        let registry_listener = tokio::net::TcpListener::bind((host.underlay, host.registry_port))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "binding the registry for agents on {}:{}: {e}",
                    host.underlay,
                    host.registry_port
                )
            })?;
        let registry_router = services_router.clone().layer(Extension(Arrival {
            only_service: Some("dkr.ecr"),
            vpc_endpoint_id: None,
            vpc_id: None,
        }));
        tokio::spawn(crate::https::serve(
            registry_listener,
            certs.server_config()?,
            registry_router,
        ));
        let registration = crate::hosts::Registration {
            id: host.id.clone(),
            underlay: host.underlay,
            control_plane: true,
            instance: instance_tag(&settings.data_dir)?,
            eni_placement: Some(host.eni_placement),
            ca_certificates: Some(certs.ca().trust_pem(&[web_certs.ca()])),
            registry_port: Some(host.registry_port),
            serving_relay: None,
        };
        crate::hosts::register(&store, &registration)?;
        crate::hosts::spawn_heartbeats(store.clone(), registration)?;
        crate::hosts::spawn_lost_watch(store.clone())?;
        tracing::info!(host = %host.id, underlay = %host.underlay, "control plane's host registered: agents may join");
    }
    let runner = std::env::current_exe()?;
    let plane = start_data_plane(
        &settings,
        store.clone(),
        services_router,
        logs.clone(),
        s3_front,
        (certs.server_config()?, web_certs.server_config()?),
        metrics,
    )?;
    let _ = app.data_plane_off.set(plane.as_ref().err().cloned());
    let instance = plane.ok();
    let job_settings = cove_jobs::Settings {
        jobs_dir: settings.data_dir.join("jobs"),
        images_dir: settings.data_dir.join("images"),
        registry: Some(ecr),
        runner,
        instance,
        local_s3: settings.listen.to_string(),
        connect_timeout: settings.job_connect_timeout,
        stop_grace: settings.job_stop_grace,
        ca_bundle: Some(ca_bundle),
        gpus: cove_host::gpu::GpuSettings::under(&settings.data_dir),
        studio_command: settings.studio_app_command.clone(),
        studio_dir,
        efs_dir: settings.data_dir.join("efs"),
    };
    let managed_networks = Arc::new(crate::managed_networks::ManagedNetworks);
    cove_jobs::Supervisor::new(
        store.clone(),
        logs.clone(),
        sts.clone(),
        job_settings.clone(),
        managed_networks.clone(),
        locality(&settings),
    )
    .spawn()?;
    if settings.host.is_some() {
        // The logs of instances that run on agents.
        cove_jobs::container_logs::spawn_delivery(store.clone(), logs.clone())?;
    }
    cove_jobs::Hosting::new(
        store.clone(),
        logs.clone(),
        sts,
        job_settings,
        managed_networks,
        locality(&settings),
    )
    .spawn()?;

    cove_cloudformation::deployer::Deployer::new(
        store.clone(),
        cove_cloudformation::deployer::ServiceCallers {
            services: stack_services,
            s3: Arc::new(move |account, region, operation, input| {
                buckets.call_as(account, region, operation, input)
            }),
            authorizer: stack_authorizer,
        },
    )
    .spawn()?;

    let ticker = ec2.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(500));
        loop {
            interval.tick().await;
            let ec2 = ticker.clone();
            let _ = tokio::task::spawn_blocking(move || ec2.advance_lifecycles()).await;
        }
    });

    tracing::info!(listen = %settings.listen, store = %settings.store.describe(), region = %settings.region, "cove serving");
    listen(tcp, router).await
}

/// Serves the AWS APIs and Cove's own paths on `tcp` until a signal.
async fn listen(tcp: tokio::net::TcpListener, router: Router) -> anyhow::Result<()> {
    // Streamed answers (S3 objects, the Studio proxy) go out as a head and
    // then body chunks; without TCP_NODELAY, Nagle holds a chunk until the
    // client's delayed ACK, 40 ms later, on a kept-alive connection.
    let listener = axum::serve::ListenerExt::tap_io(tcp, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    tracing::info!("cove stopped");
    Ok(())
}

/// Finds the principal for an access key (a configured pair, an STS session
/// or an IAM user's key); S3 and the dispatcher share it.
fn credential_lookup(settings: &Settings, store: Arc<Store>) -> CredentialLookup {
    let principals: Vec<Principal> = settings
        .credentials
        .iter()
        .map(|c| {
            let account = c.account_id.as_ref().unwrap_or(&settings.account_id);
            Principal {
                access_key: c.access_key_id.clone(),
                secret_key: c.secret_access_key.clone(),
                session_token: None,
                account_id: account.clone(),
                arn: c
                    .arn
                    .clone()
                    .unwrap_or_else(|| format!("arn:aws:iam::{account}:root")),
                user_id: account.clone(),
            }
        })
        .collect();
    let configured: Vec<String> = principals.iter().map(|p| p.access_key.clone()).collect();
    Arc::new(move |key: &str| {
        let found = principals
            .iter()
            .find(|p| p.access_key == key)
            .cloned()
            .or_else(|| {
                let world = store.snapshot();
                cove_sts::principal_of_session(&world, key)
                    .or_else(|| cove_iam::principal_of_access_key(&world, key))
            });
        if found.is_none() {
            tracing::info!(
                access_key = key,
                configured = ?configured,
                "unknown access key: not a configured pair, an STS session or an IAM user's key"
            );
        }
        found
    })
}

/// The instance tag that names this installation's kernel objects: derived
/// from the canonical data directory, so it is the same after a restart and
/// `cove exec` / `cove teardown` can compute it too.
pub fn instance_tag(data_dir: &std::path::Path) -> anyhow::Result<String> {
    config::create_private_dir(data_dir)?;
    let canonical = std::fs::canonicalize(data_dir)?;
    Ok(cove_net::naming::instance_tag(&canonical.to_string_lossy()))
}

pub fn data_plane_possible() -> Result<(), String> {
    if !cove_sys::is_root() {
        return Err("not running as root".into());
    }
    // Links, addresses and routes go over netlink; rules through `nft`.
    let found = std::process::Command::new("nft")
        .arg("-V")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        return Err("`nft` is not installed".into());
    }
    Ok(())
}

/// Starts the network reconciler: every commit to the store wakes it, and it
/// brings the kernel to the new state (see cove-net). Returns the instance
/// tag of the kernel objects, or why the data plane is off.
fn start_data_plane(
    settings: &Settings,
    store: Arc<Store>,
    api: Router,
    logs: Arc<LogsService>,
    s3: cove_s3::S3Front,
    (tls, web_tls): (Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>),
    metrics: Arc<crate::metrics::Metrics>,
) -> anyhow::Result<Result<String, String>> {
    let possible = data_plane_possible();
    match (settings.data_plane, &possible) {
        (DataPlane::Off, _) => {
            tracing::warn!("data plane off: VPC resources are stored but not enforced");
            return Ok(Err("--data-plane off".into()));
        }
        (DataPlane::Auto, Err(why)) => {
            tracing::warn!(reason = %why, "data plane off: VPC resources are stored but not enforced");
            return Ok(Err(why.clone()));
        }
        (DataPlane::On, Err(why)) => anyhow::bail!("--data-plane on, but {why}"),
        _ => {}
    }
    let instance = instance_tag(&settings.data_dir)?;
    tracing::info!(instance = %instance, "data plane on");
    let locality = locality(settings);
    crate::flow_logs::spawn(
        store.clone(),
        crate::flow_logs::Delivery::Here { logs, s3: Some(s3) },
        crate::flow_logs::Settings {
            instance: instance.clone(),
            window_override: settings.flow_log_window,
            metrics: Some(metrics.clone()),
            locality: locality.clone(),
        },
    )?;
    let mut listeners = crate::listeners::Listeners::new(
        tokio::runtime::Handle::current(),
        store.clone(),
        crate::listeners::Services {
            api,
            web: crate::web::router(settings.package_index.clone()),
            tls,
            web_tls,
            data_dir: settings.data_dir.clone(),
        },
    );
    let tag = instance.clone();
    cove_dataplane::run::spawn(
        store,
        instance.clone(),
        locality,
        cove_dataplane::linux::Linux,
        move |outcome| match outcome {
            cove_dataplane::run::Outcome::Applied {
                world,
                changes,
                took,
            } => {
                metrics.reconcile_pass(Some(changes), took);
                listeners.sync(world, &instance);
            }
            cove_dataplane::run::Outcome::Failed { took } => metrics.reconcile_pass(None, took),
        },
    )?;
    Ok(Ok(tag))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

async fn health(State(app): State<Arc<App>>) -> Response<Body> {
    let generation = app.store.generation();
    let applied = app.store.applied_generation();
    let store_ok = app.store.last_commit_succeeded();
    let off = app.data_plane_off.get().cloned().flatten();
    let data_plane = match &off {
        None => serde_json::json!({
            "state": "on",
            "applied_generation": applied,
            "last_pass": app.metrics.last_pass(),
        }),
        Some(reason) => serde_json::json!({"state": "off", "reason": reason}),
    };
    let healthy = store_ok && !(off.is_none() && app.metrics.last_pass() == "failed");
    let world = app.store.snapshot();
    let hosts: serde_json::Map<String, serde_json::Value> = world
        .hosts
        .values()
        .map(|h| {
            let age = crate::hosts::now().saturating_sub(h.heartbeat_at);
            let about = serde_json::json!({
                "state": h.state.as_str(),
                "role": h.role(),
                "underlay": h.underlay,
                "seconds_since_heartbeat": age,
                "applied_position": h.applied_position,
            });
            (h.id.clone(), about)
        })
        .collect();
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        "region": app.region,
        "uptime_seconds": app.started.elapsed().as_secs(),
        // The state's generation and the newest one the data plane has made
        // real: a client that wrote and wants to send packets waits for
        // `applied_generation` to reach the `generation` it saw after writing.
        "generation": generation,
        "applied_generation": applied,
        "components": {
            "store": {
                "kind": app.store.kind(),
                "generation": generation,
                // The database's commit count as this server has followed
                // it: what each host's `applied_position` is compared with.
                "position": app.store.position(),
                "last_commit": if store_ok { "succeeded" } else { "failed" },
            },
            "data_plane": data_plane,
            "hosts": hosts,
        },
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("static response")
}

/// Counts and logs a call whose front (S3, the registry, SageMaker Runtime)
/// answers HTTP itself: its operation is what the caller names (the HTTP
/// method for S3 and the registry), its error the HTTP status.
fn record_http(
    app: &App,
    service: &str,
    operation: &str,
    response: Response<Body>,
    started: Instant,
) -> Response<Body> {
    let status = response.status().as_u16();
    let call = cove_wire::dispatch::Call {
        service: service.to_string(),
        operation: operation.to_string(),
        account: None,
        code: (status >= 400).then(|| format!("HTTP {status}")),
    };
    record(app, &call, status, started.elapsed());
    response
}

/// Counts one answered call in the metrics and logs its `request` line.
fn record(app: &App, call: &cove_wire::dispatch::Call, status: u16, took: Duration) {
    app.metrics
        .call(&call.service, &call.operation, call.code.as_deref(), took);
    tracing::info!(
        service = %call.service,
        operation = %call.operation,
        status,
        code = %call.code.as_deref().unwrap_or("OK"),
        account = %call.account.as_deref().unwrap_or("-"),
        micros = cove_model::convert::micros(took),
        "request"
    );
}

/// Prometheus's scrape (see crate::metrics).
async fn metrics_text(State(app): State<Arc<App>>) -> Response<Body> {
    let text = app.metrics.render(
        &app.store.snapshot(),
        app.store.generation(),
        app.store.applied_generation(),
    );
    Response::builder()
        .header(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        .body(Body::from(text))
        .expect("static response")
}

fn header_pairs(headers: &axum::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn into_axum(out: cove_wire::HttpResponse) -> Response<Body> {
    let mut response = Response::builder()
        .status(StatusCode::from_u16(out.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (name, value) in out.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response = response.header(n, v);
        }
    }
    response
        .body(Body::from(out.body))
        .expect("valid response parts")
}

/// `InvokeEndpoint`: authenticated like every API, then routed by cove-invoke.
async fn invoke(
    app: &App,
    parts: axum::http::request::Parts,
    body: Body,
    peer: SocketAddr,
    arrival: Option<Arrival>,
    endpoint: Option<String>,
) -> Response<Body> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = match axum::body::to_bytes(body, cove_invoke::MAX_BODY + 1).await {
        Ok(b) => b,
        Err(_) => {
            let e = cove_invoke::RuntimeError::validation(format!(
                "1 validation error detected: Value '[...]' at 'body' failed to satisfy constraint: Member must have length less than or equal to {}",
                cove_invoke::MAX_BODY
            ));
            return e.into_response(&request_id).map(Body::new);
        }
    };
    let request = HttpRequest {
        method: parts.method.as_str().to_string(),
        raw_path: parts.uri.path().to_string(),
        raw_query: parts.uri.query().unwrap_or_default().to_string(),
        headers: header_pairs(&parts.headers),
        body: body.to_vec(),
        peer: Some(peer.ip()),
        arrival,
    };
    let (principal, region) = match app.dispatcher.authenticate_request(&request) {
        Ok(x) => x,
        Err(out) => return into_axum(out),
    };
    let Some(endpoint) = endpoint else {
        let e = cove_model::AwsError::client(
            "UnknownOperationException",
            "SageMaker Runtime serves POST /endpoints/{EndpointName}/invocations here.",
        );
        let mut out =
            cove_wire::dispatch::render_error(cove_wire::Protocol::Json, &e, &request_id, None);
        out.status = 404;
        return into_axum(out);
    };
    app.runtime
        .invoke(
            &principal.account_id,
            &region,
            &endpoint,
            &parts.headers,
            body,
        )
        .await
        .map(Body::new)
}

/// The key Studio's presigned URLs and session cookies are signed with:
/// made once, kept in the data directory so URLs survive a restart.
fn studio_key(dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let path = dir.join("studio.key");
    if let Ok(key) = std::fs::read(&path) {
        if key.len() >= 32 {
            return Ok(key);
        }
    }
    std::fs::create_dir_all(dir)?;
    let key = uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(uuid::Uuid::new_v4().as_bytes())
        .copied()
        .collect::<Vec<u8>>();
    config::write_private_file(&path, &key)?;
    Ok(key)
}

async fn studio(State(app): State<Arc<App>>, req: Request<Body>) -> Response<Body> {
    crate::studio_proxy::handle(app.store.clone(), app.studio_key.clone(), req).await
}

/// A person's browser opening Cove's address (`/` or `/ui`, no signature,
/// asking for HTML): it is sent to the console. Signed or presigned calls
/// to `/` (S3's ListBuckets) are not browsers and go to the services.
fn is_a_browser_at_the_door(parts: &axum::http::request::Parts) -> bool {
    matches!(parts.uri.path(), "/" | "/ui" | "/ui/")
        && parts.method == axum::http::Method::GET
        && parts.uri.query().is_none()
        && !parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        && parts
            .headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

async fn aws(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    arrival: Option<Extension<Arrival>>,
    req: Request<Body>,
) -> Response<Body> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let arrival = arrival.map(|Extension(a)| a);
    if arrival.is_none() && is_a_browser_at_the_door(&parts) {
        return axum::response::IntoResponse::into_response(axum::response::Redirect::to(
            "/_cove/console/",
        ));
    }
    // The registry: its own listeners (`dkr.ecr`), or a registry request to
    // a listener that serves everything.
    let only = arrival.as_ref().and_then(|a| a.only_service);
    if only == Some("dkr.ecr")
        || (only.is_none()
            && cove_ecr::distribution::is_registry_request(
                &parts.headers,
                parts.uri.path(),
                parts.uri.query(),
            ))
    {
        let method = parts.method.to_string();
        let response =
            cove_ecr::distribution::serve(app.ecr.clone(), Request::from_parts(parts, body)).await;
        return record_http(&app, "ecr-registry", &method, response, started);
    }
    // S3 streams its bodies, so it is routed before the body is read. A
    // listener dedicated to one service keeps to it.
    let for_s3 = match only {
        Some(service) => service == "s3",
        None => S3Front::is_s3_request(&parts),
    };
    if for_s3 {
        let mut origin = cove_s3::s3_origin(
            &app.store.snapshot(),
            peer.ip(),
            arrival.as_ref().and_then(|a| a.vpc_endpoint_id.as_deref()),
        );
        origin.secure_transport = parts
            .extensions
            .get::<crate::https::SecureTransport>()
            .is_some();
        let method = parts.method.to_string();
        let response = app
            .s3
            .handle(Request::from_parts(parts, body), origin)
            .await;
        return record_http(&app, "s3", &method, response, started);
    }
    // SageMaker Runtime: its own listener serves nothing else; elsewhere
    // the invocation path picks it (the API is JSON-RPC on `/`).
    let invocation = cove_invoke::invocation_endpoint(parts.method.as_str(), parts.uri.path());
    if only == Some("runtime.sagemaker") || (only.is_none() && invocation.is_some()) {
        let response = invoke(&app, parts, body, peer, arrival, invocation).await;
        return record_http(
            &app,
            "runtime.sagemaker",
            "InvokeEndpoint",
            response,
            started,
        );
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return Response::builder()
                .status(StatusCode::PAYLOAD_TOO_LARGE)
                .body(Body::from("Request body too large"))
                .expect("static response")
        }
    };
    let headers = header_pairs(&parts.headers);
    let request = HttpRequest {
        method: parts.method.as_str().to_string(),
        raw_path: parts.uri.path().to_string(),
        raw_query: parts.uri.query().unwrap_or_default().to_string(),
        headers,
        body: body.to_vec(),
        peer: Some(peer.ip()),
        arrival,
    };
    let (out, call) = app.dispatcher.handle_recorded(request);
    record(&app, &call, out.status, started.elapsed());
    into_axum(out)
}

/// With IAM enforced, every API call of a role session passes its role's
/// identity policies (`cove_iam::authority::refusal`), refused with each
/// service's own error: EC2's `UnauthorizedOperation`, the query
/// services' `AccessDenied`, the JSON services' `AccessDeniedException`.
fn identity_authorizer(store: Arc<cove_store::Store>) -> cove_wire::dispatch::Authorizer {
    Arc::new(move |ctx, service, input| {
        let call = cove_iam::authority::Call {
            service,
            operation: &ctx.operation,
            region: &ctx.region,
            account: ctx.account_id(),
            principal_arn: &ctx.principal.arn,
            access_key: &ctx.principal.access_key,
            input,
        };
        let Some(refused) = cove_iam::authority::refusal(&store.snapshot(), &call) else {
            return Ok(());
        };
        Err(match service {
            "ec2" => cove_model::AwsError::new(
                403,
                "UnauthorizedOperation",
                format!(
                    "You are not authorized to perform this operation. {}",
                    refused.message
                ),
            ),
            "iam" | "sts" => cove_model::AwsError::new(403, "AccessDenied", refused.message),
            _ => cove_model::AwsError::client("AccessDeniedException", refused.message),
        })
    })
}

/// What runs here: this host's ENIs and instances, and, as the control
/// plane, those that name no host.
fn locality(settings: &Settings) -> cove_model::hosts::Locality {
    match &settings.host {
        Some(host) => cove_model::hosts::Locality {
            host: Some(host.id.clone()),
            control_plane: true,
        },
        None => cove_model::hosts::Locality::everything(),
    }
}
