//! Customer-managed prefix lists: named, versioned sets of IPv4 CIDRs that
//! security-group rules and routes name by id. The data plane keeps each
//! list as a set in the routers of the VPCs that use it, so a change to the
//! entries changes enforcement without touching a rule.

use crate::common::*;
use cove_model::cidr::Cidr;
use cove_model::filter::FieldValues;
use cove_model::ids::new_id;
use cove_model::vpc::{ManagedPrefixList, PrefixListEntry, SgPeer};
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2::{
    AddPrefixListEntry, CreateManagedPrefixListRequest, DeleteManagedPrefixListRequest,
    DescribeManagedPrefixListsRequest, GetManagedPrefixListAssociationsRequest,
    GetManagedPrefixListEntriesRequest, ModifyManagedPrefixListRequest,
    RestoreManagedPrefixListVersionRequest,
};
use serde_json::{json, Value};

/// AWS's quota on a list's `MaxEntries`.
const MAX_ENTRIES: i64 = 1000;

pub fn prefix_list_not_found(id: &str) -> AwsError {
    AwsError::client(
        "InvalidPrefixListID.NotFound",
        format!("The prefix list ID '{id}' does not exist"),
    )
}

fn arn(region: &str, account: &str, id: &str) -> String {
    format!("arn:aws:ec2:{region}:{account}:prefix-list/{id}")
}

fn render(world: &World, l: &ManagedPrefixList, state: &str) -> Value {
    with_tags(
        json!({
            "PrefixListId": l.id,
            "AddressFamily": "IPv4",
            "State": state,
            "PrefixListArn": arn(&l.region, &l.owner_id, &l.id),
            "PrefixListName": l.name,
            "MaxEntries": l.max_entries,
            "Version": l.version(),
            "OwnerId": l.owner_id,
        }),
        world,
        &l.id,
        "Tags",
    )
}

/// AWS's own lists, as DescribeManagedPrefixLists shows them beside the
/// customer's (owner `AWS`, no size limit to show).
fn render_aws_list(region: &str, id: &str, name: &str) -> Value {
    json!({
        "PrefixListId": id,
        "AddressFamily": "IPv4",
        "State": "create-complete",
        "PrefixListArn": format!("arn:aws:ec2:{region}:aws:prefix-list/{id}"),
        "PrefixListName": name,
        "OwnerId": "AWS",
    })
}

fn check_name(name: &str) -> AwsResult<()> {
    if name.is_empty() || name.chars().count() > 255 {
        return Err(AwsError::invalid_parameter_value(
            "The prefix list name must be 1 to 255 characters long.",
        ));
    }
    if name.starts_with("com.amazonaws") {
        return Err(AwsError::invalid_parameter_value(
            "The prefix list name cannot start with 'com.amazonaws'.",
        ));
    }
    Ok(())
}

fn check_max_entries(max: i64) -> AwsResult<()> {
    if !(1..=MAX_ENTRIES).contains(&max) {
        return Err(AwsError::invalid_parameter_value(format!(
            "The maximum number of entries must be between 1 and {MAX_ENTRIES}."
        )));
    }
    Ok(())
}

fn entry_cidr(raw: &str) -> AwsResult<Cidr> {
    if raw.contains(':') {
        return Err(AwsError::invalid_parameter_value(format!(
            "The CIDR '{raw}' is not of the prefix list's address family IPv4."
        )));
    }
    raw.parse()
        .map_err(|_| AwsError::invalid_parameter_value(format!("The CIDR '{raw}' is not valid.")))
}

/// Adds entries to `entries`: a CIDR already there takes the new
/// description; a description is at most 255 characters.
fn add_entries(entries: &mut Vec<PrefixListEntry>, add: &[AddPrefixListEntry]) -> AwsResult<()> {
    for e in add {
        let cidr = entry_cidr(need(&e.cidr, "Cidr")?)?;
        if let Some(d) = &e.description {
            if d.chars().count() > 255 {
                return Err(AwsError::invalid_parameter_value(
                    "The entry description must be at most 255 characters long.",
                ));
            }
        }
        match entries.iter_mut().find(|x| x.cidr == cidr) {
            Some(existing) => existing.description = e.description.clone(),
            None => entries.push(PrefixListEntry {
                cidr,
                description: e.description.clone(),
            }),
        }
    }
    Ok(())
}

