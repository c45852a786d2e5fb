//! Amazon EFS: file systems, mount targets, access points, file system
//! policies, lifecycle and backup settings, and tags. A mount target is a
//! requester-managed ENI in one subnet, where Cove serves the file system
//! over NFS (port 2049), so its security groups, the subnet's ACL and the
//! routes decide who reaches it. A file system's bytes live in
//! `<data dir>/efs/<id>`, made at creation and removed with it.

use cove_model::efs::{
    AccessPoint, CreationInfo, FileSystem, LifeCycleState, MountTarget, PosixUser,
};
use cove_model::ids::{new_id, now_rfc3339};
use cove_model::paging;
use cove_model::world::{Tags, World};
use cove_model::{AwsError, AwsResult};
use cove_shapes::efs::*;
use cove_store::{Store, Tx};
use cove_wire::{model::ServiceModel, Protocol, RequestContext, Service};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// AWS's limit of access points per file system.
const MAX_ACCESS_POINTS: usize = 10_000;

pub struct EfsService {
    store: Arc<Store>,
    /// Cove's data directory; file systems live in `efs/<id>` below it.
    data_dir: PathBuf,
}

impl EfsService {
    pub fn new(store: Arc<Store>, data_dir: &Path) -> EfsService {
        EfsService {
            store,
            data_dir: data_dir.to_path_buf(),
        }
    }
}

/// The directory holding file system `id`'s bytes.
pub fn file_system_dir(data_dir: &Path, id: &str) -> PathBuf {
    data_dir.join("efs").join(id)
}

impl Service for EfsService {
    fn signing_name(&self) -> &'static str {
        "elasticfilesystem"
    }
    fn protocol(&self) -> Protocol {
        Protocol::RestJson
    }
    fn model(&self) -> &'static ServiceModel {
        cove_wire::model::efs()
    }
    fn validation_error_code(&self) -> &'static str {
        "ValidationException"
    }
    fn handle(&self, ctx: &RequestContext, input: Value) -> AwsResult<Value> {
        let request = match Request::parse(&ctx.operation, &input) {
            Some(Ok(q)) => q,
            Some(Err(e)) => return Err(bad_request(e.to_string())),
            None => {
                return Err(bad_request(format!(
                    "{} is not served here.",
                    ctx.operation
                )))
            }
        };
        let r = Req {
            store: &self.store,
            data_dir: &self.data_dir,
            account: ctx.account_id(),
            region: &ctx.region,
        };
        match &request {
            Request::CreateFileSystem(q) => create_file_system(&r, q),
            Request::DescribeFileSystems(q) => describe_file_systems(&r, q),
            Request::DeleteFileSystem(q) => delete_file_system(&r, q),
            Request::UpdateFileSystem(q) => update_file_system(&r, q),
            Request::CreateMountTarget(q) => create_mount_target(&r, q),
            Request::DescribeMountTargets(q) => describe_mount_targets(&r, q),
            Request::DeleteMountTarget(q) => delete_mount_target(&r, q),
            Request::DescribeMountTargetSecurityGroups(q) => mount_target_groups(&r, q),
            Request::ModifyMountTargetSecurityGroups(q) => modify_mount_target_groups(&r, q),
            Request::CreateAccessPoint(q) => create_access_point(&r, q),
            Request::DescribeAccessPoints(q) => describe_access_points(&r, q),
            Request::DeleteAccessPoint(q) => delete_access_point(&r, q),
            Request::PutFileSystemPolicy(q) => put_policy(&r, q),
            Request::DescribeFileSystemPolicy(q) => describe_policy(&r, q),
            Request::DeleteFileSystemPolicy(q) => delete_policy(&r, q),
            Request::PutLifecycleConfiguration(q) => put_lifecycle(&r, q),
            Request::DescribeLifecycleConfiguration(q) => describe_lifecycle(&r, q),
            Request::PutBackupPolicy(q) => put_backup_policy(&r, q),
            Request::DescribeBackupPolicy(q) => describe_backup_policy(&r, q),
            Request::CreateTags(q) => {
                tag(&r, &q.file_system_id, &q.tags)?;
                Ok(json!({}))
            }
            Request::TagResource(q) => {
                tag(&r, &q.resource_id, &q.tags)?;
                Ok(json!({}))
            }
            Request::DeleteTags(q) => {
                untag(&r, &q.file_system_id, &q.tag_keys)?;
                Ok(json!({}))
            }
            Request::UntagResource(q) => {
                untag(&r, &q.resource_id, &q.tag_keys)?;
                Ok(json!({}))
            }
            Request::DescribeTags(q) => {
                let w = r.world();
                file_system(&w, r.region, &q.file_system_id)?;
                let (tags, next) = page(
                    render_tags(&w, &q.file_system_id),
                    q.marker.as_deref(),
                    q.max_items,
                    100,
                )?;
                Ok(json!({"Tags": tags, "NextMarker": next, "Marker": q.marker}))
            }
            Request::ListTagsForResource(q) => {
                let w = r.world();
                resource_exists(&w, r.region, &q.resource_id)?;
                let (tags, next) = page(
                    render_tags(&w, &q.resource_id),
                    q.next_token.as_deref(),
                    q.max_results,
                    100,
                )?;
                Ok(json!({"Tags": tags, "NextToken": next}))
            }
        }
    }
}

