//! Flow-log records from the kernel's own counters, without I/O.
//!
//! For every ENI a flow log covers, the router keeps two nftables sets
//! (`fa_<eni>`, accepted; `fr_<eni>`, rejected) whose elements are 5-tuples
//! with per-element packet and byte counters, updated by the kernel for each
//! packet at the point where it is accepted or dropped (see `nft.rs`). The
//! collector lists those sets every second; this module turns successive
//! listings into counter growth, accumulates it per destination stream and
//! aggregation window, and renders records in the flow log's format
//! (version 2 by default). Each direction of a connection is its own record,
//! as on AWS.

use cove_model::services;
use cove_model::vpc::TrafficType;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Accept,
    Reject,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "ACCEPT",
            Action::Reject => "REJECT",
        }
    }

    /// Whether a flow log with this `TrafficType` records the action.
    pub fn wanted_by(self, traffic_type: TrafficType) -> bool {
        matches!(
            (traffic_type, self),
            (TrafficType::All, _)
                | (TrafficType::Accept, Action::Accept)
                | (TrafficType::Reject, Action::Reject)
        )
    }
}

/// IANA numbers for the protocol names nftables prints.
pub fn proto_number(v: &Value) -> Option<u8> {
    if let Some(n) = v.as_u64() {
        return u8::try_from(n).ok();
    }
    Some(match v.as_str()? {
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ipv6-icmp" | "icmpv6" => 58,
        "sctp" => 132,
        "udplite" => 136,
        other => other.parse().ok()?,
    })
}

/// Every set with elements in an `nft -j` listing: set name → (5-tuple, counters).
pub fn parse_listing(listing: &Value) -> BTreeMap<String, Vec<(FlowKey, Counters)>> {
    let mut out = BTreeMap::new();
    for item in listing["nftables"].as_array().into_iter().flatten() {
        let Some(set) = item.get("set") else { continue };
        let Some(name) = set["name"].as_str() else {
            continue;
        };
        let mut elems = Vec::new();
        for e in set["elem"].as_array().into_iter().flatten() {
            let e = &e["elem"];
            let Some(parts) = e["val"]["concat"].as_array() else {
                continue;
            };
            let [src, dst, proto, sport, dport] = parts.as_slice() else {
                continue;
            };
            let key = (|| {
                Some(FlowKey {
                    src: src.as_str()?.parse().ok()?,
                    dst: dst.as_str()?.parse().ok()?,
                    proto: proto_number(proto)?,
                    sport: u16::try_from(sport.as_u64()?).ok()?,
                    dport: u16::try_from(dport.as_u64()?).ok()?,
                })
            })();
            let Some(key) = key else { continue };
            let counters = Counters {
                packets: e["counter"]["packets"].as_u64().unwrap_or(0),
                bytes: e["counter"]["bytes"].as_u64().unwrap_or(0),
            };
            elems.push((key, counters));
        }
        out.insert(name.to_string(), elems);
    }
    out
}

/// A CloudWatch Logs stream that receives records: one per ENI and log group
/// (flow logs that share a group share the ENI's stream, as on AWS).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Stream {
    pub region: String,
    pub log_group: String,
    pub eni: String,
}

/// What the collector needs to know about a covered ENI's flow logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub stream: Stream,
    /// `ACCEPT`, `REJECT` or `ALL` (the union over the flow logs of the stream).
    pub traffic_types: Vec<TrafficType>,
    pub fields: Vec<String>,
    /// Seconds per aggregation window.
    pub interval: i64,
    pub meta: EniMeta,
}

/// The ENI's own facts that custom formats can ask for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EniMeta {
    pub account_id: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub az_id: String,
    pub region: String,
    pub ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    packets: u64,
    bytes: u64,
    first: i64,
    last: i64,
}

#[derive(Debug, Default)]
struct Window {
    start: i64,
    /// Seconds, from the stream's subscription when the window opened.
    interval: i64,
    tallies: BTreeMap<(FlowKey, Action), Tally>,
}

