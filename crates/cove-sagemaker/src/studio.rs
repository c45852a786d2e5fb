//! SageMaker Studio: domains (with their NFS security groups and home file
//! system), user profiles, apps, and presigned domain URLs.
//!
//! Handlers check what the schema cannot and store the wish; the Studio
//! supervisor ([`crate::studio_apps`]) runs each app as a process on an ENI.
//! A presigned URL carries a token signed with Cove's Studio key. Cove's
//! HTTP front exchanges it for a session cookie and then proxies that
//! user's requests to the user's JupyterServer app ([`verify`] checks
//! both).

use crate::common::Caller;
use crate::common::{check_vpc_config, paged, validation};
use crate::requests::{
    CreateAppRequest, CreateDomainRequest, CreatePresignedDomainUrlRequest,
    CreateUserProfileRequest, DeleteAppRequest, DeleteDomainRequest, DeleteUserProfileRequest,
    DescribeAppRequest, DescribeUserProfileRequest, ListAppsRequest, ListDomainsRequest,
    ListUserProfilesRequest, ResourceSpec, UpdateDomainRequest, UserSettings,
};
use cove_model::ids::{now_rfc3339, random_string};
use cove_model::studio::{AppPhase, AppStatus, StudioApp, StudioDomain, StudioStatus, UserProfile};
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_wire::RequestContext;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// Where Studio is served and how its URLs are signed.
#[derive(Clone)]
pub struct StudioConfig {
    /// Cove's HTTP front as clients reach it (`http://127.0.0.1:4747`).
    pub base_url: String,
    /// The key presigned URLs and session cookies are signed with.
    pub key: Vec<u8>,
    /// Where the homes of domains made before Studio's homes moved to EFS
    /// are (`<domain>/home/<profile>`).
    pub dir: std::path::PathBuf,
    /// Cove's data directory, where the domains' home file systems keep
    /// their bytes (`efs/<fs-id>`).
    pub data_dir: std::path::PathBuf,
}

/// The app types Cove runs.
pub const APP_TYPES: [&str; 2] = ["JupyterServer", "KernelGateway"];
/// The first `HomeEfsFileSystemUid`, as AWS numbers them.
const FIRST_UID: u32 = 200_001;

fn not_found(what: &str) -> AwsError {
    AwsError::client("ResourceNotFound", what.to_string())
}

fn domain<'w>(world: &'w World, ctx: &RequestContext, id: &str) -> AwsResult<&'w StudioDomain> {
    world
        .studio_domains
        .get(&StudioDomain::key_of(&ctx.region, ctx.account_id(), id))
        .map(std::sync::Arc::as_ref)
        .ok_or_else(|| not_found(&format!("Cannot find Domain with id {id}")))
}

fn profile<'w>(
    world: &'w World,
    ctx: &RequestContext,
    domain: &str,
    name: &str,
) -> AwsResult<&'w UserProfile> {
    world
        .user_profiles
        .get(&UserProfile::key_of(
            &ctx.region,
            ctx.account_id(),
            domain,
            name,
        ))
        .map(std::sync::Arc::as_ref)
        .ok_or_else(|| {
            not_found(&format!(
                "Cannot find User Profile with name {name} in domain {domain}"
            ))
        })
}

/// The URL a domain's apps are served under.
pub fn domain_url(config: &StudioConfig, domain_id: &str) -> String {
    format!(
        "{}/_cove/studio/{domain_id}/",
        config.base_url.trim_end_matches('/')
    )
}

/// The path prefix a user's JupyterServer app serves under (its `base_url`).
pub fn app_base_path(domain_id: &str, profile: &str) -> String {
    format!("/_cove/studio/{domain_id}/{profile}/jupyter/default/")
}

/// A domain's network: its VPC, its subnets and its default user groups.
struct DomainNetwork {
    vpc: String,
    subnets: Vec<String>,
    groups: Vec<String>,
}

impl DomainNetwork {
    /// A domain's, from its Create request (as updated, for a stored one).
    fn of(request: &CreateDomainRequest) -> DomainNetwork {
        DomainNetwork {
            vpc: request.vpc_id.clone().unwrap_or_default(),
            subnets: request.subnet_ids.clone().unwrap_or_default(),
            groups: request
                .default_user_settings
                .security_groups
                .clone()
                .unwrap_or_default(),
        }
    }
}