/// One request's account and region.
struct Req<'a> {
    store: &'a Store,
    data_dir: &'a Path,
    account: &'a str,
    region: &'a str,
}

impl Req<'_> {
    fn world(&self) -> Arc<World> {
        self.store.view(self.account)
    }
    fn write<T>(&self, f: impl FnOnce(&mut Tx) -> AwsResult<T>) -> AwsResult<T> {
        self.store.write_as(self.account, f)
    }
}

fn bad_request(message: impl Into<String>) -> AwsError {
    AwsError::client("BadRequest", message)
}

fn not_found(code: &str, message: String) -> AwsError {
    AwsError::new(404, code, message)
}

fn conflict(code: &str, message: String) -> AwsError {
    AwsError::new(409, code, message)
}

fn file_system<'w>(w: &'w World, region: &str, id: &str) -> AwsResult<&'w FileSystem> {
    w.file_systems
        .get(id)
        .map(Arc::as_ref)
        .filter(|f| f.region == region)
        .ok_or_else(|| {
            not_found(
                "FileSystemNotFound",
                format!("File system '{id}' does not exist."),
            )
        })
}

fn mount_target<'w>(w: &'w World, region: &str, id: &str) -> AwsResult<&'w MountTarget> {
    w.mount_targets
        .get(id)
        .map(Arc::as_ref)
        .filter(|m| m.region == region)
        .ok_or_else(|| {
            not_found(
                "MountTargetNotFound",
                format!("Mount target '{id}' does not exist."),
            )
        })
}

fn access_point<'w>(w: &'w World, region: &str, id: &str) -> AwsResult<&'w AccessPoint> {
    w.access_points
        .get(id)
        .map(Arc::as_ref)
        .filter(|a| a.region == region)
        .ok_or_else(|| {
            not_found(
                "AccessPointNotFound",
                format!("Access point '{id}' does not exist."),
            )
        })
}

/// A taggable resource (a file system or an access point) of the region.
fn resource_exists(w: &World, region: &str, id: &str) -> AwsResult<()> {
    if id.starts_with("fsap-") {
        access_point(w, region, id).map(|_| ())
    } else {
        file_system(w, region, id).map(|_| ())
    }
}

fn tags_of(w: &World, id: &str) -> Tags {
    w.tags.get(id).cloned().unwrap_or_default()
}

fn render_tags(w: &World, id: &str) -> Vec<Value> {
    tags_of(w, id)
        .iter()
        .map(|(k, v)| json!({"Key": k, "Value": v}))
        .collect()
}

fn tag_map(tags: &[Tag]) -> AwsResult<Tags> {
    let mut out = Tags::new();
    for t in tags {
        if t.key.starts_with("aws:") {
            return Err(bad_request(
                "Tag keys starting with 'aws:' are reserved for AWS.",
            ));
        }
        out.insert(t.key.clone(), t.value.clone());
    }
    Ok(out)
}

fn tag(r: &Req, id: &str, tags: &[Tag]) -> AwsResult<()> {
    let new = tag_map(tags)?;
    r.write(|tx| {
        resource_exists(&tx.world, r.region, id)?;
        let mut all = tags_of(&tx.world, id);
        all.extend(new);
        if all.len() > 50 {
            return Err(bad_request("A resource can have at most 50 tags."));
        }
        tx.set_tags(id, all);
        Ok(())
    })
}

fn untag(r: &Req, id: &str, keys: &[String]) -> AwsResult<()> {
    r.write(|tx| {
        resource_exists(&tx.world, r.region, id)?;
        let mut all = tags_of(&tx.world, id);
        for k in keys {
            all.remove(k);
        }
        tx.set_tags(id, all);
        Ok(())
    })
}

/// One page of `items` after `marker` (a decimal offset Cove hands out).
fn page<T>(
    items: Vec<T>,
    marker: Option<&str>,
    max: Option<i64>,
    default_max: usize,
) -> AwsResult<(Vec<T>, Option<String>)> {
    let start = paging::start_of(marker, items.len())
        .ok_or_else(|| bad_request("The marker or token is not valid."))?;
    let max = max
        .map(|m| usize::try_from(m.max(1)).unwrap_or(usize::MAX))
        .unwrap_or(default_max);
    let (page, next) = paging::cut(items, start, max);
    Ok((page, next.map(|i| i.to_string())))
}

