//! A host's NVIDIA GPUs for the containers of GPU instance types, through
//! the Container Device Interface (CDI): the spec NVIDIA's tools write
//! (`nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`) lists each GPU
//! (`nvidia.com/gpu=0`, …) with the device nodes, driver libraries and
//! variables a container needs. Cove reads the specs, gives an instance as
//! many GPUs as its type has (those no running container holds), and turns
//! their edits into the container's devices, read-only binds and
//! environment. Of the spec's hooks, the two NVIDIA's tools write are done
//! by Cove: `create-symlinks` (links made in an image root before it
//! starts) and `update-ldcache` (its folders put on `LD_LIBRARY_PATH`);
//! others are skipped, with a line in the job's log.
//!
//! Which container holds which GPU is a file per GPU under the claims
//! directory naming the holder's container state directory; a claim whose
//! container has ended (or never started, after a launch's time) is free.

use cove_runtime::{Bind, Container, Status};
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The kind of CDI device Cove gives to GPU instance types.
pub const GPU_KIND: &str = "nvidia.com/gpu";

/// Where CDI specs are looked for (the CDI defaults).
pub const CDI_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// How long a new claim holds its GPU before its container runs.
const CLAIM_GRACE: Duration = Duration::from_secs(120);

/// Where this host's GPUs are described and claimed.
#[derive(Debug, Clone)]
pub struct GpuSettings {
    pub cdi_dirs: Vec<PathBuf>,
    pub claims_dir: PathBuf,
}

impl GpuSettings {
    /// Claims under `data_dir/gpus`, specs in [`cdi_dirs`].
    pub fn under(data_dir: &Path) -> GpuSettings {
        GpuSettings {
            cdi_dirs: cdi_dirs(),
            claims_dir: data_dir.join("gpus"),
        }
    }
}

