//! Host plumbing for the job drivers, with no SageMaker API in it: where a
//! job's files live and how this host is set up ([`Settings`]), how one
//! host's container is launched on its ENI ([`launch`]), how data moves
//! between S3 and a host's network ([`s3`]), how a container's log reaches
//! CloudWatch Logs ([`logs`]), a host's ML storage volume ([`volume`]), how
//! Cove talks HTTP to a serving container inside its namespace ([`http`]),
//! and EFS file systems mounted through a host's ENI ([`efs`]).

pub mod efs;
pub mod http;
pub mod launch;
pub mod logs;
pub mod pull;
pub mod s3;
pub mod volume;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct Settings {
    /// Working files of running jobs (`<kind>/<name>/<host>/…`).
    pub jobs_dir: PathBuf,
    /// Unpacked images (`<manifest digest>/rootfs`).
    pub images_dir: PathBuf,
    /// Cove's registry, which jobs' image URIs are resolved in.
    pub registry: Option<Arc<cove_ecr::Ecr>>,
    /// The `cove` binary, which runs containers (`cove run-container`).
    pub runner: PathBuf,
    /// The data plane's instance tag; `None` when the data plane is off.
    pub instance: Option<String>,
    /// Where jobs without a `VpcConfig` reach S3 (Cove's own listener).
    pub local_s3: String,
    /// How long a transfer waits for S3 to accept a connection.
    pub connect_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a job is stopped (AWS: 120 s).
    pub stop_grace: Duration,
    /// The command Studio apps run (`cove serve --studio-app-command`);
    /// `None`: JupyterLab when installed, else Cove's built-in app server.
    pub studio_command: Option<Vec<String>>,
    /// Where Studio kept the users' home directories before they moved to
    /// the domains' EFS file systems.
    pub studio_dir: PathBuf,
    /// Where EFS file systems keep their bytes (`<data dir>/efs`).
    pub efs_dir: PathBuf,
    /// The host's CA bundle plus Cove's CA (`<data_dir>/ca/bundle.pem`),
    /// bound over /etc/ssl/certs/ca-certificates.crt in every container, so
    /// SDKs verify Cove's HTTPS listeners; `None` binds nothing.
    pub ca_bundle: Option<PathBuf>,
}

/// Who pulls an image: the workload's account and the access key it acts with.
pub use cove_ecr::token::Holder as Puller;

/// The root filesystem of image `uri`: its image in Cove's registry,
/// unpacked on first use, or a root filesystem that an earlier version's
/// `cove image-import` left. `Err` with the registry's word when the
/// registry has no such image, the unpacking failed, or the image is
/// another account's and its repository policy does not let `puller` pull.
pub fn image_root(settings: &Settings, uri: &str, puller: &Puller) -> Result<PathBuf, String> {
    let legacy = cove_runtime::image::legacy_rootfs_dir(&settings.images_dir, uri);
    let Some(registry) = &settings.registry else {
        return if legacy.is_dir() {
            Ok(legacy)
        } else {
            Err("Cove's registry is not open".into())
        };
    };
    match registry.resolve_as(uri, puller) {
        Ok(image) => {
            let dest = cove_runtime::image::unpacked_dir(&settings.images_dir, image.digest.hex());
            cove_runtime::image::unpack(&image.layers, &dest)
                .map_err(|e| format!("unpacking {uri}: {e:#}"))?;
            Ok(dest)
        }
        Err(_) if legacy.is_dir() => Ok(legacy),
        Err(e) => Err(e.message),
    }
}

/// The network namespace of a managed ENI, when the data plane is on.
pub fn eni_netns(settings: &Settings, eni: Option<&str>) -> Option<String> {
    Some(cove_net::naming::eni_netns(
        settings.instance.as_deref()?,
        eni?,
    ))
}