/// The bytes under `dir`, as EFS meters them (Cove keeps every byte in
/// the Standard class).
fn size_of(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn zone_id(region: &str, zone: &str) -> Option<String> {
    cove_model::region::zones(region)
        .into_iter()
        .find(|(name, _)| name == zone)
        .map(|(_, id)| id)
}

fn render_file_system(r: &Req, w: &World, f: &FileSystem, state: LifeCycleState) -> Value {
    let tags = tags_of(w, &f.id);
    let size = size_of(&file_system_dir(r.data_dir, &f.id));
    let mount_targets = w
        .mount_targets
        .values()
        .filter(|m| m.file_system_id == f.id)
        .count();
    let now = cove_model::ids::now_rfc3339();
    json!({
        "OwnerId": f.owner_id,
        "CreationToken": f.creation_token,
        "FileSystemId": f.id,
        "FileSystemArn": f.arn(),
        "CreationTime": f.created_at,
        "LifeCycleState": state.as_str(),
        "Name": tags.get("Name"),
        "NumberOfMountTargets": mount_targets,
        "SizeInBytes": {
            "Value": size,
            "Timestamp": now,
            "ValueInStandard": size,
            "ValueInIA": 0,
            "ValueInArchive": 0,
        },
        "PerformanceMode": f.performance_mode,
        "Encrypted": f.encrypted,
        "KmsKeyId": f.kms_key_id,
        "ThroughputMode": f.throughput_mode,
        "ProvisionedThroughputInMibps": f.provisioned_throughput_mibps,
        "AvailabilityZoneName": f.availability_zone,
        "AvailabilityZoneId": f.availability_zone.as_deref().and_then(|z| zone_id(&f.region, z)),
        "Tags": render_tags(w, &f.id),
        "FileSystemProtection": {"ReplicationOverwriteProtection": "ENABLED"},
    })
}

/// Checks a throughput mode and its provisioned rate together.
fn throughput(mode: &str, mibps: Option<f64>) -> AwsResult<Option<f64>> {
    match (mode, mibps) {
        ("provisioned", None) => Err(bad_request(
            "ProvisionedThroughputInMibps is required when ThroughputMode is provisioned.",
        )),
        ("provisioned", Some(m)) if !(1.0..=3414.0).contains(&m) => Err(bad_request(
            "ProvisionedThroughputInMibps must be between 1 and 3414.",
        )),
        ("provisioned", Some(m)) => Ok(Some(m)),
        (_, Some(_)) => Err(bad_request(
            "ProvisionedThroughputInMibps can only be set when ThroughputMode is provisioned.",
        )),
        (_, None) => Ok(None),
    }
}

/// A new, available file system with EFS's defaults (bursting, general
/// purpose, unencrypted, regional, no backups), for the caller to adjust
/// and store.
pub fn new_file_system(region: &str, account: &str, creation_token: &str) -> FileSystem {
    FileSystem::with_defaults(
        &new_id("fs"),
        region,
        account,
        creation_token,
        &now_rfc3339(),
    )
}

fn create_file_system(r: &Req, q: &CreateFileSystemRequest) -> AwsResult<Value> {
    let performance_mode = q
        .performance_mode
        .clone()
        .unwrap_or_else(|| "generalPurpose".into());
    let throughput_mode = q
        .throughput_mode
        .clone()
        .unwrap_or_else(|| "bursting".into());
    let provisioned = throughput(&throughput_mode, q.provisioned_throughput_in_mibps)?;
    if let Some(zone) = &q.availability_zone_name {
        if zone_id(r.region, zone).is_none() {
            return Err(AwsError::client(
                "UnsupportedAvailabilityZone",
                format!("The availability zone '{zone}' is not supported."),
            ));
        }
        if performance_mode == "maxIO" {
            return Err(bad_request(
                "One Zone file systems support only the generalPurpose performance mode.",
            ));
        }
    }
    if q.kms_key_id.is_some() && q.encrypted != Some(true) {
        return Err(bad_request(
            "KmsKeyId can only be specified for an encrypted file system.",
        ));
    }
    let tags = tag_map(q.tags.as_deref().unwrap_or_default())?;
    let encrypted = q.encrypted.unwrap_or(false);
    // Backups are on by default for One Zone file systems, as on AWS.
    let backup = q.backup.unwrap_or(q.availability_zone_name.is_some());
    let fs = r.write(|tx| {
        if let Some(existing) = tx
            .world
            .file_systems
            .values()
            .find(|f| f.region == r.region && f.creation_token == q.creation_token)
        {
            return Err(conflict(
                "FileSystemAlreadyExists",
                format!(
                    "File system '{}' already exists with creation token '{}'",
                    existing.id, q.creation_token
                ),
            ));
        }
        let mut fs = new_file_system(r.region, r.account, &q.creation_token);
        fs.performance_mode = performance_mode.clone();
        fs.throughput_mode = throughput_mode.clone();
        fs.provisioned_throughput_mibps = provisioned;
        fs.encrypted = encrypted;
        fs.kms_key_id = encrypted.then(|| {
            q.kms_key_id.clone().unwrap_or_else(|| {
                format!(
                    "arn:aws:kms:{}:{}:key/{}",
                    r.region,
                    r.account,
                    uuid::Uuid::new_v4()
                )
            })
        });
        fs.availability_zone = q.availability_zone_name.clone();
        fs.backup_status = if backup { "ENABLED" } else { "DISABLED" }.into();
        tx.put(fs.clone());
        if !tags.is_empty() {
            tx.set_tags(&fs.id, tags.clone());
        }
        Ok(fs)
    })?;
    let dir = file_system_dir(r.data_dir, &fs.id);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::error!(dir = %dir.display(), error = %e, "cannot make a file system's directory");
    }
    // AWS answers `creating`; Cove's file system is usable at once.
    let w = r.world();
    Ok(render_file_system(r, &w, &fs, LifeCycleState::Creating))
}