/// Where this host's CDI specs are: `COVE_CDI_DIRS` (colon-separated)
/// when it is set, else the CDI defaults.
pub fn cdi_dirs() -> Vec<PathBuf> {
    match std::env::var("COVE_CDI_DIRS") {
        Ok(dirs) => dirs
            .split(':')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect(),
        Err(_) => CDI_DIRS.iter().map(PathBuf::from).collect(),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerEdits {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub hooks: Vec<Hook>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    pub path: String,
    pub host_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    pub hook_name: String,
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CdiDevice {
    name: String,
    #[serde(default)]
    container_edits: ContainerEdits,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CdiSpec {
    kind: String,
    #[serde(default)]
    devices: Vec<CdiDevice>,
    #[serde(default)]
    container_edits: ContainerEdits,
}

/// What a container is given with its GPUs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuGrant {
    /// The GPUs' CDI names (`0`, `1`, …).
    pub names: Vec<String>,
    pub devices: Vec<Bind>,
    pub binds: Vec<Bind>,
    pub env: Vec<(String, String)>,
    /// Links to make in an image root: (link path, target).
    pub links: Vec<(PathBuf, PathBuf)>,
    /// Lines for the container's log (hooks Cove does not run).
    pub notes: Vec<String>,
}

/// This host's GPUs: the devices of kind [`GPU_KIND`] in the CDI specs,
/// with the spec-wide edits; `Err` names a spec that cannot be read.
fn specs(dirs: &[PathBuf]) -> Result<Vec<CdiSpec>, String> {
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default();
            if !matches!(ext, "json" | "yaml" | "yml") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let spec = parse_spec(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            if spec.kind == GPU_KIND {
                found.push(spec);
            }
        }
    }
    Ok(found)
}

/// A CDI spec in JSON or YAML.
fn parse_spec(text: &str) -> Result<CdiSpec, String> {
    let value = match serde_json::from_str::<Value>(text) {
        Ok(v) => v,
        Err(_) => {
            let docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
            docs.first().map(yaml_to_json).unwrap_or(Value::Null)
        }
    };
    serde_json::from_value(value).map_err(|e| e.to_string())
}

fn yaml_to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .map_or_else(|_| Value::from(s.as_str()), Value::from),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::from(s.as_str()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(items) => items.iter().map(yaml_to_json).collect(),
        Yaml::Hash(map) => map
            .iter()
            .filter_map(|(k, v)| {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    _ => return None,
                };
                Some((key, yaml_to_json(v)))
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
        _ => Value::Null,
    }
}

/// The GPU names of the specs, in index order (`all` is not one GPU).
fn gpu_names(specs: &[CdiSpec]) -> Vec<String> {
    let mut names: Vec<String> = specs
        .iter()
        .flat_map(|s| s.devices.iter().map(|d| d.name.clone()))
        .filter(|n| n != "all")
        .collect();
    names.sort_by_key(|n| (n.parse::<u64>().unwrap_or(u64::MAX), n.clone()));
    names.dedup();
    names
}

/// How many GPUs the CDI specs in `dirs` describe (0 when none can be read).
pub fn count(dirs: &[PathBuf]) -> usize {
    specs(dirs).map(|s| gpu_names(&s).len()).unwrap_or(0)
}

/// The edits for GPUs `names`: each spec's own edits (once, for a spec
/// that has one of them) and each GPU's.
fn grant_of(specs: &[CdiSpec], names: &[String]) -> GpuGrant {
    let mut edits = Vec::new();
    for spec in specs {
        let chosen: Vec<&CdiDevice> = spec
            .devices
            .iter()
            .filter(|d| names.contains(&d.name))
            .collect();
        if chosen.is_empty() {
            continue;
        }
        edits.push(&spec.container_edits);
        edits.extend(chosen.iter().map(|d| &d.container_edits));
    }
    let mut grant = GpuGrant {
        names: names.to_vec(),
        ..GpuGrant::default()
    };
    let mut ld_folders: Vec<String> = Vec::new();
    for e in edits {
        for kv in &e.env {
            if let Some((k, v)) = kv.split_once('=') {
                grant.env.retain(|(name, _)| name != k);
                grant.env.push((k.to_string(), v.to_string()));
            }
        }
        for d in &e.device_nodes {
            let bind = Bind {
                source: d.host_path.as_deref().unwrap_or(&d.path).into(),
                target: d.path.clone().into(),
                read_only: false,
            };
            if !grant.devices.contains(&bind) {
                grant.devices.push(bind);
            }
        }
        for m in &e.mounts {
            let bind = Bind {
                source: m.host_path.clone().into(),
                target: m.container_path.clone().into(),
                read_only: m.options.iter().any(|o| o == "ro"),
            };
            if !grant.binds.contains(&bind) {
                grant.binds.push(bind);
            }
        }
        for h in &e.hooks {
            let args: Vec<&str> = h.args.iter().map(String::as_str).collect();
            if args.contains(&"create-symlinks") {
                for pair in args.windows(2).filter(|w| w[0] == "--link") {
                    if let Some((target, link)) = pair[1].split_once("::") {
                        grant.links.push((link.into(), target.into()));
                    }
                }
            } else if args.contains(&"update-ldcache") {
                for pair in args.windows(2).filter(|w| w[0] == "--folder") {
                    if !ld_folders.iter().any(|f| f == pair[1]) {
                        ld_folders.push(pair[1].to_string());
                    }
                }
            } else {
                grant.notes.push(format!(
                    "cove: the GPU's CDI hook {} {} is not run",
                    h.path,
                    h.args.join(" ")
                ));
            }
        }
    }
    if !ld_folders.is_empty() {
        grant
            .env
            .push(("LD_LIBRARY_PATH".into(), ld_folders.join(":")));
    }
    grant
}

/// Whether the claim at `claim` is held: by a container that runs, or by
/// a launch whose container has not started yet (for at most
/// [`CLAIM_GRACE`]). A holder whose container has ended holds nothing.
fn held(claim: &Path) -> bool {
    let Ok(holder) = std::fs::read_to_string(claim) else {
        return false;
    };
    match Container::adopt(Path::new(holder.trim())) {
        Ok(Some(c)) => c.status() == Status::Running,
        _ => std::fs::metadata(claim)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < CLAIM_GRACE),
    }
}

/// Claims up to `wanted` of this host's GPUs for the container whose state
/// directory is `holder` (the ones it holds already first, so a restarted
/// launch gets its own back), and returns what that container is given;
/// `Ok(None)` when the host describes no GPU. `Err`: a CDI spec cannot be
/// read.
pub fn claim(s: &GpuSettings, holder: &Path, wanted: usize) -> Result<Option<GpuGrant>, String> {
    let specs = specs(&s.cdi_dirs)?;
    let names = gpu_names(&specs);
    if names.is_empty() {
        return Ok(None);
    }
    std::fs::create_dir_all(&s.claims_dir)
        .map_err(|e| format!("creating {}: {e}", s.claims_dir.display()))?;
    let holder_text = holder.display().to_string();
    let mine = |name: &str| {
        std::fs::read_to_string(s.claims_dir.join(name)).is_ok_and(|h| h.trim() == holder_text)
    };
    let mut taken: Vec<String> = names
        .iter()
        .filter(|n| mine(n))
        .take(wanted)
        .cloned()
        .collect();
    for name in &names {
        if taken.len() >= wanted {
            break;
        }
        if taken.contains(name) {
            continue;
        }
        let path = s.claims_dir.join(name);
        if path.exists() && !held(&path) {
            let _ = std::fs::remove_file(&path);
        }
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, holder_text.as_bytes()));
        if created.is_ok() {
            taken.push(name.clone());
        }
    }
    taken.sort_by_key(|n| names.iter().position(|m| m == n));
    Ok(Some(grant_of(&specs, &taken)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec as `nvidia-ctk cdi generate` writes it, for two GPUs.
    const SPEC: &str = r#"---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
- name: "1"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
    - path: /dev/nvidia1
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  deviceNodes:
  - path: /dev/nvidiactl
  - path: /dev/nvidia-uvm
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args:
    - nvidia-ctk
    - hook
    - create-symlinks
    - --link
    - libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args: [nvidia-ctk, hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args: [nvidia-ctk, hook, chmod, --mode, "755", --path, /dev/dri]
  mounts:
  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05
    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05
    options: [ro, nosuid, nodev, bind]
"#;

    fn settings(dir: &Path) -> GpuSettings {
        std::fs::create_dir_all(dir.join("cdi")).unwrap();
        GpuSettings {
            cdi_dirs: vec![dir.join("cdi"), dir.join("absent")],
            claims_dir: dir.join("claims"),
        }
    }

    #[test]
    fn a_spec_in_yaml_or_json_gives_its_gpus_edits() {
        let yaml = parse_spec(SPEC).unwrap();
        let json = parse_spec(
            &serde_json::to_string(&yaml_to_json(
                &yaml_rust2::YamlLoader::load_from_str(SPEC).unwrap()[0],
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(yaml, json);
        assert_eq!(gpu_names(std::slice::from_ref(&yaml)), ["0", "1"]);
        let g = grant_of(&[yaml], &["1".to_string()]);
        let devices: Vec<&Path> = g.devices.iter().map(|d| d.target.as_path()).collect();
        assert_eq!(
            devices,
            [
                Path::new("/dev/nvidiactl"),
                Path::new("/dev/nvidia-uvm"),
                Path::new("/dev/nvidia1")
            ]
        );
        assert_eq!(g.binds.len(), 1);
        assert!(g.binds[0].read_only);
        assert_eq!(
            g.env,
            [
                ("NVIDIA_VISIBLE_DEVICES".to_string(), "void".to_string()),
                (
                    "LD_LIBRARY_PATH".to_string(),
                    "/usr/lib/x86_64-linux-gnu".to_string()
                )
            ]
        );
        assert_eq!(
            g.links,
            [(
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libcuda.so"),
                PathBuf::from("libcuda.so.1")
            )]
        );
        assert_eq!(g.notes.len(), 1, "the chmod hook is not run: {:?}", g.notes);
    }

    #[test]
    fn each_container_gets_gpus_no_running_one_holds() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        assert_eq!(
            claim(&s, Path::new("/x"), 1).unwrap(),
            None,
            "no spec, no GPU"
        );
        std::fs::write(dir.path().join("cdi/nvidia.yaml"), SPEC).unwrap();
        assert_eq!(count(&s.cdi_dirs), 2);
        let a = claim(&s, Path::new("/jobs/a/state"), 1).unwrap().unwrap();
        let b = claim(&s, Path::new("/jobs/b/state"), 2).unwrap().unwrap();
        assert_eq!(a.names, ["0"]);
        assert_eq!(b.names, ["1"], "only one was free");
        // The same holder asking again (a restarted launch) gets its own.
        let again = claim(&s, Path::new("/jobs/a/state"), 1).unwrap().unwrap();
        assert_eq!(again.names, ["0"]);
        // A claim whose holder does not run, once older than a launch
        // takes, is free again.
        let old = SystemTime::now() - CLAIM_GRACE - Duration::from_secs(1);
        let f = std::fs::File::options()
            .write(true)
            .open(s.claims_dir.join("0"))
            .unwrap();
        f.set_modified(old).unwrap();
        let c = claim(&s, Path::new("/jobs/c/state"), 1).unwrap().unwrap();
        assert_eq!(c.names, ["0"]);
        // A spec that cannot be read is said, not skipped.
        std::fs::write(dir.path().join("cdi/broken.json"), "{").unwrap();
        assert!(claim(&s, Path::new("/jobs/d/state"), 1)
            .unwrap_err()
            .contains("broken.json"));
    }
}