/// Whether `entries` hold more than `max`.
fn over(entries: &[PrefixListEntry], max: i64) -> bool {
    i64::try_from(entries.len()).map_or(true, |n| n > max)
}

fn too_many(max: i64) -> AwsError {
    AwsError::client(
        "PrefixListMaxEntriesExceeded",
        format!("The prefix list cannot hold more than {max} entries."),
    )
}

pub fn create(r: &Req, q: &CreateManagedPrefixListRequest) -> AwsResult<Value> {
    let name = need(&q.prefix_list_name, "PrefixListName")?;
    check_name(name)?;
    let max = q
        .max_entries
        .ok_or_else(|| AwsError::missing_parameter("MaxEntries"))?;
    check_max_entries(max)?;
    match need(&q.address_family, "AddressFamily")? {
        "IPv4" => {}
        "IPv6" => {
            return Err(AwsError::invalid_parameter_value(
                "IPv6 prefix lists are not supported by Cove.",
            ))
        }
        other => {
            return Err(AwsError::invalid_parameter_value(format!(
                "The address family '{other}' is not valid: use IPv4 or IPv6."
            )))
        }
    }
    let mut entries = Vec::new();
    add_entries(&mut entries, list(&q.entries))?;
    if over(&entries, max) {
        return Err(too_many(max));
    }
    let tags = tag_specs(r, &q.tag_specifications, "prefix-list")?;
    let (region, account) = (r.region(), r.account());
    r.write(|tx| {
        let l = ManagedPrefixList {
            id: new_id("pl"),
            region: region.to_string(),
            owner_id: account.to_string(),
            name: name.to_string(),
            max_entries: max,
            versions: vec![entries],
        };
        if !tags.is_empty() {
            tx.set_tags(&l.id, tags.clone());
        }
        tx.put(l.clone());
        // The list is usable at once; the answer shows the state AWS
        // reports while it creates one.
        Ok(json!({"PrefixList": render(&tx.world, &l, "create-in-progress")}))
    })
}

fn owned<'w>(w: &'w World, region: &str, id: &str) -> AwsResult<&'w ManagedPrefixList> {
    find::<ManagedPrefixList>(w, id, region, |l| &l.region, prefix_list_not_found)
}

/// AWS's own lists cannot be changed.
fn refuse_aws_list(w: &World, region: &str, id: &str) -> AwsResult<()> {
    if w.managed_prefix_lists.get(id).is_none() && w.prefix_list_cidrs(region, id).is_some() {
        return Err(AwsError::client(
            "UnauthorizedOperation",
            format!("The prefix list {id} is managed by AWS and cannot be modified."),
        ));
    }
    Ok(())
}

fn check_version(l: &ManagedPrefixList, current: Option<i64>) -> AwsResult<()> {
    match current {
        Some(v) if v != l.version() => Err(AwsError::client(
            "PrefixListVersionMismatch",
            format!(
                "The prefix list has the incorrect version number: the current version is {}.",
                l.version()
            ),
        )),
        _ => Ok(()),
    }
}

pub fn modify(r: &Req, q: &ModifyManagedPrefixListRequest) -> AwsResult<Value> {
    let id = need(&q.prefix_list_id, "PrefixListId")?;
    let region = r.region();
    let (add, remove) = (list(&q.add_entries), list(&q.remove_entries));
    if q.max_entries.is_some() && (!add.is_empty() || !remove.is_empty()) {
        return Err(AwsError::invalid_parameter_combination(
            "You cannot modify the entries of a prefix list and its maximum number of entries at the same time.",
        ));
    }
    r.write(|tx| {
        refuse_aws_list(&tx.world, region, id)?;
        let mut l = owned(&tx.world, region, id)?.clone();
        check_version(&l, q.current_version)?;
        if let Some(name) = &q.prefix_list_name {
            check_name(name)?;
            l.name = name.clone();
        }
        if let Some(max) = q.max_entries {
            check_max_entries(max)?;
            if over(l.entries(), max) {
                return Err(too_many(max));
            }
            l.max_entries = max;
        }
        if !add.is_empty() || !remove.is_empty() {
            let mut entries = l.entries().to_vec();
            for e in remove {
                let cidr = entry_cidr(need(&e.cidr, "Cidr")?)?;
                let Some(pos) = entries.iter().position(|x| x.cidr == cidr) else {
                    return Err(AwsError::client(
                        "InvalidPrefixListModification",
                        format!("The prefix list entry {cidr} does not exist."),
                    ));
                };
                entries.remove(pos);
            }
            add_entries(&mut entries, add)?;
            if over(&entries, l.max_entries) {
                return Err(too_many(l.max_entries));
            }
            l.versions.push(entries);
        }
        tx.put(l.clone());
        Ok(json!({"PrefixList": render(&tx.world, &l, "modify-in-progress")}))
    })
}

