//! DHCP options sets: what a VPC's ENIs are told about DNS. Each account
//! has a default set per region (`domain-name` the region's private
//! domain, `domain-name-servers` AmazonProvidedDNS) that every new VPC
//! uses; a custom set replaces it with AssociateDhcpOptions, and `default`
//! leaves a VPC with none. The data plane writes each ENI's resolv.conf
//! from its VPC's set.

use crate::common::*;
use cove_model::filter::FieldValues;
use cove_model::ids::new_id;
use cove_model::vpc::{DhcpOptions, Vpc};
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_shapes::ec2::{
    AssociateDhcpOptionsRequest, CreateDhcpOptionsRequest, DeleteDhcpOptionsRequest,
    DescribeDhcpOptionsRequest,
};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

/// The id AssociateDhcpOptions takes for "no options set".
pub const NO_OPTIONS: &str = "default";

/// AWS's default set id is per account and region; Cove derives a stable one.
pub fn default_set_id(account: &str, region: &str) -> String {
    format!(
        "dopt-{:017x}",
        cove_model::ids::fnv64(&format!("{account}/{region}")) & 0xfffffffffffffff
    )
}

/// The account's default set in a region, which is not stored.
fn default_set(account: &str, region: &str) -> DhcpOptions {
    DhcpOptions {
        id: default_set_id(account, region),
        region: region.to_string(),
        owner_id: account.to_string(),
        configurations: vec![
            (
                "domain-name".into(),
                vec![cove_model::region::private_dns_domain(region)],
            ),
            (
                "domain-name-servers".into(),
                vec!["AmazonProvidedDNS".into()],
            ),
        ],
    }
}

pub(crate) fn not_found(id: &str) -> AwsError {
    AwsError::client(
        "InvalidDhcpOptionID.NotFound",
        format!("The dhcpOption ID '{id}' does not exist"),
    )
}

fn invalid_value(value: &str, what: &str) -> AwsError {
    AwsError::invalid_parameter_value(format!(
        "Value ({value}) for parameter value is invalid. {what}"
    ))
}

/// Checks one option's values as EC2 does and returns them as stored.
fn check_option(key: &str, values: &[String]) -> AwsResult<Vec<String>> {
    if values.is_empty() {
        return Err(AwsError::missing_parameter("DhcpConfiguration.Value"));
    }
    match key {
        "domain-name" => {
            // One value, which may hold several space-separated domains.
            if values.len() > 1 {
                return Err(invalid_value(
                    &values.join(","),
                    "Only one domain-name value is allowed.",
                ));
            }
            for domain in values[0].split_whitespace() {
                let valid = domain.len() <= 255
                    && domain.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !valid {
                    return Err(invalid_value(domain, "Invalid Domain Name"));
                }
            }
        }
        "domain-name-servers" | "ntp-servers" | "netbios-name-servers" => {
            if values.len() > 4 {
                return Err(AwsError::invalid_parameter_value(format!(
                    "At most 4 values are allowed for {key}."
                )));
            }
            for v in values {
                let amazon = key == "domain-name-servers" && v == "AmazonProvidedDNS";
                if !amazon && v.parse::<Ipv4Addr>().is_err() {
                    let what = match key {
                        "domain-name-servers" => "Invalid Domain Name Server",
                        "ntp-servers" => "Invalid NTP Server",
                        _ => "Invalid NetBIOS Name Server",
                    };
                    return Err(invalid_value(v, what));
                }
            }
        }
        "netbios-node-type" => {
            if values.len() != 1 || !["1", "2", "4", "8"].contains(&values[0].as_str()) {
                return Err(invalid_value(
                    &values.join(","),
                    "Invalid NetBIOS node type",
                ));
            }
        }
        "ipv6-address-preferred-lease-time" => {
            let ok = values.len() == 1
                && values[0]
                    .parse::<u32>()
                    .is_ok_and(|s| (140..=2_147_483_647).contains(&s));
            if !ok {
                return Err(invalid_value(
                    &values.join(","),
                    "Invalid preferred lease time",
                ));
            }
        }
        other => {
            return Err(AwsError::invalid_parameter_value(format!(
                "Value ({other}) for parameter name is invalid. Unrecognized DHCP option name"
            )))
        }
    }
    Ok(values.to_vec())
}

fn render(world: &World, d: &DhcpOptions) -> Value {
    let configurations: Vec<Value> = d
        .configurations
        .iter()
        .map(|(k, vs)| {
            json!({"Key": k, "Values": vs.iter().map(|v| json!({"Value": v})).collect::<Vec<_>>()})
        })
        .collect();
    with_tags(
        json!({"DhcpOptionsId": d.id, "OwnerId": d.owner_id, "DhcpConfigurations": configurations}),
        world,
        &d.id,
        "Tags",
    )
}