/// One finished record, ready to format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: FlowKey,
    pub action: Action,
    pub packets: u64,
    pub bytes: u64,
    pub start: i64,
    pub end: i64,
}

/// Counter growth per set element between listings, accumulated per stream
/// and window.
#[derive(Debug, Default)]
pub struct Aggregator {
    /// The last listing of each router (keyed by namespace): set → element → counters.
    last: HashMap<String, BTreeMap<String, HashMap<FlowKey, Counters>>>,
    windows: BTreeMap<Stream, Window>,
}

fn growth(now: Counters, before: Option<&Counters>) -> Counters {
    match before {
        // Counters only shrink when the set was recreated (a ruleset
        // replacement, or an element that expired and came back).
        Some(b) if now.packets >= b.packets => Counters {
            packets: now.packets - b.packets,
            bytes: now.bytes.saturating_sub(b.bytes),
        },
        _ => now,
    }
}

impl Aggregator {
    /// Takes one listing of router `netns` at `now` (Unix seconds). `owner`
    /// names the ENI and action of a set; `subscriptions` the streams of an ENI.
    pub fn observe(
        &mut self,
        netns: &str,
        now: i64,
        listing: BTreeMap<String, Vec<(FlowKey, Counters)>>,
        owner: impl Fn(&str) -> Option<(String, Action)>,
        subscriptions: &BTreeMap<String, Vec<Subscription>>,
    ) {
        let before = self.last.remove(netns).unwrap_or_default();
        let mut seen: BTreeMap<String, HashMap<FlowKey, Counters>> = BTreeMap::new();
        for (set, elems) in listing {
            let Some((eni, action)) = owner(&set) else {
                continue;
            };
            let previous = before.get(&set);
            let subs = subscriptions.get(&eni).map(Vec::as_slice).unwrap_or(&[]);
            let mut current = HashMap::with_capacity(elems.len());
            for (key, counters) in elems {
                let grew = growth(counters, previous.and_then(|p| p.get(&key)));
                current.insert(key, counters);
                if grew.packets == 0 {
                    continue;
                }
                for sub in subs
                    .iter()
                    .filter(|s| s.traffic_types.iter().any(|t| action.wanted_by(*t)))
                {
                    let window = self
                        .windows
                        .entry(sub.stream.clone())
                        .or_insert_with(|| Window {
                            start: now - now.rem_euclid(sub.interval.max(1)),
                            interval: sub.interval.max(1),
                            tallies: BTreeMap::new(),
                        });
                    let tally = window.tallies.entry((key, action)).or_insert(Tally {
                        packets: 0,
                        bytes: 0,
                        first: now,
                        last: now,
                    });
                    tally.packets += grew.packets;
                    tally.bytes += grew.bytes;
                    tally.last = now;
                }
            }
            seen.insert(set, current);
        }
        self.last.insert(netns.to_string(), seen);
    }

    /// Forgets routers that no longer exist.
    pub fn retain_routers(&mut self, alive: impl Fn(&str) -> bool) {
        self.last.retain(|netns, _| alive(netns));
    }

    /// The records of every window that has ended by `now`, oldest first;
    /// those windows are cleared.
    pub fn take_due(&mut self, now: i64) -> Vec<(Stream, Vec<Record>)> {
        let due: Vec<Stream> = self
            .windows
            .iter()
            .filter(|(_, w)| now >= w.start + w.interval)
            .map(|(s, _)| s.clone())
            .collect();
        due.into_iter()
            .filter_map(|s| {
                let w = self.windows.remove(&s)?;
                let mut records: Vec<Record> = w
                    .tallies
                    .into_iter()
                    .map(|((key, action), t)| Record {
                        key,
                        action,
                        packets: t.packets,
                        bytes: t.bytes,
                        start: t.first,
                        end: t.last,
                    })
                    .collect();
                records.sort_by_key(|r| (r.start, r.end, r.key, r.action));
                Some((s, records))
            })
            .collect()
    }
}