/// Checks a domain's network: the VPC exists, the subnets are in it, and
/// the default user groups exist there (as a job's `VpcConfig` is checked).
fn check_network(world: &World, region: &str, network: &DomainNetwork) -> AwsResult<()> {
    let vpc = network.vpc.as_str();
    if world.vpcs.get(vpc).is_none_or(|v| v.region != region) {
        return Err(validation(format!("The VPC ID {vpc} does not exist.")));
    }
    for s in &network.subnets {
        if world.subnets.get(s).is_some_and(|x| x.vpc_id != vpc) {
            return Err(validation(format!("Subnet {s} is not in the VPC {vpc}.")));
        }
    }
    check_vpc_config(world, region, &network.subnets, &network.groups)
}

pub fn create_domain(
    store: &Caller,
    ctx: &RequestContext,
    config: &StudioConfig,
    input: CreateDomainRequest,
) -> AwsResult<Value> {
    if input.auth_mode != "IAM" {
        return Err(validation(
            "AuthMode SSO is not supported by Cove; use IAM.",
        ));
    }
    if input.vpc_id.is_none() || input.subnet_ids.is_none() {
        return Err(validation("VpcId and SubnetIds are required."));
    }
    let name = input.domain_name.clone();
    let id = format!(
        "d-{}",
        random_string(b"abcdefghijklmnopqrstuvwxyz0123456789", 12)
    );
    let arn = StudioDomain::key_of(&ctx.region, ctx.account_id(), &id);
    let url = domain_url(config, &id);
    let mut request = input;
    if request.app_network_access_type.is_none() {
        request.app_network_access_type = Some("PublicInternetOnly".into());
    }
    let network = DomainNetwork::of(&request);
    store.write(|tx| {
        check_network(&tx.world, &ctx.region, &network)?;
        if tx
            .world
            .studio_domains
            .values()
            .any(|d| d.name == name && d.region == ctx.region)
        {
            return Err(AwsError::client(
                "ResourceInUse",
                format!("Domain with name {name} already exists."),
            ));
        }
        let (inbound, outbound) =
            create_nfs_groups(tx, &ctx.region, ctx.account_id(), &network.vpc, &id);
        let home_efs_id = create_home_file_system(tx, ctx, &arn, &id, &network, &inbound)?;
        let now = now_rfc3339();
        tx.put(StudioDomain {
            id: id.clone(),
            name: name.clone(),
            arn: arn.clone(),
            region: ctx.region.clone(),
            account_id: ctx.account_id().to_string(),
            request: Box::new(request.clone()),
            status: StudioStatus::InService,
            creation_time: now.clone(),
            last_modified_time: now,
            home_efs_id,
            inbound_nfs_group: Some(inbound),
            outbound_nfs_group: Some(outbound),
            next_uid: FIRST_UID,
        });
        Ok(())
    })?;
    tracing::info!(domain = %id, name = %name, "Studio domain created");
    Ok(json!({"DomainArn": arn, "DomainId": id, "Url": url}))
}

pub fn describe_domain(
    store: &Caller,
    ctx: &RequestContext,
    config: &StudioConfig,
    id: &str,
) -> AwsResult<Value> {
    let world = store.snapshot();
    let d = domain(&world, ctx, id)?;
    let mut out = crate::common::echoed(&d.request);
    out.insert("DomainArn".into(), json!(d.arn));
    out.insert("DomainId".into(), json!(d.id));
    out.insert("HomeEfsFileSystemId".into(), json!(d.home_efs_id));
    out.insert("Status".into(), json!(d.status));
    out.insert("CreationTime".into(), json!(d.creation_time));
    out.insert("LastModifiedTime".into(), json!(d.last_modified_time));
    out.insert("Url".into(), json!(domain_url(config, &d.id)));
    Ok(Value::Object(out))
}

pub fn list_domains(
    store: &Caller,
    ctx: &RequestContext,
    config: &StudioConfig,
    input: &ListDomainsRequest,
) -> AwsResult<Value> {
    let world = store.snapshot();
    let mut domains: Vec<&StudioDomain> = world
        .studio_domains
        .values()
        .filter(|d| d.region == ctx.region)
        .map(std::sync::Arc::as_ref)
        .collect();
    domains.sort_by(|a, b| b.creation_time.cmp(&a.creation_time));
    let items = domains
        .iter()
        .map(|d| {
            json!({"DomainArn": d.arn, "DomainId": d.id, "DomainName": d.name, "Status": d.status,
                   "CreationTime": d.creation_time, "LastModifiedTime": d.last_modified_time,
                   "Url": domain_url(config, &d.id)})
        })
        .collect();
    Ok(paged(
        input.next_token.as_deref(),
        input.max_results,
        items,
        "Domains",
        100,
    ))
}