pub fn create(r: &Req, q: &CreateDhcpOptionsRequest) -> AwsResult<Value> {
    let requested = list(&q.dhcp_configurations);
    if requested.is_empty() {
        return Err(AwsError::missing_parameter("DhcpConfiguration"));
    }
    let mut configurations: Vec<(String, Vec<String>)> = Vec::new();
    for c in requested {
        let key = need(&c.key, "DhcpConfiguration.Key")?;
        if configurations.iter().any(|(k, _)| k == key) {
            return Err(AwsError::invalid_parameter_value(format!(
                "The DHCP option {key} is specified more than once."
            )));
        }
        configurations.push((key.to_string(), check_option(key, list(&c.values))?));
    }
    let tags = tag_specs(r, &q.tag_specifications, "dhcp-options")?;
    let (region, account) = (r.region(), r.account());
    r.write(|tx| {
        let d = DhcpOptions {
            id: new_id("dopt"),
            region: region.to_string(),
            owner_id: account.to_string(),
            configurations,
        };
        if !tags.is_empty() {
            tx.set_tags(&d.id, tags.clone());
        }
        tx.put(d.clone());
        Ok(json!({"DhcpOptions": render(&tx.world, &d)}))
    })
}

pub fn associate(r: &Req, q: &AssociateDhcpOptionsRequest) -> AwsResult<Value> {
    let id = need(&q.dhcp_options_id, "DhcpOptionsId")?;
    let vpc_id = need(&q.vpc_id, "VpcId")?;
    let (region, account) = (r.region(), r.account());
    r.write(|tx| {
        let mut vpc = find::<Vpc>(&tx.world, vpc_id, region, |v| &v.region, vpc_not_found)?.clone();
        let known = id == NO_OPTIONS
            || id == default_set_id(account, region)
            || tx
                .world
                .dhcp_options
                .get(id)
                .is_some_and(|d| d.region == region);
        if !known {
            return Err(not_found(id));
        }
        vpc.dhcp_options_id = id.to_string();
        tx.put(vpc);
        Ok(json!({}))
    })
}

pub fn delete(r: &Req, q: &DeleteDhcpOptionsRequest) -> AwsResult<Value> {
    let id = need(&q.dhcp_options_id, "DhcpOptionsId")?;
    let (region, account) = (r.region(), r.account());
    r.write(|tx| {
        let stored = tx
            .world
            .dhcp_options
            .get(id)
            .is_some_and(|d| d.region == region);
        if !stored && id != default_set_id(account, region) {
            return Err(not_found(id));
        }
        if tx.world.vpcs.values().any(|v| v.dhcp_options_id == id) {
            return Err(AwsError::client(
                "DependencyViolation",
                format!("The dhcpOptions '{id}' has dependencies and cannot be deleted."),
            ));
        }
        if stored {
            tx.delete::<DhcpOptions>(id);
            if tx.world.tags.contains_key(id) {
                tx.set_tags(id, Default::default());
            }
        }
        Ok(json!({"Return": true}))
    })
}

fn field(w: &World, d: &DhcpOptions, account: &str, name: &str) -> FieldValues {
    match name {
        "dhcp-options-id" => one(&d.id),
        "key" => Some(d.configurations.iter().map(|(k, _)| k.clone()).collect()),
        "value" => Some(
            d.configurations
                .iter()
                .flat_map(|(_, vs)| vs.iter().cloned())
                .collect(),
        ),
        "owner-id" => one(&d.owner_id),
        _ => common_field(w, &d.id, account, name),
    }
}

pub fn describe(r: &Req, q: &DescribeDhcpOptionsRequest) -> AwsResult<Value> {
    let w = r.world();
    let (region, account) = (r.region(), r.account());
    // The default set joins the stored ones in a copy of the view, so one
    // selection, filter and paging path serves both.
    let mut with_default = (*w).clone();
    let default = default_set(account, region);
    with_default
        .dhcp_options
        .insert(default.id.clone(), std::sync::Arc::new(default));
    let describe = Describe::of(q, "DhcpOptionsIds", &q.dhcp_options_ids);
    let (items, next) = describe.run::<DhcpOptions>(
        &with_default,
        |d| &d.region,
        region,
        not_found,
        |d, n| field(&with_default, d, account, n),
    )?;
    let items = items.iter().map(|d| render(&with_default, d)).collect();
    Ok(listing("DhcpOptions", items, next))
}
