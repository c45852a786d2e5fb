//! Launching one SageMaker container for a job host or a serving instance:
//! its `/opt/ml` files, `/etc/hosts`, `/etc/resolv.conf`, the CPU, memory
//! and GPUs of its instance type, and Cove's CA, under `cove-runtime`.

use crate::gpu::GpuGrant;
use crate::Settings;
use cove_model::instance;
use cove_runtime::{Bind, Container, ContainerSpec, RootFs};
use std::path::{Path, PathBuf};

/// What one host's container is given, as the SageMaker container contract
/// describes it.
pub struct HostContract {
    /// Files to write, relative to the host's `/opt/ml`.
    pub files: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
    pub workdir: String,
}

/// One SageMaker container as jobs and serving instances start it.
pub struct HostLaunch<'a> {
    /// The container's id (for cgroups).
    pub id: String,
    /// The host's working directory: `ml/` (bound at /opt/ml), `hosts`,
    /// `resolv.conf`, `container.log`, `state/`.
    pub dir: &'a Path,
    pub root: RootFs,
    pub contract: HostContract,
    pub hostname: String,
    /// The container's /etc/hosts.
    pub hosts_file: String,
    /// The host's ENI namespace; `None` outside a VPC.
    pub netns: Option<String>,
    /// Network isolation: loopback only, whatever `netns` is.
    pub isolated: bool,
    /// Sets the CPU and memory limits.
    pub instance_type: &'a str,
    /// Binds beyond `/opt/ml`, `/etc/hosts` and `/etc/resolv.conf`.
    pub extra_binds: Vec<Bind>,
    /// The GPUs given to the container ([`gpus_for`]).
    pub gpus: Option<GpuGrant>,
}

/// Where a host's container keeps its runtime state (its GPUs' claims
/// name it).
pub fn state_dir(dir: &Path) -> PathBuf {
    dir.join("state")
}

/// Claims the GPUs of an instance of `instance_type` whose working
/// directory is `dir`, and says in its log what it gets: all its type
/// has, fewer when the host has fewer free, or none (the job runs on CPU).
/// Returns how many it got and their grant.
pub fn gpus_for(
    settings: &Settings,
    instance_type: &str,
    dir: &Path,
) -> anyhow::Result<(u32, Option<GpuGrant>)> {
    let wanted = instance::gpus(instance_type);
    if wanted == 0 {
        return Ok((0, None));
    }
    let claimed = crate::gpu::claim(&settings.gpus, &state_dir(dir), wanted as usize);
    let on_cpu = |why: String| {
        (
            0,
            None,
            format!("{why}, so the job runs on CPU (SM_NUM_GPUS=0)"),
        )
    };
    let (got, grant, what) = match claimed {
        Ok(Some(g)) if !g.names.is_empty() => {
            let got = u32::try_from(g.names.len()).unwrap_or(u32::MAX);
            let what = format!(
                "this container gets {got} of this host's (CDI {} {})",
                crate::gpu::GPU_KIND,
                g.names.join(",")
            );
            (got, Some(g), what)
        }
        Ok(Some(_)) => on_cpu("every GPU of this host is in use".into()),
        Ok(None) if instance::host_has_gpus() => on_cpu("this host has NVIDIA devices but no CDI spec of them (nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml)".into()),
        Ok(None) => on_cpu("this host has none".into()),
        Err(e) => on_cpu(format!("this host's CDI specs cannot be read ({e})")),
    };
    crate::logs::note(
        &dir.join("container.log"),
        &format!("cove: {instance_type} has {wanted} GPU(s) on AWS; {what}"),
    )?;
    Ok((got, grant))
}

/// Gives the container its GPUs: their device nodes, libraries and
/// variables, and the links the CDI spec's hooks would make (in an image
/// root; script mode sees the host's own).
fn give_gpus(spec: &mut ContainerSpec, grant: GpuGrant) -> anyhow::Result<()> {
    spec.devices.extend(grant.devices);
    spec.binds.extend(grant.binds);
    for (name, value) in grant.env {
        match spec.env.iter_mut().find(|(n, _)| *n == name) {
            Some((_, old)) if name == "LD_LIBRARY_PATH" => *old = format!("{value}:{old}"),
            Some((_, old)) => *old = value,
            None => spec.env.push((name, value)),
        }
    }
    let mut notes = grant.notes;
    if let RootFs::Image(root) = &spec.root {
        for (link, target) in grant.links {
            if !link_in_root(root, &link, &target)? {
                notes.push(format!(
                    "cove: the GPU's link {} -> {} is not made: the image has a link or file in its way",
                    link.display(),
                    target.display()
                ));
            }
        }
    }
    for note in notes {
        crate::logs::note(&spec.log_path, &note)?;
    }
    Ok(())
}