/// `UpdateDomain`: the settings it gives replace the stored domain's as
/// given.
pub fn update_domain(
    store: &Caller,
    ctx: &RequestContext,
    input: &UpdateDomainRequest,
) -> AwsResult<Value> {
    let id = input.domain_id.as_str();
    store.write(|tx| {
        let mut d = domain(&tx.world, ctx, id)?.clone();
        for (field, given) in [
            ("DomainSettingsForUpdate", input.domain_settings_for_update.is_some()),
            ("DefaultSpaceSettings", input.default_space_settings.is_some()),
            ("AppSecurityGroupManagement", input.app_security_group_management.is_some()),
            ("VpcId", input.vpc_id.is_some()),
        ] {
            if given {
                return Err(validation(format!("Updating {field} is not supported by Cove.")));
            }
        }
        let running = tx
            .world
            .studio_apps
            .values()
            .any(|a| a.domain_id == d.id && a.phase != AppPhase::Gone);
        let mut next = d.request.clone();
        if let Some(settings) = &input.default_user_settings {
            next.default_user_settings = settings.clone();
        }
        let in_use = |field: &str| {
            AwsError::client(
                "ResourceInUse",
                format!("{field} cannot be updated while the domain has running apps; delete them first."),
            )
        };
        if let Some(v) = &input.app_network_access_type {
            if running && next.app_network_access_type.as_ref() != Some(v) {
                return Err(in_use("AppNetworkAccessType"));
            }
            next.app_network_access_type = Some(v.clone());
        }
        if let Some(v) = &input.subnet_ids {
            if running && next.subnet_ids.as_ref() != Some(v) {
                return Err(in_use("SubnetIds"));
            }
            next.subnet_ids = Some(v.clone());
        }
        check_network(&tx.world, &ctx.region, &DomainNetwork::of(&next))?;
        d.request = next;
        d.last_modified_time = now_rfc3339();
        tx.put(d.clone());
        Ok(json!({"DomainArn": d.arn}))
    })
}

/// The domain's home file system, as AWS makes it: an EFS file system
/// tagged with the domain's ARN, with a mount target in each availability
/// zone of the domain's subnets (the first subnet of each zone) guarded by
/// the inbound NFS group. Its id is the domain's `HomeEfsFileSystemId`.
fn create_home_file_system(
    tx: &mut cove_store::Tx,
    ctx: &RequestContext,
    domain_arn: &str,
    domain_id: &str,
    network: &DomainNetwork,
    inbound_nfs_group: &str,
) -> AwsResult<String> {
    let fs = cove_efs::new_file_system(&ctx.region, ctx.account_id(), domain_id);
    let id = fs.id.clone();
    tx.put(fs);
    tx.set_tags(
        &id,
        [(
            "ManagedByAmazonSageMakerResource".to_string(),
            domain_arn.to_string(),
        )]
        .into(),
    );
    let mut zones = Vec::new();
    for subnet in &network.subnets {
        let Some(zone) = tx
            .world
            .subnets
            .get(subnet)
            .map(|s| s.availability_zone.clone())
        else {
            continue;
        };
        if zones.contains(&zone) {
            continue;
        }
        zones.push(zone);
        cove_efs::make_mount_target(
            tx,
            (&ctx.region, ctx.account_id()),
            &id,
            subnet,
            None,
            Some(&[inbound_nfs_group.to_string()]),
        )
        .map_err(|e| {
            validation(format!(
                "Cannot make the home file system's mount target in {subnet}: {}",
                e.message
            ))
        })?;
    }
    Ok(id)
}

/// Where a domain's user homes live on the host.
pub fn home_dir(
    studio_dir: &std::path::Path,
    domain_id: &str,
    profile: &str,
) -> std::path::PathBuf {
    studio_dir.join(domain_id).join("home").join(profile)
}

