//! Host plumbing for the job drivers, with no SageMaker API in it: where a
//! job's files live and how this host is set up ([`Settings`]), how one
//! host's container is launched on its ENI ([`launch`]), how data moves
//! between S3 and a host's network ([`s3`]), how a container's log reaches
//! CloudWatch Logs ([`logs`]), a host's ML storage volume ([`volume`]), how
//! Cove talks HTTP to a serving container inside its namespace ([`http`]),
//! EFS file systems mounted through a host's ENI ([`efs`]), and the GPUs a
//! host's containers are given ([`gpu`]).

pub mod efs;
pub mod gpu;
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
    /// Unpacked images (`<manifest digest>/rootfs`), and on an agent the
    /// blobs it pulled (`blobs/sha256/<hex>`, [`blob_cache`]).
    pub images_dir: PathBuf,
    /// Cove's registry, which jobs' image URIs are resolved in; `None` on
    /// an agent, which pulls from the control plane's.
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
    /// Where this host's GPUs are described (CDI) and claimed.
    pub gpus: gpu::GpuSettings,
}

/// Who pulls an image: the workload's account and the access key it acts with.
pub use cove_ecr::token::Holder as Puller;

/// The root filesystem of image `uri`: its image in Cove's registry,
/// unpacked on first use, or a root filesystem that an earlier version's
/// `cove image-import` left. On a host without the registry (an agent),
/// `from_control_plane` says how to pull it: the image is pulled from the
/// control plane's registry on the underlay into this host's blob cache
/// (unless it is unpacked here already) and unpacked.
pub fn image_root(
    settings: &Settings,
    uri: &str,
    puller: &Puller,
    from_control_plane: Option<(&cove_model::jobs::ImagePull, &cove_model::world::World)>,
) -> Result<PathBuf, NoImage> {
    let legacy = cove_runtime::image::legacy_rootfs_dir(&settings.images_dir, uri);
    let Some(registry) = &settings.registry else {
        return match from_control_plane {
            Some((pull, world)) => {
                pulled_image_root(settings, uri, pull, world).map_err(NoImage::Broken)
            }
            None if legacy.is_dir() => Ok(legacy),
            None => Err(NoImage::Absent("Cove's registry is not open".into())),
        };
    };
    match registry.resolve_as(uri, puller) {
        Ok(image) => {
            let dest = cove_runtime::image::unpacked_dir(&settings.images_dir, image.digest.hex());
            cove_runtime::image::unpack(&image.layers, &dest)
                .map_err(|e| NoImage::Broken(format!("unpacking {uri}: {e:#}")))?;
            Ok(dest)
        }
        Err(_) if legacy.is_dir() => Ok(legacy),
        Err(e) => Err(NoImage::Absent(e.message)),
    }
}

/// Why [`image_root`] gave no root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoImage {
    /// The registry has no such image, or will not give it to the puller
    /// (another account's, and its repository policy says no): a
    /// script-mode workload may run on the host's root instead.
    Absent(String),
    /// The registry has the image but it could not be pulled or unpacked
    /// here (a full disk, a broken layer, the control plane unreachable):
    /// running anything else in its place would hide the failure.
    Broken(String),
}

impl std::fmt::Display for NoImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoImage::Absent(why) | NoImage::Broken(why) => f.write_str(why),
        }
    }
}

/// Where an agent keeps the blobs it pulled.
pub fn blob_cache(settings: &Settings) -> PathBuf {
    settings.images_dir.join("blobs")
}

/// What an instance of a workload pulls for image `uri`, from `address`:
/// `Err` when the URI is not one of Cove's registry.
pub fn pull_of(
    uri: &str,
    pull: &cove_model::jobs::ImagePull,
    address: std::net::SocketAddr,
) -> Result<OwnedPull, String> {
    let parsed: cove_ecr::names::ImageUri = uri
        .parse()
        .map_err(|()| format!("{uri} is not an ECR image URI"))?;
    Ok(OwnedPull {
        host: parsed.registry.name(),
        repository: parsed.repository,
        address,
        pull: pull.clone(),
    })
}

/// A [`pull::Pull`] that owns its names, to move into the thread that
/// enters a host's namespace.
pub struct OwnedPull {
    host: String,
    repository: String,
    address: std::net::SocketAddr,
    pull: cove_model::jobs::ImagePull,
}

impl OwnedPull {
    pub fn as_pull(&self) -> pull::Pull<'_> {
        pull::Pull {
            host: &self.host,
            address: self.address,
            repository: &self.repository,
            manifest: &self.pull.manifest,
            authorization: &self.pull.authorization,
        }
    }
}