fn describe_file_systems(r: &Req, q: &DescribeFileSystemsRequest) -> AwsResult<Value> {
    let w = r.world();
    if q.creation_token.is_some() && q.file_system_id.is_some() {
        return Err(bad_request(
            "Only one of CreationToken and FileSystemId may be specified.",
        ));
    }
    let all: Vec<&FileSystem> = match &q.file_system_id {
        Some(id) => vec![file_system(&w, r.region, id)?],
        None => w
            .file_systems
            .values()
            .map(Arc::as_ref)
            .filter(|f| f.region == r.region)
            .filter(|f| {
                q.creation_token
                    .as_ref()
                    .is_none_or(|t| &f.creation_token == t)
            })
            .collect(),
    };
    let (items, next) = page(all, q.marker.as_deref(), q.max_items, 100)?;
    let rendered: Vec<Value> = items
        .iter()
        .map(|f| render_file_system(r, &w, f, f.state))
        .collect();
    Ok(json!({"FileSystems": rendered, "Marker": q.marker, "NextMarker": next}))
}

/// Removes a file system with its mount targets (and their ENIs) and
/// access points from the store, in a write; its bytes stay until
/// [`remove_bytes`].
pub fn remove_file_system(tx: &mut Tx, fs_id: &str) {
    let targets: Vec<MountTarget> = tx
        .world
        .mount_targets
        .values()
        .filter(|m| m.file_system_id == fs_id)
        .map(|m| (**m).clone())
        .collect();
    for mt in &targets {
        remove_mount_target(tx, mt);
    }
    let points: Vec<String> = tx
        .world
        .access_points
        .values()
        .filter(|a| a.file_system_id == fs_id)
        .map(|a| a.id.clone())
        .collect();
    for id in points {
        tx.delete::<AccessPoint>(&id);
        tx.set_tags(&id, Tags::new());
    }
    tx.delete::<FileSystem>(fs_id);
    tx.set_tags(fs_id, Tags::new());
}

/// Removes mount target `mt` and its ENI, in a write (its NFS listener
/// goes with the ENI).
pub fn remove_mount_target(tx: &mut Tx, mt: &MountTarget) {
    cove_ec2::delete_managed_eni(tx, &mt.network_interface_id);
    tx.delete::<MountTarget>(&mt.id);
}

/// Removes a deleted file system's bytes from `<data dir>/efs`.
pub fn remove_bytes(data_dir: &Path, fs_id: &str) {
    let dir = file_system_dir(data_dir, fs_id);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted file system's bytes");
        }
    }
}

fn delete_file_system(r: &Req, q: &DeleteFileSystemRequest) -> AwsResult<Value> {
    r.write(|tx| {
        file_system(&tx.world, r.region, &q.file_system_id)?;
        if tx
            .world
            .mount_targets
            .values()
            .any(|m| m.file_system_id == q.file_system_id)
        {
            return Err(conflict(
                "FileSystemInUse",
                format!(
                    "File system '{}' has mount targets. Delete them first.",
                    q.file_system_id
                ),
            ));
        }
        remove_file_system(tx, &q.file_system_id);
        Ok(())
    })?;
    remove_bytes(r.data_dir, &q.file_system_id);
    Ok(json!({}))
}

fn update_file_system(r: &Req, q: &UpdateFileSystemRequest) -> AwsResult<Value> {
    let fs = r.write(|tx| {
        let mut fs = file_system(&tx.world, r.region, &q.file_system_id)?.clone();
        let mode = q
            .throughput_mode
            .clone()
            .unwrap_or_else(|| fs.throughput_mode.clone());
        let mibps = match (&q.provisioned_throughput_in_mibps, mode.as_str()) {
            (Some(m), _) => Some(*m),
            (None, "provisioned") => fs.provisioned_throughput_mibps,
            (None, _) => None,
        };
        fs.provisioned_throughput_mibps = throughput(&mode, mibps)?;
        fs.throughput_mode = mode;
        tx.put(fs.clone());
        Ok(fs)
    })?;
    let w = r.world();
    Ok(render_file_system(r, &w, &fs, fs.state))
}