pub fn delete_domain(
    store: &Caller,
    ctx: &RequestContext,
    config: &StudioConfig,
    input: &DeleteDomainRequest,
) -> AwsResult<Value> {
    let id = input.domain_id.as_str();
    let delete_homes = input
        .retention_policy
        .as_ref()
        .and_then(|p| p.home_efs_file_system.as_deref())
        == Some("Delete");
    let deleted_home_efs = store.write(|tx| {
        let d = domain(&tx.world, ctx, id)?.clone();
        if tx.world.user_profiles.values().any(|p| p.domain_id == d.id) {
            return Err(AwsError::client(
                "ResourceInUse",
                "The domain has user profiles; delete them (and their apps) first.",
            ));
        }
        let groups: Vec<String> = [&d.inbound_nfs_group, &d.outbound_nfs_group]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        // The mount targets go (their group is the domain's); with
        // RetentionPolicy Delete the file system and its bytes go too,
        // else it stays, as on AWS, for the account to keep or delete.
        let targets: Vec<cove_model::efs::MountTarget> = tx
            .world
            .mount_targets
            .values()
            .filter(|m| m.file_system_id == d.home_efs_id)
            .map(|m| (**m).clone())
            .collect();
        for mt in &targets {
            cove_efs::remove_mount_target(tx, mt);
        }
        if delete_homes && tx.world.file_systems.contains_key(&d.home_efs_id) {
            cove_efs::remove_file_system(tx, &d.home_efs_id);
        }
        cove_ec2::delete_managed_groups(tx, &groups);
        // Deleted apps' records go with the domain.
        let apps: Vec<String> = tx
            .world
            .studio_apps
            .values()
            .filter(|a| a.domain_id == d.id)
            .map(|a| a.key())
            .collect();
        for key in apps {
            tx.delete::<StudioApp>(&key);
        }
        tx.delete::<StudioDomain>(&d.arn);
        Ok(Some(d.home_efs_id.clone()))
    })?;
    if delete_homes {
        // RetentionPolicy Delete: the home file system goes with the domain.
        let home_efs_id = deleted_home_efs.unwrap_or_default();
        cove_efs::remove_bytes(&config.data_dir, &home_efs_id);
        let _ = std::fs::remove_dir_all(config.dir.join(id));
    }
    tracing::info!(domain = %id, delete_homes, "Studio domain deleted");
    Ok(json!({}))
}

/// `CreateUserProfile`: the profile keeps the request for Describe to echo
/// and its apps to read.
pub fn create_user_profile(
    store: &Caller,
    ctx: &RequestContext,
    input: CreateUserProfileRequest,
) -> AwsResult<Value> {
    for (field, given) in [
        (
            "SingleSignOnUserIdentifier",
            &input.single_sign_on_user_identifier,
        ),
        ("SingleSignOnUserValue", &input.single_sign_on_user_value),
    ] {
        if given.is_some() {
            return Err(validation(format!(
                "{field} is not supported by Cove (AuthMode IAM)."
            )));
        }
    }
    let domain_id = input.domain_id.clone();
    let name = input.user_profile_name.clone();
    let groups = input
        .user_settings
        .as_ref()
        .and_then(|s| s.security_groups.clone())
        .unwrap_or_default();
    store.write(|tx| {
        let mut d = domain(&tx.world, ctx, &domain_id)?.clone();
        let arn = UserProfile::key_of(&ctx.region, ctx.account_id(), &domain_id, &name);
        if tx.world.user_profiles.contains_key(&arn) {
            return Err(AwsError::client(
                "ResourceInUse",
                format!("User profile {name} already exists in domain {domain_id} ({arn})."),
            ));
        }
        let subnets = d.request.subnet_ids.as_deref().unwrap_or_default();
        check_vpc_config(&tx.world, &ctx.region, subnets, &groups)?;
        let now = now_rfc3339();
        tx.put(UserProfile {
            domain_id: domain_id.clone(),
            name: name.clone(),
            arn: arn.clone(),
            region: ctx.region.clone(),
            request: Box::new(input.clone()),
            status: StudioStatus::InService,
            creation_time: now.clone(),
            last_modified_time: now,
            home_uid: d.next_uid,
        });
        d.next_uid += 1;
        tx.put(d);
        Ok(json!({ "UserProfileArn": arn }))
    })
}

