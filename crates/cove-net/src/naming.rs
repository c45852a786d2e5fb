//! Names of Cove's kernel objects. Linux interface names are at most 15
//! bytes, so ids are shortened to their last 12 hex digits, which are random
//! in AWS-style ids. Every name starts with `cove` (namespaces) or `cv`
//! (links), so the reconciler can tell its own objects from anything else.

/// The last 12 characters of an AWS-style id (`eni-0123456789abcdef0` → `456789abcdef0`'s tail).
pub fn short(id: &str) -> &str {
    let tail = id.rsplit('-').next().unwrap_or(id);
    &tail[tail.len().saturating_sub(12)..]
}

/// The region network: the simulated internet and Cove's public service addresses.
pub fn region_netns(instance: &str) -> String {
    format!("cove-{instance}-region")
}

/// The region-side end of a VPC's internet-gateway link.
pub fn region_link(vpc_id: &str) -> String {
    format!("cvr{}", short(vpc_id))
}

/// Namespaces carry the instance's tag (`cove-<instance>-vpc-…`), so several
/// Cove servers on one host never touch each other's objects. Link names
/// need no tag: links live inside those namespaces.
pub fn router_netns(instance: &str, vpc_id: &str) -> String {
    format!("cove-{instance}-vpc-{}", short(vpc_id))
}

pub fn eni_netns(instance: &str, eni_id: &str) -> String {
    format!("cove-{instance}-eni-{}", short(eni_id))
}

/// Whether a namespace belongs to this instance.
pub fn is_instance_netns(instance: &str, name: &str) -> bool {
    name.starts_with(&format!("cove-{instance}-"))
}

/// A short, stable instance tag derived from something unique to the
/// installation (Cove uses its data directory).
pub fn instance_tag(seed: &str) -> String {
    format!("{:06x}", cove_model::ids::fnv32(seed) & 0xffffff)
}

/// The router-side end of an ENI's veth.
pub fn eni_router_link(eni_id: &str) -> String {
    format!("cve{}", short(eni_id))
}

/// The ENI's own interface, inside its namespace.
pub const ENI_LINK: &str = "eth0";

/// The router's link toward the region network (its internet gateway path).
pub fn igw_link(vpc_id: &str) -> String {
    format!("cvg{}", short(vpc_id))
}

/// The router-side end of a gateway endpoint's link to the region network.
pub fn endpoint_link(vpce_id: &str) -> String {
    format!("cvp{}", short(vpce_id))
}

/// The region-side end of a gateway endpoint's link.
pub fn endpoint_region_link(vpce_id: &str) -> String {
    format!("cvq{}", short(vpce_id))
}

/// One end of a peering connection's veth between two routers: `a` in the
/// requester's router, `b` in the accepter's (15 characters at most).
pub fn peering_link(pcx_id: &str, requester_side: bool) -> String {
    let s = short(pcx_id);
    let tail = &s[s.len().saturating_sub(11)..];
    format!("cvx{tail}{}", if requester_side { 'a' } else { 'b' })
}

/// nftables set holding the private IPs of a security group's members.
pub fn group_set(group_id: &str) -> String {
    format!("sg_{}", short(group_id))
}

/// nftables set holding a prefix list's CIDRs.
pub fn prefix_list_set(pl_id: &str) -> String {
    format!("pl_{}", short(pl_id))
}

pub fn is_cove_netns(name: &str) -> bool {
    name.starts_with("cove-")
}

pub fn is_cove_link(name: &str) -> bool {
    name.starts_with("cv")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_limits_and_are_recognisable() {
        let eni = "eni-0123456789abcdef0";
        assert_eq!(short(eni), "456789abcdef0"[1..].to_string());
        assert!(eni_router_link(eni).len() <= 15);
        assert!(igw_link("vpc-0123456789abcdef0").len() <= 15);
        assert!(is_cove_link(&eni_router_link(eni)));
        assert!(
            is_cove_netns(&eni_netns("ab12cd", eni))
                && is_cove_netns(&router_netns("ab12cd", "vpc-1"))
        );
        assert!(is_instance_netns("ab12cd", &eni_netns("ab12cd", eni)));
        assert!(!is_instance_netns("ab12ce", &eni_netns("ab12cd", eni)));
        assert_eq!(short("vpc-1"), "1");
        assert_ne!(
            eni_netns("i", "eni-0000000000000000a"),
            eni_netns("i", "eni-0000000000000000b")
        );
        assert_eq!(instance_tag("/var/lib/cove"), instance_tag("/var/lib/cove"));
        assert_eq!(instance_tag("/x").len(), 6);
    }
}