/// Makes the link `link` (an absolute path in the container) to `target`
/// in the image root `root`, making the directories on its way. The image
/// is the user's: a directory of the path that is a link (which could lead
/// out of the root) or not a directory leaves the link unmade (`false`),
/// as does anything already at `link`.
fn link_in_root(root: &Path, link: &Path, target: &Path) -> anyhow::Result<bool> {
    use std::path::Component;
    let mut at = root.to_path_buf();
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in link.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(p) => parts.push(p),
            _ => return Ok(false),
        }
    }
    let Some((name, dirs)) = parts.split_last() else {
        return Ok(false);
    };
    for dir in dirs {
        at.push(dir);
        match at.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&at)?,
            Err(e) => return Err(e.into()),
        }
    }
    at.push(name);
    if at.symlink_metadata().is_ok() {
        return Ok(false);
    }
    std::os::unix::fs::symlink(target, &at)?;
    Ok(true)
}

/// Writes a host's contract files, /etc/hosts and /etc/resolv.conf (the
/// VPC resolver, or none when isolated) and starts its container, trusting
/// Cove's CA.
/// Tells a launch that failed because the container's own program could
/// not run (`Ok` with the reason: the job or instance fails) from a failure
/// of the host (`Err`: the driver retries).
pub fn program_fault(e: anyhow::Error) -> anyhow::Result<String> {
    match e.downcast_ref::<cove_runtime::ProgramNotStarted>() {
        Some(p) => Ok(p.0.clone()),
        None => Err(e),
    }
}

pub fn launch_host(settings: &Settings, h: HostLaunch) -> anyhow::Result<Container> {
    let dir = h.dir;
    let ml = dir.join("ml");
    for (path, content) in &h.contract.files {
        let p = ml.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(p, content)?;
    }
    std::fs::write(dir.join("hosts"), &h.hosts_file)?;
    let isolated = h.isolated || h.netns.is_none();
    let resolv = match &h.netns {
        Some(ns) if !isolated => PathBuf::from(format!("/etc/netns/{ns}/resolv.conf")),
        _ => {
            std::fs::write(dir.join("resolv.conf"), "")?;
            dir.join("resolv.conf")
        }
    };
    let (cpus, memory_gib) = instance::resources(h.instance_type).unwrap_or((1.0, 1.0));
    let mut spec = ContainerSpec {
        id: h.id,
        root: h.root,
        netns: if isolated { None } else { h.netns },
        hostname: h.hostname,
        binds: vec![
            Bind {
                source: ml,
                target: "/opt/ml".into(),
                read_only: false,
            },
            Bind {
                source: dir.join("hosts"),
                target: "/etc/hosts".into(),
                read_only: true,
            },
            Bind {
                source: resolv,
                target: "/etc/resolv.conf".into(),
                read_only: true,
            },
        ],
        devices: Vec::new(),
        argv: h.contract.argv,
        env: h.contract.env,
        workdir: h.contract.workdir.into(),
        cpus,
        memory_bytes: cove_model::convert::f64_to_u64(memory_gib * 1024.0 * 1024.0 * 1024.0),
        log_path: dir.join("container.log"),
        state_dir: state_dir(dir),
    };
    spec.binds.extend(h.extra_binds);
    if let Some(grant) = h.gpus {
        give_gpus(&mut spec, grant)?;
    }
    trust_coves_ca(settings, &mut spec);
    Container::launch(&spec, &settings.runner)
}

/// Makes a container trust Cove's CA beside the host's roots: the bundle
/// over the system bundle, and the variables SDKs read (a job's own
/// `Environment` values win).
fn trust_coves_ca(settings: &Settings, spec: &mut ContainerSpec) {
    let Some(bundle) = &settings.ca_bundle else {
        return;
    };
    // Script mode's /etc is the host's, read-only: the file must be there
    // to be bound over.
    if matches!(spec.root, RootFs::Host) && !Path::new(cove_tls::BUNDLE_TARGET).exists() {
        tracing::warn!(
            "{} is missing on the host, so jobs in script mode do not trust Cove's CA",
            cove_tls::BUNDLE_TARGET
        );
        return;
    }
    spec.binds.push(Bind {
        source: bundle.clone(),
        target: cove_tls::BUNDLE_TARGET.into(),
        read_only: true,
    });
    for (name, value) in cove_tls::bundle_env() {
        if !spec.env.iter().any(|(n, _)| *n == name) {
            spec.env.push((name, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_link_is_made_inside_the_image_and_never_through_its_links() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let link = Path::new("/usr/lib/x86_64-linux-gnu/libcuda.so");
        assert!(link_in_root(&root, link, Path::new("libcuda.so.1")).unwrap());
        assert_eq!(
            std::fs::read_link(root.join("usr/lib/x86_64-linux-gnu/libcuda.so")).unwrap(),
            Path::new("libcuda.so.1")
        );
        // Made already: left as it is.
        assert!(!link_in_root(&root, link, Path::new("other")).unwrap());
        // An image whose directory is a link out of the root gets nothing
        // made through it.
        std::os::unix::fs::symlink(&outside, root.join("lib64")).unwrap();
        assert!(!link_in_root(&root, Path::new("/lib64/libcuda.so"), Path::new("x")).unwrap());
        assert!(!link_in_root(&root, Path::new("/usr/../etc/x"), Path::new("x")).unwrap());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }
}