pub fn describe_user_profile(
    store: &Caller,
    ctx: &RequestContext,
    input: &DescribeUserProfileRequest,
) -> AwsResult<Value> {
    let world = store.snapshot();
    let domain_id = input.domain_id.as_str();
    domain(&world, ctx, domain_id)?;
    let p = profile(&world, ctx, domain_id, &input.user_profile_name)?;
    let mut out = crate::common::echoed(&p.request);
    out.insert("UserProfileArn".into(), json!(p.arn));
    out.insert("HomeEfsFileSystemUid".into(), json!(p.home_uid.to_string()));
    out.insert("Status".into(), json!(p.status));
    out.insert("CreationTime".into(), json!(p.creation_time));
    out.insert("LastModifiedTime".into(), json!(p.last_modified_time));
    Ok(Value::Object(out))
}

pub fn list_user_profiles(
    store: &Caller,
    ctx: &RequestContext,
    input: &ListUserProfilesRequest,
) -> AwsResult<Value> {
    let world = store.snapshot();
    let domain_eq = input.domain_id_equals.as_deref();
    let contains = input
        .user_profile_name_contains
        .as_deref()
        .unwrap_or_default();
    let mut profiles: Vec<&UserProfile> = world
        .user_profiles
        .values()
        .filter(|p| p.region == ctx.region)
        .filter(|p| domain_eq.is_none_or(|d| p.domain_id == d))
        .filter(|p| p.name.contains(contains))
        .map(std::sync::Arc::as_ref)
        .collect();
    let by_modified = input.sort_by.as_deref() == Some("LastModifiedTime");
    profiles.sort_by(|a, b| match by_modified {
        true => a.last_modified_time.cmp(&b.last_modified_time),
        false => a.creation_time.cmp(&b.creation_time),
    });
    if input.sort_order.as_deref() != Some("Ascending") {
        profiles.reverse();
    }
    let items = profiles
        .iter()
        .map(|p| {
            json!({"DomainId": p.domain_id, "UserProfileName": p.name, "Status": p.status,
                   "CreationTime": p.creation_time, "LastModifiedTime": p.last_modified_time})
        })
        .collect();
    Ok(paged(
        input.next_token.as_deref(),
        input.max_results,
        items,
        "UserProfiles",
        100,
    ))
}

pub fn delete_user_profile(
    store: &Caller,
    ctx: &RequestContext,
    input: &DeleteUserProfileRequest,
) -> AwsResult<Value> {
    let domain_id = input.domain_id.as_str();
    let name = input.user_profile_name.as_str();
    store.write(|tx| {
        domain(&tx.world, ctx, domain_id)?;
        profile(&tx.world, ctx, domain_id, name)?;
        if tx.world.studio_apps.values().any(|a| {
            a.domain_id == domain_id && a.user_profile_name == name && a.phase != AppPhase::Gone
        }) {
            return Err(AwsError::client(
                "ResourceInUse",
                format!("User profile {name} has apps that are not deleted; delete them first."),
            ));
        }
        tx.delete::<UserProfile>(&UserProfile::key_of(
            store.region,
            store.account(),
            domain_id,
            name,
        ));
        Ok(json!({}))
    })
}

fn app_arn(
    ctx: &RequestContext,
    domain: &str,
    profile: &str,
    app_type: &str,
    name: &str,
) -> String {
    StudioApp::key_of(
        &ctx.region,
        ctx.account_id(),
        domain,
        profile,
        app_type,
        name,
    )
}

/// What names an app in CreateApp, DescribeApp and DeleteApp.
pub trait AppRequest {
    fn domain_id(&self) -> &str;
    fn space_name(&self) -> Option<&str>;
    fn user_profile_name(&self) -> Option<&str>;
    fn app_type(&self) -> &str;
    fn app_name(&self) -> &str;
}

macro_rules! app_request {
    ($($request:ty),*) => {$(
        impl AppRequest for $request {
            fn domain_id(&self) -> &str {
                &self.domain_id
            }
            fn space_name(&self) -> Option<&str> {
                self.space_name.as_deref()
            }
            fn user_profile_name(&self) -> Option<&str> {
                self.user_profile_name.as_deref()
            }
            fn app_type(&self) -> &str {
                &self.app_type
            }
            fn app_name(&self) -> &str {
                &self.app_name
            }
        }
    )*};
}

app_request!(CreateAppRequest, DescribeAppRequest, DeleteAppRequest);