/// The AWS service a public address belongs to (`pkt-src-aws-service`).
fn aws_service(ip: Ipv4Addr) -> &'static str {
    match services::service_hosts("us-east-1")
        .iter()
        .find(|h| h.address == ip)
        .map(|h| h.api)
    {
        Some("s3") => "S3",
        Some("ec2") => "EC2",
        Some(_) => "AMAZON",
        None => "-",
    }
}

/// One record as a line in the given fields (`${version} ${account-id} …`).
pub fn format_record(fields: &[String], r: &Record, eni: &str, meta: &EniMeta) -> String {
    let ports = matches!(r.key.proto, 6 | 17 | 132 | 136);
    let port = |p: u16| if ports { p.to_string() } else { "0".into() };
    let egress = meta.ip == Some(r.key.src);
    fields
        .iter()
        .map(|f| match f.as_str() {
            "version" => "2".to_string(),
            "account-id" => meta.account_id.clone(),
            "interface-id" => eni.to_string(),
            "srcaddr" | "pkt-srcaddr" => r.key.src.to_string(),
            "dstaddr" | "pkt-dstaddr" => r.key.dst.to_string(),
            "srcport" => port(r.key.sport),
            "dstport" => port(r.key.dport),
            "protocol" => r.key.proto.to_string(),
            "packets" => r.packets.to_string(),
            "bytes" => r.bytes.to_string(),
            "start" => r.start.to_string(),
            "end" => r.end.to_string(),
            "action" => r.action.as_str().to_string(),
            "log-status" => "OK".to_string(),
            "vpc-id" => meta.vpc_id.clone(),
            "subnet-id" => meta.subnet_id.clone(),
            "type" => "IPv4".to_string(),
            "region" => meta.region.clone(),
            "az-id" => meta.az_id.clone(),
            "tcp-flags" => "0".to_string(),
            "flow-direction" => if egress { "egress" } else { "ingress" }.to_string(),
            "pkt-src-aws-service" => aws_service(r.key.src).to_string(),
            "pkt-dst-aws-service" => aws_service(r.key.dst).to_string(),
            _ => "-".to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> FlowKey {
        FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            sport,
            dport,
        }
    }

    fn listing(elems: &[(&str, FlowKey, u64, u64)]) -> BTreeMap<String, Vec<(FlowKey, Counters)>> {
        let mut out: BTreeMap<String, Vec<(FlowKey, Counters)>> = BTreeMap::new();
        for (set, k, p, b) in elems {
            out.entry(set.to_string()).or_default().push((
                *k,
                Counters {
                    packets: *p,
                    bytes: *b,
                },
            ));
        }
        out
    }

    fn sub(traffic: &str) -> BTreeMap<String, Vec<Subscription>> {
        BTreeMap::from([(
            "eni-1".to_string(),
            vec![Subscription {
                stream: Stream {
                    region: "us-east-1".into(),
                    log_group: "g".into(),
                    eni: "eni-1".into(),
                },
                traffic_types: vec![traffic.parse().unwrap()],
                fields: vec![],
                interval: 60,
                meta: EniMeta::default(),
            }],
        )])
    }

    fn owner(set: &str) -> Option<(String, Action)> {
        match set {
            "fa_1" => Some(("eni-1".into(), Action::Accept)),
            "fr_1" => Some(("eni-1".into(), Action::Reject)),
            _ => None,
        }
    }

    #[test]
    fn parses_nft_listings_with_names_and_numbers() {
        let v = json!({"nftables": [
            {"metainfo": {}},
            {"set": {"name": "fa_1", "elem": [
                {"elem": {"val": {"concat": ["10.0.1.4", "10.0.2.4", "tcp", 40000, 8080]}, "counter": {"packets": 6, "bytes": 400}}},
                {"elem": {"val": {"concat": ["10.0.1.4", "10.0.2.4", 50, 0, 0]}, "counter": {"packets": 1, "bytes": 100}}},
                {"elem": {"val": {"concat": ["bad"]}}}
            ]}},
            {"set": {"name": "sg_1", "elem": ["10.0.1.4"]}}
        ]});
        let parsed = parse_listing(&v);
        assert_eq!(
            parsed["fa_1"],
            vec![
                (
                    key("10.0.1.4", "10.0.2.4", 6, 40000, 8080),
                    Counters {
                        packets: 6,
                        bytes: 400
                    }
                ),
                (
                    key("10.0.1.4", "10.0.2.4", 50, 0, 0),
                    Counters {
                        packets: 1,
                        bytes: 100
                    }
                ),
            ]
        );
        assert!(parsed["sg_1"].is_empty());
    }

    #[test]
    fn growth_between_listings_lands_in_windows_filtered_by_traffic_type() {
        let k = key("10.0.1.4", "10.0.2.4", 6, 40000, 8080);
        let r = key("10.0.1.4", "10.0.2.4", 6, 40001, 22);
        let subs = sub("ACCEPT");
        let mut a = Aggregator::default();
        a.observe(
            "ns",
            1000,
            listing(&[("fa_1", k, 3, 300), ("fr_1", r, 1, 60)]),
            owner,
            &subs,
        );
        a.observe(
            "ns",
            1001,
            listing(&[("fa_1", k, 5, 500), ("fr_1", r, 2, 120)]),
            owner,
            &subs,
        );
        // No growth: nothing added, the window is unchanged.
        a.observe("ns", 1002, listing(&[("fa_1", k, 5, 500)]), owner, &subs);
        assert!(a.take_due(1019).is_empty(), "window 960..1020 still open");
        let due = a.take_due(1020);
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].1,
            vec![Record {
                key: k,
                action: Action::Accept,
                packets: 5,
                bytes: 500,
                start: 1000,
                end: 1001
            }]
        );
        assert!(a.take_due(5000).is_empty());
    }

    #[test]
    fn a_recreated_set_counts_from_zero_and_reject_records_are_kept_for_all() {
        let k = key("10.0.2.4", "10.0.1.4", 17, 5000, 53);
        let subs = sub("ALL");
        let mut a = Aggregator::default();
        a.observe("ns", 100, listing(&[("fr_1", k, 10, 1000)]), owner, &subs);
        a.observe("ns", 101, listing(&[("fr_1", k, 2, 200)]), owner, &subs);
        let due = a.take_due(200);
        assert_eq!(due[0].1[0].packets, 12);
        assert_eq!(due[0].1[0].action, Action::Reject);
    }

    #[test]
    fn formats_version_2_and_custom_fields() {
        let meta = EniMeta {
            account_id: "123456789012".into(),
            vpc_id: "vpc-1".into(),
            subnet_id: "subnet-1".into(),
            az_id: "use1-az1".into(),
            region: "us-east-1".into(),
            ip: Some("10.0.1.4".parse().unwrap()),
        };
        let rec = Record {
            key: key("10.0.1.4", "192.0.2.20", 6, 40000, 443),
            action: Action::Accept,
            packets: 6,
            bytes: 400,
            start: 1700000000,
            end: 1700000003,
        };
        let v2: Vec<String> = cove_model::vpc::DEFAULT_FLOW_LOG_FORMAT
            .split_whitespace()
            .map(|f| f.trim_start_matches("${").trim_end_matches('}').to_string())
            .collect();
        assert_eq!(
            format_record(&v2, &rec, "eni-1", &meta),
            "2 123456789012 eni-1 10.0.1.4 192.0.2.20 40000 443 6 6 400 1700000000 1700000003 ACCEPT OK"
        );
        let custom: Vec<String> = [
            "vpc-id",
            "flow-direction",
            "pkt-dst-aws-service",
            "instance-id",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            format_record(&custom, &rec, "eni-1", &meta),
            "vpc-1 egress S3 -"
        );
        let icmp = Record {
            key: key("10.0.2.4", "10.0.1.4", 1, 0x0800, 0),
            ..rec
        };
        assert!(format_record(&v2, &icmp, "eni-1", &meta).contains(" 10.0.2.4 10.0.1.4 0 0 1 "));
    }
}
