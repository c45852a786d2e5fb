//! Keeps Cove's sockets inside the data plane equal to
//! [`cove_net::listen::listeners`]: the API on the region's public service
//! addresses and on interface-endpoint ENIs (HTTP on 80, HTTPS on 443 with
//! Cove's CA), the VPC resolver of every VPC, the simulated web, and NFS on
//! every EFS mount target's ENI. Each socket is bound by a thread that
//! entered the namespace (the socket keeps that namespace for life) and is
//! served on the tokio runtime.
//! A listener whose namespace was recreated is bound again. A `cove agent`
//! keeps only the VPC resolvers of its routers ([`Listeners::resolvers_only`]):
//! the services, the simulated web and NFS live on the control plane's host.

use axum::Extension;
use cove_dataplane::vpc_dns;
use cove_net::listen::{listeners, ListenerKind, ListenerPlan};
use cove_store::Store;
use cove_wire::Arrival;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use tokio::task::AbortHandle;

pub struct Listeners {
    runtime: tokio::runtime::Handle,
    store: Arc<Store>,
    /// What the control plane's host serves besides the resolvers (`None`
    /// on an agent).
    services: Option<Services>,
    /// Running listeners, with the inode of the namespace they were bound in.
    running: BTreeMap<ListenerPlan, (u64, Vec<AbortHandle>)>,
}

fn netns_inode(name: &str) -> Option<u64> {
    std::fs::metadata(format!("{}/{name}", cove_net::netns::NETNS_DIR))
        .ok()
        .map(|m| m.ino())
}

/// The API, the simulated web and NFS, served inside the data plane by the
/// control plane's host.
pub struct Services {
    pub api: axum::Router,
    /// The simulated web's router.
    pub web: axum::Router,
    /// The TLS configuration of the HTTPS listeners.
    pub tls: Arc<rustls::ServerConfig>,
    /// The TLS configuration of the simulated web's HTTPS listener.
    pub web_tls: Arc<rustls::ServerConfig>,
    /// Cove's data directory, where EFS file systems keep their bytes.
    pub data_dir: std::path::PathBuf,
}

impl Listeners {
    pub fn new(runtime: tokio::runtime::Handle, store: Arc<Store>, services: Services) -> Self {
        Listeners {
            runtime,
            store,
            services: Some(services),
            running: BTreeMap::new(),
        }
    }

    /// The VPC resolvers of this host's routers, and nothing else.
    pub fn resolvers_only(runtime: tokio::runtime::Handle, store: Arc<Store>) -> Self {
        Listeners {
            runtime,
            store,
            services: None,
            running: BTreeMap::new(),
        }
    }

    /// Starts what is missing and stops what is no longer wanted.
    pub fn sync(&mut self, world: &cove_model::world::World, instance: &str) {
        let wanted: BTreeMap<ListenerPlan, Option<u64>> = listeners(world, instance)
            .into_iter()
            .filter(|p| self.services.is_some() || matches!(p.kind, ListenerKind::Dns { .. }))
            .map(|p| {
                let inode = netns_inode(&p.netns);
                (p, inode)
            })
            .collect();
        self.running.retain(|plan, (inode, tasks)| {
            let keep = wanted.get(plan) == Some(&Some(*inode));
            if !keep {
                tasks.iter().for_each(AbortHandle::abort);
            }
            keep
        });
        for (plan, inode) in wanted {
            let Some(inode) = inode else { continue };
            if self.running.contains_key(&plan) {
                continue;
            }
            match self.start(&plan) {
                Ok(tasks) => {
                    tracing::debug!(netns = %plan.netns, addr = %plan.addr, "listening");
                    self.running.insert(plan, (inode, tasks));
                }
                Err(e) => {
                    tracing::warn!(netns = %plan.netns, addr = %plan.addr, error = %e, "cannot listen yet")
                }
            }
        }
    }

    /// Binds `plan`'s address in its namespace and serves `app` there, over
    /// TLS when `tls` is given.
    fn serve_http(
        &self,
        plan: &ListenerPlan,
        app: axum::Router,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Vec<AbortHandle>> {
        let addr = plan.addr;
        let std_listener =
            cove_net::netns::run_in(&plan.netns, move || std::net::TcpListener::bind(addr))??;
        std_listener.set_nonblocking(true)?;
        let _guard = self.runtime.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let task = match tls {
            Some(config) => self
                .runtime
                .spawn(crate::https::serve(listener, config, app)),
            None => self.runtime.spawn(async move {
                let service = app.into_make_service_with_connect_info::<SocketAddr>();
                if let Err(e) = axum::serve(listener, service).await {
                    tracing::warn!(%addr, error = %e, "listener stopped");
                }
            }),
        };
        Ok(vec![task.abort_handle()])
    }

    fn start(&self, plan: &ListenerPlan) -> std::io::Result<Vec<AbortHandle>> {
        let addr = plan.addr;
        let services = || {
            self.services
                .as_ref()
                .ok_or_else(|| std::io::Error::other("this host serves only the VPC resolvers"))
        };
        match &plan.kind {
            ListenerKind::Api {
                only_service,
                vpc_endpoint_id,
                vpc_id,
                tls,
            } => {
                let arrival = Arrival {
                    only_service: *only_service,
                    vpc_endpoint_id: vpc_endpoint_id.clone(),
                    vpc_id: vpc_id.clone(),
                };
                let services = services()?;
                let app = services.api.clone().layer(Extension(arrival));
                self.serve_http(plan, app, tls.then(|| services.tls.clone()))
            }
            ListenerKind::Web { tls } => {
                let services = services()?;
                let tls = tls.then(|| services.web_tls.clone());
                self.serve_http(plan, services.web.clone(), tls)
            }
            ListenerKind::Nfs { file_system_id } => {
                let root = cove_efs::file_system_dir(&services()?.data_dir, file_system_id);
                std::fs::create_dir_all(&root)?;
                // The socket is made by the thread in the namespace.
                let runtime = self.runtime.clone();
                let bound = cove_net::netns::run_in(&plan.netns, move || {
                    runtime.block_on(cove_nfs::bind(
                        std::net::SocketAddr::V4(addr),
                        cove_nfs::Export::new(root),
                    ))
                })??;
                let task = self.runtime.spawn(async move {
                    if let Err(e) = bound.serve().await {
                        tracing::warn!(%addr, error = %e, "NFS service stopped");
                    }
                });
                Ok(vec![task.abort_handle()])
            }
            ListenerKind::Dns { vpc_id } => {
                let (udp, tcp) = cove_net::netns::run_in(&plan.netns, move || {
                    Ok::<_, std::io::Error>((
                        std::net::UdpSocket::bind(addr)?,
                        std::net::TcpListener::bind(addr)?,
                    ))
                })??;
                udp.set_nonblocking(true)?;
                tcp.set_nonblocking(true)?;
                let _guard = self.runtime.enter();
                let udp = tokio::net::UdpSocket::from_std(udp)?;
                let tcp = tokio::net::TcpListener::from_std(tcp)?;
                let (store, vpc) = (self.store.clone(), vpc_id.clone());
                let udp_task =
                    self.runtime
                        .spawn(vpc_dns::serve_udp(udp, store.clone(), vpc.clone()));
                let tcp_task = self.runtime.spawn(vpc_dns::serve_tcp(tcp, store, vpc));
                Ok(vec![udp_task.abort_handle(), tcp_task.abort_handle()])
            }
        }
    }
}