/// The app's domain, profile, type and name.
fn app_key(input: &impl AppRequest) -> AwsResult<(String, String, String, String)> {
    if input.space_name().is_some() {
        return Err(validation(
            "Spaces are not supported by Cove; give UserProfileName.",
        ));
    }
    let profile = input
        .user_profile_name()
        .ok_or_else(|| validation("UserProfileName is required."))?;
    Ok((
        input.domain_id().to_string(),
        profile.to_string(),
        input.app_type().to_string(),
        input.app_name().to_string(),
    ))
}

fn app_not_found(app_type: &str, name: &str) -> AwsError {
    not_found(&format!(
        "App of type {app_type} with name {name} does not exist."
    ))
}

/// `CreateApp`: the app keeps the request (its `ResourceSpec` is the one the
/// app runs with).
pub fn create_app(
    store: &Caller,
    ctx: &RequestContext,
    input: CreateAppRequest,
) -> AwsResult<Value> {
    let (domain_id, profile_name, app_type, name) = app_key(&input)?;
    if !APP_TYPES.contains(&app_type.as_str()) {
        return Err(validation(format!(
            "AppType {app_type} is not supported by Cove (supported: {}).",
            APP_TYPES.join(", ")
        )));
    }
    if app_type == "JupyterServer" && name != "default" {
        return Err(validation("A JupyterServer app must be named default."));
    }
    let arn = app_arn(ctx, &domain_id, &profile_name, &app_type, &name);
    store.write(|tx| {
        domain(&tx.world, ctx, &domain_id)?;
        profile(&tx.world, ctx, &domain_id, &profile_name)?;
        if tx
            .world
            .studio_apps
            .get(&arn)
            .is_some_and(|a| a.phase != AppPhase::Gone)
        {
            return Err(AwsError::client(
                "ResourceInUse",
                format!("App {arn} already exists."),
            ));
        }
        let now = now_rfc3339();
        tx.put(StudioApp {
            domain_id: domain_id.clone(),
            user_profile_name: profile_name.clone(),
            app_type: app_type.clone(),
            app_name: name.clone(),
            arn: arn.clone(),
            region: ctx.region.clone(),
            account_id: ctx.account_id().to_string(),
            request: Box::new(input.clone()),
            status: AppStatus::Pending,
            failure_reason: None,
            creation_time: now.clone(),
            last_modified_time: now,
            phase: AppPhase::Starting,
            eni_id: None,
            session_access_key: None,
            netns_path: None,
            home_eni_id: None,
            placed_on: None,
        });
        Ok(())
    })?;
    tracing::info!(app = %arn, "Studio app created");
    Ok(json!({ "AppArn": arn }))
}

fn find_app<'w>(
    world: &'w World,
    store: &Caller,
    input: &impl AppRequest,
) -> AwsResult<&'w StudioApp> {
    let (domain_id, profile, app_type, name) = app_key(input)?;
    world
        .studio_apps
        .get(&StudioApp::key_of(
            store.region,
            store.account(),
            &domain_id,
            &profile,
            &app_type,
            &name,
        ))
        .map(std::sync::Arc::as_ref)
        .ok_or_else(|| app_not_found(&app_type, &name))
}

/// The `ResourceSpec` an app runs with: the request's, else the profile's or
/// the domain's default for its type.
pub fn resource_spec(world: &World, a: &StudioApp) -> ResourceSpec {
    if let Some(spec) = &a.request.resource_spec {
        return spec.clone();
    }
    // The settings for the app's type (`<AppType>AppSettings`).
    let from = |s: &UserSettings| match a.app_type.as_str() {
        "JupyterServer" => s
            .jupyter_server_app_settings
            .as_ref()?
            .default_resource_spec
            .clone(),
        "KernelGateway" => s
            .kernel_gateway_app_settings
            .as_ref()?
            .default_resource_spec
            .clone(),
        _ => None,
    };
    let profile_spec = world
        .user_profiles
        .get(&UserProfile::key_of(
            &a.region,
            &a.account_id,
            &a.domain_id,
            &a.user_profile_name,
        ))
        .and_then(|p| from(p.request.user_settings.as_ref()?));
    let domain_spec = world
        .studio_domains
        .get(&StudioDomain::key_of(
            &a.region,
            &a.account_id,
            &a.domain_id,
        ))
        .and_then(|d| from(&d.request.default_user_settings));
    profile_spec
        .or(domain_spec)
        .unwrap_or_else(|| ResourceSpec {
            instance_type: Some(
                match a.app_type.as_str() {
                    "JupyterServer" => "system",
                    _ => "ml.t3.medium",
                }
                .into(),
            ),
            ..ResourceSpec::default()
        })
}

