//! `cove agent`: one more machine for a Cove whose store is on PostgreSQL
//! (docs/scale-out.md). It registers its host, beats, and runs the same
//! data plane as `cove serve` for the ENIs placed on it: the routers of
//! their VPCs, their security groups and network ACLs, and the VXLAN
//! overlays to the other hosts, the VPC resolver of each of its routers,
//! and the flow-log counting of its ENIs (the records go to the control
//! plane through the store); the instances of training and processing
//! jobs and of endpoints, and the Studio apps, placed on it (their
//! containers' logs go to the control plane through the store; their
//! images are pulled from the control plane's registry); and the
//! relay through which the control plane reaches its serving containers
//! and apps. It serves no API.

use crate::config::{self, AgentArgs, StoreLocation};
use cove_model::hosts::Locality;
use cove_store::Store;
use std::sync::Arc;

pub fn run(args: &AgentArgs) -> anyhow::Result<()> {
    let id = config::host_id(args.host_id.as_deref())?;
    anyhow::ensure!(
        config::is_postgres_url(&args.store),
        "--store must be the postgres:// URL of the control plane's store: agents share it"
    );
    let url = &args.store;
    let location = StoreLocation::Postgres(url.clone());
    crate::server::data_plane_possible().map_err(|why| anyhow::anyhow!("cove agent: {why}"))?;
    config::create_private_dir(&args.data_dir)?;
    let _lock = config::lock_data_dir(&args.data_dir, "cove agent")?;
    let store = Store::connect_postgres(url)
        .map_err(|e| anyhow::anyhow!("opening the store at {}: {e}", location.describe()))?;
    Store::claim_host(url, &id, {
        let id = id.clone();
        move || {
            tracing::error!(host = %id, "another cove agent took this host's lock while PostgreSQL was away: stopping");
            std::process::exit(1);
        }
    })
    .map_err(|e| match e.is::<cove_store::LockHeld>() {
        true => anyhow::anyhow!("another cove agent already runs host {id}"),
        false => anyhow::anyhow!("claiming host {id} in the store: {e:#}"),
    })?;
    location.record(&args.data_dir)?;
    let instance = crate::server::instance_tag(&args.data_dir)?;
    // The relay to this host's serving containers and Studio apps and the
    // VPC resolvers of its routers run on a small runtime. The relay's port is bound before
    // the host registers it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let relay_listener = runtime
        .block_on(tokio::net::TcpListener::bind((
            args.underlay_address,
            args.serving_relay_port,
        )))
        .map_err(|e| {
            anyhow::anyhow!(
                "binding the serving relay on {}:{}: {e}",
                args.underlay_address,
                args.serving_relay_port
            )
        })?;
    let relay_token = cove_invoke::relay::new_token();
    let registration = crate::hosts::Registration {
        id: id.clone(),
        underlay: args.underlay_address,
        control_plane: false,
        instance: instance.clone(),
        eni_placement: None,
        ca_certificates: None,
        registry_port: None,
        serving_relay: Some(cove_model::hosts::ServingRelay {
            port: args.serving_relay_port,
            token: relay_token.clone(),
        }),
    };
    crate::hosts::register(&store, &registration)?;
    tracing::info!(
        host = %id,
        underlay = %args.underlay_address,
        instance = %instance,
        "agent registered; data plane on"
    );
    crate::hosts::spawn_heartbeats(store.clone(), registration)?;
    let locality = Locality {
        host: Some(id.clone()),
        control_plane: false,
    };
    // This host's routers count its ENIs' packets; the control plane
    // delivers the records.
    crate::flow_logs::spawn(
        store.clone(),
        crate::flow_logs::Delivery::ToControlPlane,
        crate::flow_logs::Settings {
            instance: instance.clone(),
            window_override: args.flow_log_window,
            metrics: None,
            locality: locality.clone(),
        },
    )?;
    // The instances of jobs placed here; their images are pulled from the
    // control plane's registry (over the underlay, or through the
    // instance's ENI in Vpc mode) into `images/blobs`.
    let settings = cove_jobs::Settings {
        jobs_dir: args.data_dir.join("jobs"),
        images_dir: args.data_dir.join("images"),
        registry: None,
        runner: std::env::current_exe()?,
        instance: Some(instance.clone()),
        local_s3: String::new(),
        connect_timeout: std::time::Duration::from_secs(args.job_connect_timeout.max(1)),
        stop_grace: std::time::Duration::from_secs(args.job_stop_grace),
        studio_command: args
            .studio_app_command
            .as_deref()
            .map(|c| c.split_whitespace().map(str::to_string).collect()),
        studio_dir: args.data_dir.join("studio"),
        efs_dir: args.data_dir.join("efs"),
        ca_bundle: trust_control_plane(&store, &args.data_dir),
        gpus: cove_host::gpu::GpuSettings::under(&args.data_dir),
    };
    let sink: Arc<dyn cove_host::logs::LogSink> =
        Arc::new(cove_jobs::container_logs::ThroughStore::new(
            store.clone(),
            args.data_dir.join("log-offsets"),
        )?);
    cove_jobs::instances::Instances::new(
        store.clone(),
        settings.clone(),
        sink.clone(),
        locality.clone(),
    )
    .spawn()?;
    cove_jobs::studio_apps::AppsHere::new(store.clone(), settings.clone(), locality.clone())
        .spawn()?;
    cove_jobs::Hosting::on_agent(store.clone(), sink, settings, locality.clone()).spawn()?;
    let relay = Arc::new(cove_invoke::relay::Relay {
        store: store.clone(),
        host: id.clone(),
        token: relay_token,
    });
    runtime.spawn(relay.serve(relay_listener));
    let mut resolvers =
        crate::listeners::Listeners::resolvers_only(runtime.handle().clone(), store.clone());
    let tag = instance.clone();
    let reconciler = cove_dataplane::run::spawn(
        store,
        instance,
        locality,
        cove_dataplane::linux::Linux,
        move |outcome| {
            if let cove_dataplane::run::Outcome::Applied { world, .. } = outcome {
                resolvers.sync(world, &tag);
            }
        },
    )?;
    reconciler
        .join()
        .map_err(|_| anyhow::anyhow!("the data plane's thread panicked"))
}

/// Writes `<data dir>/ca/bundle.pem`, the host's roots and the control
/// plane's CAs, for this host's containers (as `cove serve` writes its
/// own); waits up to 30 s for a control plane that has not registered yet.
/// `None` (containers trust the host's roots only) when none comes.
fn trust_control_plane(store: &Store, data_dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let pem = loop {
        let generation = store.generation();
        let world = store.snapshot();
        if let Some(pem) =
            cove_model::hosts::control_plane(&world).and_then(|h| h.ca_certificates.clone())
        {
            break pem;
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!("no control plane has registered its CA: this host's containers trust the host's roots only");
            return None;
        }
        store.wait_for_change(generation, std::time::Duration::from_secs(1));
    };
    let path = cove_tls::ca_dir(data_dir).join("bundle.pem");
    let written = std::fs::create_dir_all(cove_tls::ca_dir(data_dir))
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            cove_tls::write_bundle_at(&path, std::path::Path::new(cove_tls::HOST_BUNDLE), &pem)
        });
    match written {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(error = %e, "writing this host's CA bundle failed: its containers trust the host's roots only");
            None
        }
    }
}