pub fn restore(r: &Req, q: &RestoreManagedPrefixListVersionRequest) -> AwsResult<Value> {
    let id = need(&q.prefix_list_id, "PrefixListId")?;
    let previous = q
        .previous_version
        .ok_or_else(|| AwsError::missing_parameter("PreviousVersion"))?;
    let current = q
        .current_version
        .ok_or_else(|| AwsError::missing_parameter("CurrentVersion"))?;
    let region = r.region();
    r.write(|tx| {
        refuse_aws_list(&tx.world, region, id)?;
        let mut l = owned(&tx.world, region, id)?.clone();
        check_version(&l, Some(current))?;
        let Some(entries) = usize::try_from(previous - 1)
            .ok()
            .and_then(|i| l.versions.get(i))
            .cloned()
        else {
            return Err(AwsError::invalid_parameter_value(format!(
                "The prefix list version {previous} does not exist."
            )));
        };
        if over(&entries, l.max_entries) {
            return Err(too_many(l.max_entries));
        }
        l.versions.push(entries);
        tx.put(l.clone());
        Ok(json!({"PrefixList": render(&tx.world, &l, "restore-in-progress")}))
    })
}

/// The security groups and route tables that name list `id`.
fn associations(w: &World, id: &str) -> Vec<(String, String)> {
    let peer = SgPeer::PrefixList { id: id.to_string() };
    let mut out: Vec<(String, String)> = w
        .security_groups
        .values()
        .filter(|g| g.ingress.iter().chain(&g.egress).any(|r| r.peer == peer))
        .map(|g| (g.id.clone(), g.vpc_id.clone()))
        .collect();
    out.extend(
        w.route_tables
            .values()
            .filter(|t| {
                t.routes
                    .iter()
                    .any(|r| r.destination_prefix_list_id.as_deref() == Some(id))
            })
            .map(|t| (t.id.clone(), t.vpc_id.clone())),
    );
    out
}

pub fn delete(r: &Req, q: &DeleteManagedPrefixListRequest) -> AwsResult<Value> {
    let id = need(&q.prefix_list_id, "PrefixListId")?;
    let region = r.region();
    r.write(|tx| {
        refuse_aws_list(&tx.world, region, id)?;
        let l = owned(&tx.world, region, id)?.clone();
        let users = associations(&tx.world, id);
        if !users.is_empty() {
            let names: Vec<&str> = users.iter().map(|(r, _)| r.as_str()).collect();
            return Err(AwsError::client(
                "DependencyViolation",
                format!(
                    "The prefix list {id} is referenced by {}; remove those references first.",
                    names.join(", ")
                ),
            ));
        }
        tx.delete::<ManagedPrefixList>(id);
        if tx.world.tags.contains_key(id) {
            tx.set_tags(id, Default::default());
        }
        Ok(json!({"PrefixList": render(&tx.world, &l, "delete-in-progress")}))
    })
}

fn field(w: &World, l: &ManagedPrefixList, account: &str, name: &str) -> FieldValues {
    match name {
        "prefix-list-id" => one(&l.id),
        "prefix-list-name" => one(&l.name),
        "owner-id" => one(&l.owner_id),
        _ => common_field(w, &l.id, account, name),
    }
}