pub fn describe_app(store: &Caller, input: &DescribeAppRequest) -> AwsResult<Value> {
    let world = store.snapshot();
    let a = find_app(&world, store, input)?;
    let mut out = json!({
        "AppArn": a.arn, "AppType": a.app_type, "AppName": a.app_name, "DomainId": a.domain_id,
        "UserProfileName": a.user_profile_name, "Status": a.status, "CreationTime": a.creation_time,
        "ResourceSpec": resource_spec(&world, a),
    });
    if let Some(r) = &a.failure_reason {
        out["FailureReason"] = json!(r);
    }
    if a.status == AppStatus::InService {
        out["LastHealthCheckTimestamp"] = json!(a.last_modified_time);
    }
    Ok(out)
}

pub fn list_apps(
    store: &Caller,
    ctx: &RequestContext,
    input: &ListAppsRequest,
) -> AwsResult<Value> {
    if input.space_name_equals.is_some() {
        return Ok(json!({"Apps": []}));
    }
    let world = store.snapshot();
    let domain_eq = input.domain_id_equals.as_deref();
    let profile_eq = input.user_profile_name_equals.as_deref();
    let mut apps: Vec<&StudioApp> = world
        .studio_apps
        .values()
        .filter(|a| a.region == ctx.region)
        .filter(|a| domain_eq.is_none_or(|d| a.domain_id == d))
        .filter(|a| profile_eq.is_none_or(|p| a.user_profile_name == p))
        .map(std::sync::Arc::as_ref)
        .collect();
    apps.sort_by(|a, b| a.creation_time.cmp(&b.creation_time));
    if input.sort_order.as_deref() != Some("Ascending") {
        apps.reverse();
    }
    let items = apps
        .iter()
        .map(|a| {
            json!({"DomainId": a.domain_id, "UserProfileName": a.user_profile_name, "AppType": a.app_type,
                   "AppName": a.app_name, "Status": a.status, "CreationTime": a.creation_time,
                   "ResourceSpec": resource_spec(&world, a)})
        })
        .collect();
    Ok(paged(
        input.next_token.as_deref(),
        input.max_results,
        items,
        "Apps",
        100,
    ))
}

pub fn delete_app(store: &Caller, input: &DeleteAppRequest) -> AwsResult<Value> {
    store.write(|tx| {
        let mut a = find_app(&tx.world, store, input)?.clone();
        if a.phase == AppPhase::Gone || a.status == AppStatus::Deleting {
            return Err(validation(format!(
                "App {} is in status {} and cannot be deleted.",
                a.arn, a.status
            )));
        }
        a.status = AppStatus::Deleting;
        a.phase = AppPhase::Stopping;
        a.last_modified_time = now_rfc3339();
        tx.put(a);
        Ok(json!({}))
    })
}

type HmacSha256 = Hmac<Sha256>;

/// `<payload>.<signature>`: the payload is `<domain>:<profile>:<purpose>:<expiry unix seconds>[:<session seconds>]`.
pub fn sign(key: &[u8], payload: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    format!("{payload}.{}", hex::encode(mac.finalize().into_bytes()))
}