/// The TLS client configuration that trusts Cove's CA (the host's bundle).
pub fn registry_tls(settings: &Settings) -> Result<Arc<rustls::ClientConfig>, String> {
    let bundle = settings
        .ca_bundle
        .as_deref()
        .ok_or("this host does not know Cove's CA, so it cannot verify the registry")?;
    cove_tls::client_config(bundle).map_err(|e| format!("{e:#}"))
}

/// [`image_root`] on an agent: the image unpacked here already, or pulled
/// from the control plane's registry on the underlay and unpacked.
fn pulled_image_root(
    settings: &Settings,
    uri: &str,
    pull: &cove_model::jobs::ImagePull,
    world: &cove_model::world::World,
) -> Result<PathBuf, String> {
    let digest: cove_ecr::names::ContentDigest = pull
        .manifest
        .parse()
        .map_err(|_| format!("{} is not a manifest digest", pull.manifest))?;
    let dest = cove_runtime::image::unpacked_dir(&settings.images_dir, digest.hex());
    if dest.is_dir() {
        return Ok(dest);
    }
    let control_plane = cove_model::hosts::control_plane(world)
        .ok_or("no control plane has registered its host")?;
    let port = control_plane
        .registry_port
        .ok_or("the control plane serves no registry to agents")?;
    let address = std::net::SocketAddr::from((control_plane.underlay, port));
    let request = pull_of(uri, pull, address)?;
    let cache = blob_cache(settings);
    let started = std::time::Instant::now();
    let pulled = pull::pull(
        &request.as_pull(),
        pull::Keep::Missing(&cache),
        registry_tls(settings)?,
        settings.connect_timeout,
    )
    .map_err(|e| format!("pulling {uri} from the control plane's registry: {e}"))?;
    tracing::info!(
        image = %uri,
        bytes = pulled.received,
        seconds = started.elapsed().as_secs_f64(),
        "pulled the image from the control plane's registry"
    );
    cove_runtime::image::unpack(&pulled.layers, &dest)
        .map_err(|e| format!("unpacking {uri}: {e:#}"))?;
    Ok(dest)
}

/// The network namespace of a managed ENI, when the data plane is on.
pub fn eni_netns(settings: &Settings, eni: Option<&str>) -> Option<String> {
    Some(cove_net::naming::eni_netns(
        settings.instance.as_deref()?,
        eni?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "000000000000";
    const URI: &str = "000000000000.dkr.ecr.us-east-1.amazonaws.com/tools:1";

    fn settings(dir: &std::path::Path, images_dir: PathBuf) -> Settings {
        let ecr = cove_ecr::Ecr::open(&dir.join("ecr"), None, ACCOUNT, "us-east-1").unwrap();
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        cove_ecr::import::import(&ecr, URI, &root).unwrap();
        Settings {
            jobs_dir: dir.join("jobs"),
            images_dir,
            registry: Some(Arc::new(ecr)),
            runner: PathBuf::from("/bin/false"),
            instance: None,
            local_s3: "127.0.0.1:1".into(),
            connect_timeout: Duration::from_secs(1),
            stop_grace: Duration::from_secs(1),
            studio_command: None,
            studio_dir: dir.join("studio"),
            efs_dir: dir.join("efs"),
            ca_bundle: None,
            gpus: gpu::GpuSettings::under(dir),
        }
    }

    fn puller() -> Puller {
        Puller {
            account: ACCOUNT.into(),
            access_key: String::new(),
        }
    }

    #[test]
    fn an_image_in_the_registry_is_unpacked_once_and_a_missing_one_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), dir.path().join("images"));
        let root = image_root(&s, URI, &puller(), None).unwrap();
        assert!(root.join("bin/tool").is_file());
        assert_eq!(image_root(&s, URI, &puller(), None).unwrap(), root);
        let missing = "000000000000.dkr.ecr.us-east-1.amazonaws.com/tools:2";
        assert!(matches!(
            image_root(&s, missing, &puller(), None),
            Err(NoImage::Absent(_))
        ));
    }

    #[test]
    fn an_image_that_cannot_be_unpacked_here_is_broken_not_absent() {
        let dir = tempfile::tempdir().unwrap();
        // Where images are unpacked is a file: unpacking fails as it does on a full disk.
        let images = dir.path().join("images");
        std::fs::write(&images, b"").unwrap();
        let s = settings(dir.path(), images);
        match image_root(&s, URI, &puller(), None) {
            Err(NoImage::Broken(why)) => assert!(why.starts_with("unpacking "), "{why}"),
            other => panic!("expected a broken image, got {other:?}"),
        }
    }
}