pub fn describe(r: &Req, q: &DescribeManagedPrefixListsRequest) -> AwsResult<Value> {
    let w = r.world();
    let region = r.region();
    let ids = list(&q.prefix_list_ids);
    let aws_lists = cove_model::region::prefix_lists(region);
    let is_aws = |id: &str| aws_lists.iter().any(|(pl, _, _)| pl == id);
    for id in ids {
        if !is_aws(id) && owned(&w, region, id).is_err() {
            return Err(prefix_list_not_found(id));
        }
    }
    let filters = filters(&q.filters);
    let mut out = Vec::new();
    // AWS's lists first (not paged: there is one per region), then the
    // customer's, paged.
    if q.next_token.is_none() {
        for (id, name, _) in &aws_lists {
            if !ids.is_empty() && !ids.contains(id) {
                continue;
            }
            let keep = cove_model::filter::matches_all(&filters, |f| match f {
                "prefix-list-id" => one(id),
                "prefix-list-name" => one(name),
                "owner-id" => one("AWS"),
                _ => None,
            })
            .map_err(|n| {
                AwsError::invalid_parameter_value(format!("The filter '{n}' is invalid"))
            })?;
            if keep {
                out.push(render_aws_list(region, id, name));
            }
        }
    }
    let customer_ids: Vec<String> = ids.iter().filter(|i| !is_aws(i)).cloned().collect();
    if !ids.is_empty() && customer_ids.is_empty() {
        return Ok(listing("PrefixLists", out, None));
    }
    let describe = Describe {
        ids_param: "PrefixListIds",
        ids: customer_ids,
        filters,
        max_results: q.max_results,
        next_token: q.next_token.clone(),
    };
    let account = r.account();
    let (items, next) = describe.run::<ManagedPrefixList>(
        &w,
        |l| &l.region,
        region,
        prefix_list_not_found,
        |l, n| field(&w, l, account, n),
    )?;
    out.extend(items.iter().map(|l| render(&w, l, "create-complete")));
    Ok(listing("PrefixLists", out, next))
}

/// A page of `items` from `next_token` (an index), `max_results` long.
fn page(
    items: Vec<Value>,
    max_results: Option<i64>,
    next_token: Option<&str>,
) -> AwsResult<(Vec<Value>, Option<String>)> {
    let start: usize = match next_token {
        None => 0,
        Some(t) => t.parse().map_err(|_| {
            AwsError::client("InvalidNextToken", format!("The token '{t}' is invalid."))
        })?,
    };
    let size = max_results.map_or(usize::MAX, |m| {
        usize::try_from(m.max(1)).unwrap_or(usize::MAX)
    });
    let (page, next) = cove_model::paging::cut(items, start, size);
    Ok((page, next.map(|i| i.to_string())))
}

pub fn get_entries(r: &Req, q: &GetManagedPrefixListEntriesRequest) -> AwsResult<Value> {
    let id = need(&q.prefix_list_id, "PrefixListId")?;
    let w = r.world();
    let region = r.region();
    let entries: Vec<Value> = match w
        .managed_prefix_lists
        .get(id)
        .filter(|l| l.region == region)
    {
        Some(l) => {
            let version = q.target_version.unwrap_or_else(|| l.version());
            let chosen = usize::try_from(version - 1)
                .ok()
                .and_then(|i| l.versions.get(i))
                .ok_or_else(|| {
                    AwsError::invalid_parameter_value(format!(
                        "The prefix list version {version} does not exist."
                    ))
                })?;
            chosen
                .iter()
                .map(|e| {
                    let mut v = json!({"Cidr": e.cidr.to_string()});
                    if let Some(d) = &e.description {
                        v["Description"] = json!(d);
                    }
                    v
                })
                .collect()
        }
        None => w
            .prefix_list_cidrs(region, id)
            .ok_or_else(|| prefix_list_not_found(id))?
            .iter()
            .map(|c| json!({"Cidr": c.to_string()}))
            .collect(),
    };
    let (items, next) = page(entries, q.max_results, q.next_token.as_deref())?;
    Ok(listing("Entries", items, next))
}

pub fn get_associations(r: &Req, q: &GetManagedPrefixListAssociationsRequest) -> AwsResult<Value> {
    let id = need(&q.prefix_list_id, "PrefixListId")?;
    let w = r.world();
    owned(&w, r.region(), id)?;
    let account = r.account();
    let items: Vec<Value> = associations(&w, id)
        .into_iter()
        .map(|(resource, _)| json!({"ResourceId": resource, "ResourceOwner": account}))
        .collect();
    let (items, next) = page(items, q.max_results, q.next_token.as_deref())?;
    Ok(listing("PrefixListAssociations", items, next))
}