/// The fields of a token signed by [`sign`] for `purpose` that has not
/// expired at `now` (unix seconds).
pub fn verify(key: &[u8], token: &str, purpose: &str, now: i64) -> Option<Vec<String>> {
    let (payload, signature) = token.rsplit_once('.')?;
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    mac.update(payload.as_bytes());
    mac.verify_slice(&hex::decode(signature).ok()?).ok()?;
    let fields: Vec<String> = payload.split(':').map(str::to_string).collect();
    let expiry: i64 = fields.get(3)?.parse().ok()?;
    (fields.get(2).map(String::as_str) == Some(purpose) && now <= expiry).then_some(fields)
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn create_presigned_domain_url(
    store: &Caller,
    ctx: &RequestContext,
    config: &StudioConfig,
    input: &CreatePresignedDomainUrlRequest,
) -> AwsResult<Value> {
    if input.space_name.is_some() {
        return Err(validation("Spaces are not supported by Cove."));
    }
    let world = store.snapshot();
    let domain_id = input.domain_id.as_str();
    let d = domain(&world, ctx, domain_id)?;
    let name = input.user_profile_name.as_str();
    profile(&world, ctx, domain_id, name)?;
    let expires = input.expires_in_seconds.unwrap_or(300);
    let session = input
        .session_expiration_duration_in_seconds
        .unwrap_or(43_200);
    let token = sign(
        &config.key,
        &format!("{}:{name}:login:{}:{session}", d.id, unix_now() + expires),
    );
    let mut url = format!("{}{name}/auth?token={token}", domain_url(config, &d.id));
    if let Some(landing) = input.landing_uri.as_deref() {
        url.push_str("&landing=");
        url.push_str(
            &percent_encoding::utf8_percent_encode(landing, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        );
    }
    Ok(json!({ "AuthorizedUrl": url }))
}

/// A session cookie value for a user who presented a valid login token.
pub fn session_cookie(key: &[u8], domain: &str, profile: &str, seconds: i64) -> String {
    sign(
        key,
        &format!("{domain}:{profile}:session:{}", unix_now() + seconds),
    )
}

/// Checks a login token or a session cookie for `domain`/`profile`; for a
/// login token, returns the session length it grants.
pub fn check(key: &[u8], token: &str, purpose: &str, domain: &str, profile: &str) -> Option<i64> {
    let fields = verify(key, token, purpose, unix_now())?;
    (fields[0] == domain && fields[1] == profile)
        .then(|| fields.get(4).and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// The two groups a SageMaker Studio domain makes in its VPC for the home
/// file system: `security-group-for-inbound-nfs-<domain>` admits TCP 2049
/// from the outbound group, and `security-group-for-outbound-nfs-<domain>`
/// sends TCP 2049 to the inbound group (and nothing else). Returns
/// (inbound, outbound).
fn create_nfs_groups(
    tx: &mut cove_store::Tx,
    region: &str,
    account: &str,
    vpc_id: &str,
    domain_id: &str,
) -> (String, String) {
    let (inbound, outbound) = (cove_model::ids::new_id("sg"), cove_model::ids::new_id("sg"));
    let nfs = |peer: &str| cove_model::vpc::SgRule {
        id: cove_model::ids::new_id("sgr"),
        protocol: cove_model::protocol::Protocol::Tcp,
        from_port: Some(2049),
        to_port: Some(2049),
        peer: cove_model::vpc::SgPeer::Group {
            group_id: peer.to_string(),
            user_id: account.to_string(),
        },
        description: None,
    };
    for (id, direction, peer) in [
        (&inbound, "inbound", &outbound),
        (&outbound, "outbound", &inbound),
    ] {
        let rule = nfs(peer);
        let (ingress, egress) = match direction {
            "inbound" => (vec![rule], vec![]),
            _ => (vec![], vec![rule]),
        };
        tx.put(cove_model::vpc::SecurityGroup {
            id: id.clone(),
            region: region.to_string(),
            vpc_id: vpc_id.to_string(),
            name: format!("security-group-for-{direction}-nfs-{domain_id}"),
            description: format!(
                "[DO NOT DELETE] Security Group that allows {direction} NFS traffic for SageMaker Notebooks Domain [{domain_id}]"
            ),
            ingress,
            egress,
        });
        tx.set_tags(
            id,
            [(
                "ManagedByAmazonSageMakerResource".to_string(),
                format!("arn:aws:sagemaker:{region}:{account}:domain/{domain_id}"),
            )]
            .into_iter()
            .collect(),
        );
    }
    (inbound, outbound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_key_purpose_and_time() {
        let key = b"k1";
        let t = sign(key, "d-1:alice:login:100:3600");
        assert_eq!(verify(key, &t, "login", 100).unwrap()[4], "3600");
        assert!(verify(key, &t, "login", 101).is_none(), "expired");
        assert!(verify(key, &t, "session", 50).is_none(), "other purpose");
        assert!(verify(b"k2", &t, "login", 50).is_none(), "other key");
        let forged = t.replace("alice", "bob");
        assert!(verify(key, &forged, "login", 50).is_none(), "tampered");
        assert!(verify(key, "garbage", "login", 50).is_none());
    }
}