fn render_mount_target(m: &MountTarget) -> Value {
    json!({
        "OwnerId": m.owner_id,
        "MountTargetId": m.id,
        "FileSystemId": m.file_system_id,
        "SubnetId": m.subnet_id,
        "LifeCycleState": m.state.as_str(),
        "IpAddress": m.ip_address.to_string(),
        "NetworkInterfaceId": m.network_interface_id,
        "AvailabilityZoneId": m.availability_zone_id,
        "AvailabilityZoneName": m.availability_zone,
        "VpcId": m.vpc_id,
    })
}

/// The security groups asked for a mount target in `vpc_id`: at most five,
/// each of that VPC; none means the VPC's default group.
fn mount_target_security_groups(
    w: &World,
    region: &str,
    vpc_id: &str,
    asked: Option<&[String]>,
) -> AwsResult<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for g in asked.unwrap_or_default() {
        if !ids.contains(g) {
            ids.push(g.clone());
        }
    }
    if ids.is_empty() {
        return Ok(cove_ec2::default_group(w, vpc_id).into_iter().collect());
    }
    if ids.len() > cove_ec2::MAX_GROUPS_PER_INTERFACE {
        return Err(AwsError::client(
            "SecurityGroupLimitExceeded",
            "A mount target can have at most 5 security groups.",
        ));
    }
    for id in &ids {
        match w.security_groups.get(id).filter(|g| g.region == region) {
            None => {
                return Err(AwsError::client(
                    "SecurityGroupNotFound",
                    format!("Security group '{id}' does not exist."),
                ))
            }
            Some(g) if g.vpc_id != vpc_id => {
                return Err(AwsError::client(
                    "SecurityGroupNotFound",
                    format!("Security group '{id}' is not in the mount target's VPC {vpc_id}."),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(ids)
}

/// Makes a mount target of file system `fs_id` in `subnet_id` (its ENI
/// included) in a write, with EFS's checks and errors: what
/// `CreateMountTarget` does, and what a Studio domain does for its home
/// file system.
pub fn make_mount_target(
    tx: &mut Tx,
    (region, account): (&str, &str),
    fs_id: &str,
    subnet_id: &str,
    ip_address: Option<&str>,
    groups: Option<&[String]>,
) -> AwsResult<MountTarget> {
    let fs = file_system(&tx.world, region, fs_id)?.clone();
    if fs.state != LifeCycleState::Available {
        return Err(conflict(
            "IncorrectFileSystemLifeCycleState",
            format!("File system '{}' is not available.", fs.id),
        ));
    }
    let subnet = tx
        .world
        .subnets
        .get(subnet_id)
        .filter(|s| s.region == region)
        .cloned()
        .ok_or_else(|| {
            AwsError::client(
                "SubnetNotFound",
                format!("Subnet '{}' does not exist.", subnet_id),
            )
        })?;
    if let Some(zone) = &fs.availability_zone {
        if &subnet.availability_zone != zone {
            return Err(bad_request(format!(
                "The subnet is in {}, but One Zone file system '{}' is in {zone}.",
                subnet.availability_zone, fs.id
            )));
        }
    }
    for other in tx
        .world
        .mount_targets
        .values()
        .filter(|m| m.file_system_id == fs.id)
    {
        if other.vpc_id != subnet.vpc_id {
            return Err(conflict(
                    "MountTargetConflict",
                    format!(
                        "File system '{}' has mount targets in VPC {}; all of its mount targets must be in one VPC.",
                        fs.id, other.vpc_id
                    ),
                ));
        }
        if other.availability_zone == subnet.availability_zone {
            return Err(conflict(
                "MountTargetConflict",
                format!(
                    "File system '{}' already has a mount target in availability zone {}.",
                    fs.id, subnet.availability_zone
                ),
            ));
        }
    }
    let groups = mount_target_security_groups(&tx.world, region, &subnet.vpc_id, groups)?;
    let ip = cove_ec2::allocate_ip(&tx.world, &subnet, ip_address).map_err(|e| {
        match e.code.as_str() {
            "InvalidIPAddress.InUse" => conflict(
                "IpAddressInUse",
                format!(
                    "IP address {} is already in use in subnet '{}'.",
                    ip_address.unwrap_or_default(),
                    subnet.id
                ),
            ),
            "InsufficientFreeAddressesInSubnet" => conflict(
                "NoFreeAddressesInSubnet",
                format!("Subnet '{}' has no free addresses.", subnet.id),
            ),
            _ => bad_request(e.message),
        }
    })?;
    let id = new_id("fsmt");
    let eni = cove_ec2::create_managed_eni_at(
        tx,
        &subnet,
        ip,
        groups,
        format!("EFS mount target for {} ({id})", fs.id),
        "amazon-elasticfilesystem",
    );
    let mt = MountTarget {
        id,
        region: region.to_string(),
        owner_id: account.to_string(),
        file_system_id: fs.id.clone(),
        subnet_id: subnet.id.clone(),
        vpc_id: subnet.vpc_id.clone(),
        availability_zone: subnet.availability_zone.clone(),
        availability_zone_id: subnet.availability_zone_id.clone(),
        ip_address: ip,
        network_interface_id: eni.id,
        state: LifeCycleState::Available,
    };
    tx.put(mt.clone());
    Ok(mt)
}

fn create_mount_target(r: &Req, q: &CreateMountTargetRequest) -> AwsResult<Value> {
    if q.ip_address_type
        .as_deref()
        .is_some_and(|t| t != "IPV4_ONLY")
    {
        return Err(bad_request(
            "Cove serves IPv4 mount targets only (IPV4_ONLY).",
        ));
    }
    let mt = r.write(|tx| {
        make_mount_target(
            tx,
            (r.region, r.account),
            &q.file_system_id,
            &q.subnet_id,
            q.ip_address.as_deref(),
            q.security_groups.as_deref(),
        )
    })?;
    // AWS answers `creating`; Cove's NFS service listens once the data
    // plane has made the ENI, a moment later.
    Ok(render_mount_target(&MountTarget {
        state: LifeCycleState::Creating,
        ..mt
    }))
}

fn describe_mount_targets(r: &Req, q: &DescribeMountTargetsRequest) -> AwsResult<Value> {
    let w = r.world();
    let given = [
        q.file_system_id.is_some(),
        q.mount_target_id.is_some(),
        q.access_point_id.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err(bad_request(
            "Specify exactly one of FileSystemId, MountTargetId or AccessPointId.",
        ));
    }
    let all: Vec<&MountTarget> = if let Some(id) = &q.mount_target_id {
        vec![mount_target(&w, r.region, id)?]
    } else {
        let fs_id = match (&q.file_system_id, &q.access_point_id) {
            (Some(fs), _) => file_system(&w, r.region, fs)?.id.clone(),
            (None, Some(ap)) => access_point(&w, r.region, ap)?.file_system_id.clone(),
            (None, None) => unreachable!("exactly one was given"),
        };
        w.mount_targets
            .values()
            .map(Arc::as_ref)
            .filter(|m| m.file_system_id == fs_id)
            .collect()
    };
    let (items, next) = page(all, q.marker.as_deref(), q.max_items, 10)?;
    let rendered: Vec<Value> = items.iter().map(|m| render_mount_target(m)).collect();
    Ok(json!({"MountTargets": rendered, "Marker": q.marker, "NextMarker": next}))
}

fn delete_mount_target(r: &Req, q: &DeleteMountTargetRequest) -> AwsResult<Value> {
    r.write(|tx| {
        let mt = mount_target(&tx.world, r.region, &q.mount_target_id)?.clone();
        remove_mount_target(tx, &mt);
        Ok(())
    })?;
    Ok(json!({}))
}

fn mount_target_groups(r: &Req, q: &DescribeMountTargetSecurityGroupsRequest) -> AwsResult<Value> {
    let w = r.world();
    let mt = mount_target(&w, r.region, &q.mount_target_id)?;
    let groups = w
        .network_interfaces
        .get(&mt.network_interface_id)
        .map(|e| e.group_ids.clone())
        .unwrap_or_default();
    Ok(json!({"SecurityGroups": groups}))
}

fn modify_mount_target_groups(
    r: &Req,
    q: &ModifyMountTargetSecurityGroupsRequest,
) -> AwsResult<Value> {
    r.write(|tx| {
        let mt = mount_target(&tx.world, r.region, &q.mount_target_id)?.clone();
        let groups = mount_target_security_groups(
            &tx.world,
            r.region,
            &mt.vpc_id,
            q.security_groups.as_deref(),
        )?;
        let mut eni = tx.cloned::<cove_model::vpc::NetworkInterface>(&mt.network_interface_id)?;
        eni.group_ids = groups;
        tx.put(eni);
        Ok(())
    })?;
    Ok(json!({}))
}

/// An access point's root directory: absolute, normalised, within EFS's
/// limits (100 characters, four levels).
fn root_path(asked: Option<&str>) -> AwsResult<String> {
    let raw = asked.unwrap_or("/");
    let parts: Vec<&str> = raw.split('/').filter(|p| !p.is_empty()).collect();
    if !raw.starts_with('/') || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(bad_request(format!(
            "Path '{raw}' must be an absolute path without '.' or '..'."
        )));
    }
    if parts.len() > 4 {
        return Err(bad_request(
            "The root directory of an access point can be at most four levels deep.",
        ));
    }
    Ok(format!("/{}", parts.join("/")))
}

fn render_access_point(w: &World, a: &AccessPoint) -> Value {
    let tags = tags_of(w, &a.id);
    let mut root = json!({"Path": a.root_path});
    if let Some(c) = &a.creation_info {
        root["CreationInfo"] =
            json!({"OwnerUid": c.owner_uid, "OwnerGid": c.owner_gid, "Permissions": c.permissions});
    }
    json!({
        "ClientToken": a.client_token,
        "Name": tags.get("Name"),
        "Tags": render_tags(w, &a.id),
        "AccessPointId": a.id,
        "AccessPointArn": a.arn(),
        "FileSystemId": a.file_system_id,
        "PosixUser": a.posix_user.as_ref().map(|p| json!({
            "Uid": p.uid, "Gid": p.gid, "SecondaryGids": p.secondary_gids,
        })),
        "RootDirectory": root,
        "OwnerId": a.owner_id,
        "LifeCycleState": a.state.as_str(),
    })
}

fn create_access_point(r: &Req, q: &CreateAccessPointRequest) -> AwsResult<Value> {
    let root = q.root_directory.as_ref();
    let root_path = root_path(root.and_then(|d| d.path.as_deref()))?;
    let creation_info = root
        .and_then(|d| d.creation_info.as_ref())
        .map(|c| CreationInfo {
            owner_uid: c.owner_uid,
            owner_gid: c.owner_gid,
            permissions: c.permissions.clone(),
        });
    let tags = tag_map(q.tags.as_deref().unwrap_or_default())?;
    let ap = r.write(|tx| {
        file_system(&tx.world, r.region, &q.file_system_id)?;
        if let Some(existing) = tx
            .world
            .access_points
            .values()
            .find(|a| a.region == r.region && a.client_token == q.client_token)
        {
            return Err(conflict(
                "AccessPointAlreadyExists",
                format!(
                    "Access point '{}' already exists with client token '{}'",
                    existing.id, q.client_token
                ),
            ));
        }
        let count = tx
            .world
            .access_points
            .values()
            .filter(|a| a.file_system_id == q.file_system_id)
            .count();
        if count >= MAX_ACCESS_POINTS {
            return Err(conflict(
                "AccessPointLimitExceeded",
                format!(
                    "File system '{}' has reached its limit of {MAX_ACCESS_POINTS} access points.",
                    q.file_system_id
                ),
            ));
        }
        let ap = AccessPoint {
            id: new_id("fsap"),
            region: r.region.to_string(),
            owner_id: r.account.to_string(),
            file_system_id: q.file_system_id.clone(),
            client_token: q.client_token.clone(),
            posix_user: q.posix_user.as_ref().map(|p| PosixUser {
                uid: p.uid,
                gid: p.gid,
                secondary_gids: p.secondary_gids.clone().unwrap_or_default(),
            }),
            root_path: root_path.clone(),
            creation_info: creation_info.clone(),
            state: LifeCycleState::Available,
        };
        tx.put(ap.clone());
        if !tags.is_empty() {
            tx.set_tags(&ap.id, tags.clone());
        }
        Ok(ap)
    })?;
    let w = r.world();
    let mut out = render_access_point(&w, &ap);
    out["LifeCycleState"] = json!(LifeCycleState::Creating.as_str());
    Ok(out)
}

fn describe_access_points(r: &Req, q: &DescribeAccessPointsRequest) -> AwsResult<Value> {
    let w = r.world();
    let all: Vec<&AccessPoint> = match (&q.access_point_id, &q.file_system_id) {
        (Some(_), Some(_)) => {
            return Err(bad_request(
                "Only one of AccessPointId and FileSystemId may be specified.",
            ))
        }
        (Some(id), None) => vec![access_point(&w, r.region, id)?],
        (None, Some(fs)) => {
            file_system(&w, r.region, fs)?;
            w.access_points
                .values()
                .map(Arc::as_ref)
                .filter(|a| &a.file_system_id == fs)
                .collect()
        }
        (None, None) => w
            .access_points
            .values()
            .map(Arc::as_ref)
            .filter(|a| a.region == r.region)
            .collect(),
    };
    let (items, next) = page(all, q.next_token.as_deref(), q.max_results, 100)?;
    let rendered: Vec<Value> = items.iter().map(|a| render_access_point(&w, a)).collect();
    Ok(json!({"AccessPoints": rendered, "NextToken": next}))
}

fn delete_access_point(r: &Req, q: &DeleteAccessPointRequest) -> AwsResult<Value> {
    r.write(|tx| {
        access_point(&tx.world, r.region, &q.access_point_id)?;
        tx.delete::<AccessPoint>(&q.access_point_id);
        tx.set_tags(&q.access_point_id, Tags::new());
        Ok(())
    })?;
    Ok(json!({}))
}

/// Changes one file system in a write and answers what `answer` makes of it.
fn update_fs(
    r: &Req,
    id: &str,
    change: impl FnOnce(&mut FileSystem) -> AwsResult<()>,
) -> AwsResult<FileSystem> {
    r.write(|tx| {
        let mut fs = file_system(&tx.world, r.region, id)?.clone();
        change(&mut fs)?;
        tx.put(fs.clone());
        Ok(fs)
    })
}

fn put_policy(r: &Req, q: &PutFileSystemPolicyRequest) -> AwsResult<Value> {
    let doc: Value = serde_json::from_str(&q.policy).map_err(|e| {
        AwsError::client(
            "InvalidPolicyException",
            format!("The policy is not valid JSON: {e}"),
        )
    })?;
    if doc.get("Statement").is_none() {
        return Err(AwsError::client(
            "InvalidPolicyException",
            "The policy has no Statement.",
        ));
    }
    let fs = update_fs(r, &q.file_system_id, |fs| {
        fs.policy = Some(q.policy.clone());
        Ok(())
    })?;
    Ok(json!({"FileSystemId": fs.id, "Policy": fs.policy}))
}

fn describe_policy(r: &Req, q: &DescribeFileSystemPolicyRequest) -> AwsResult<Value> {
    let w = r.world();
    let fs = file_system(&w, r.region, &q.file_system_id)?;
    match &fs.policy {
        Some(p) => Ok(json!({"FileSystemId": fs.id, "Policy": p})),
        None => Err(not_found(
            "PolicyNotFound",
            format!("File system '{}' has no policy.", fs.id),
        )),
    }
}

fn delete_policy(r: &Req, q: &DeleteFileSystemPolicyRequest) -> AwsResult<Value> {
    update_fs(r, &q.file_system_id, |fs| {
        fs.policy = None;
        Ok(())
    })?;
    Ok(json!({}))
}

fn lifecycle_policy_json(p: &LifecyclePolicy) -> Value {
    json!({
        "TransitionToIA": p.transition_to_ia,
        "TransitionToPrimaryStorageClass": p.transition_to_primary_storage_class,
        "TransitionToArchive": p.transition_to_archive,
    })
}

fn put_lifecycle(r: &Req, q: &PutLifecycleConfigurationRequest) -> AwsResult<Value> {
    let policies: Vec<Value> = q
        .lifecycle_policies
        .iter()
        .map(lifecycle_policy_json)
        .collect();
    let fs = update_fs(r, &q.file_system_id, |fs| {
        fs.lifecycle_policies = policies;
        Ok(())
    })?;
    Ok(json!({"LifecyclePolicies": fs.lifecycle_policies}))
}

fn describe_lifecycle(r: &Req, q: &DescribeLifecycleConfigurationRequest) -> AwsResult<Value> {
    let w = r.world();
    let fs = file_system(&w, r.region, &q.file_system_id)?;
    Ok(json!({"LifecyclePolicies": fs.lifecycle_policies}))
}

fn put_backup_policy(r: &Req, q: &PutBackupPolicyRequest) -> AwsResult<Value> {
    let status = q.backup_policy.status.clone();
    if !matches!(status.as_str(), "ENABLED" | "DISABLED") {
        return Err(bad_request(
            "BackupPolicy Status must be ENABLED or DISABLED.",
        ));
    }
    let fs = update_fs(r, &q.file_system_id, |fs| {
        fs.backup_status = status;
        Ok(())
    })?;
    Ok(json!({"BackupPolicy": {"Status": fs.backup_status}}))
}

fn describe_backup_policy(r: &Req, q: &DescribeBackupPolicyRequest) -> AwsResult<Value> {
    let w = r.world();
    let fs = file_system(&w, r.region, &q.file_system_id)?;
    Ok(json!({"BackupPolicy": {"Status": fs.backup_status}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_hand_out_offsets_and_refuse_foreign_markers() {
        let items: Vec<u32> = (0..5).collect();
        assert_eq!(
            page(items.clone(), None, Some(2), 10).unwrap(),
            (vec![0, 1], Some("2".into()))
        );
        assert_eq!(
            page(items.clone(), Some("4"), Some(2), 10).unwrap(),
            (vec![4], None)
        );
        assert_eq!(
            page(items.clone(), Some("zz"), None, 10).unwrap_err().code,
            "BadRequest"
        );
        assert_eq!(
            page(items.clone(), Some("9"), None, 10).unwrap_err().code,
            "BadRequest"
        );
    }

    #[test]
    fn access_point_roots_are_normalised_and_bounded() {
        assert_eq!(root_path(None).unwrap(), "/");
        assert_eq!(root_path(Some("/a//b/")).unwrap(), "/a/b");
        assert!(root_path(Some("a/b")).is_err());
        assert!(root_path(Some("/a/../b")).is_err());
        assert!(root_path(Some("/1/2/3/4/5")).is_err());
    }

    #[test]
    fn provisioned_throughput_goes_with_its_mode() {
        assert_eq!(throughput("bursting", None).unwrap(), None);
        assert_eq!(throughput("provisioned", Some(10.0)).unwrap(), Some(10.0));
        assert!(throughput("provisioned", None).is_err());
        assert!(throughput("elastic", Some(10.0)).is_err());
    }
}
