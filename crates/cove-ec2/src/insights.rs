//! Reachability Analyzer: network insights paths and their analyses. An
//! analysis runs `cove-reach` over the world as it is when it starts and
//! keeps the result, rendered in the API's shape (`NetworkPathFound`,
//! `ForwardPathComponents`, `ReturnPathComponents`, `Explanations`). The
//! walk takes microseconds, so the stored analysis is complete when
//! `StartNetworkInsightsAnalysis` answers; like AWS, that answer itself
//! says `running`, and clients read the result with
//! `DescribeNetworkInsightsAnalyses`.

use crate::common::*;
use cove_model::filter::FieldValues;
use cove_model::ids::new_id;
use cove_model::protocol::Protocol as RuleProtocol;
use cove_model::vpc::*;
use cove_model::world::World;
use cove_model::{AwsError, AwsResult};
use cove_reach::{Component, Explanation, Hop, Kind, Packet, Protocol, Query, Source, Target};
use cove_shapes::ec2;
use serde_json::{json, Map, Value};
use std::net::Ipv4Addr;

pub fn path_not_found(id: &str) -> AwsError {
    AwsError::client(
        "InvalidNetworkInsightsPathId.NotFound",
        format!("The NetworkInsightsPath ID '{id}' does not exist"),
    )
}

pub fn analysis_not_found(id: &str) -> AwsError {
    AwsError::client(
        "InvalidNetworkInsightsAnalysisId.NotFound",
        format!("The NetworkInsightsAnalysis ID '{id}' does not exist"),
    )
}

/// A resource id given as an id or as an ARN (`arn:aws:ec2:…:network-interface/eni-…`).
fn resource_id(s: &str) -> &str {
    if s.starts_with("arn:") {
        s.rsplit('/').next().unwrap_or(s)
    } else {
        s
    }
}

fn kind_of(id: &str) -> Option<Kind> {
    let prefix = id.split('-').next().unwrap_or_default();
    Some(match prefix {
        "eni" => Kind::NetworkInterface,
        "igw" => Kind::InternetGateway,
        "vpce" => Kind::VpcEndpoint,
        "sg" => Kind::SecurityGroup,
        "acl" => Kind::NetworkAcl,
        "rtb" => Kind::RouteTable,
        "nat" => Kind::NatGateway,
        "subnet" => Kind::Subnet,
        "vpc" => Kind::Vpc,
        _ => return None,
    })
}

fn arn(region: &str, account: &str, kind: Kind, id: &str) -> Option<String> {
    Some(format!(
        "arn:aws:ec2:{region}:{account}:{}/{id}",
        kind.arn_type()?
    ))
}

/// Checks that a path end exists in the region and may be used there.
fn check_end(world: &World, region: &str, id: &str, member: &str) -> AwsResult<Kind> {
    let kind = kind_of(id).filter(|k| {
        matches!(
            k,
            Kind::NetworkInterface | Kind::InternetGateway | Kind::VpcEndpoint
        )
    });
    match kind {
        Some(Kind::NetworkInterface) => {
            find::<NetworkInterface>(world, id, region, |e| &e.region, eni_not_found)?;
        }
        Some(Kind::InternetGateway) => {
            find::<InternetGateway>(world, id, region, |g| &g.region, igw_not_found)?;
        }
        Some(Kind::VpcEndpoint) => {
            find::<VpcEndpoint>(world, id, region, |e| &e.region, endpoint_not_found)?;
        }
        _ => {
            return Err(AwsError::invalid_parameter_value(format!(
                "{member} '{id}' is not a resource type Cove can analyze: give a network interface, an internet gateway or a VPC endpoint."
            )))
        }
    }
    Ok(kind.expect("checked"))
}

fn parse_ip(member: &str, v: Option<&str>) -> AwsResult<Option<Ipv4Addr>> {
    v.map(|s| {
        s.parse().map_err(|_| {
            AwsError::invalid_parameter_value(format!(
                "Value ({s}) for parameter {member} is invalid."
            ))
        })
    })
    .transpose()
}

/// A port from a request: negative ports read as 0, ports above 65535 as 65535.
fn clamp_port(p: i64) -> u16 {
    u16::try_from(p.max(0)).unwrap_or(u16::MAX)
}

/// A port range of a path filter: `FromPort`..`ToPort`, open ends meaning 0 and 65535.
fn filter_ports(range: Option<&PathPortRange>, member: &str) -> AwsResult<Option<(u16, u16)>> {
    let Some(r) = range else {
        return Ok(None);
    };
    let from = clamp_port(r.from_port.unwrap_or(0));
    let to = clamp_port(r.to_port.unwrap_or(65535));
    if from > to {
        return Err(AwsError::invalid_parameter_value(format!(
            "{member}: FromPort {from} is greater than ToPort {to}."
        )));
    }
    Ok(Some((from, to)))
}

/// A path filter from the request, its addresses parsed; `member` names it in errors.
fn path_filter(f: &Option<ec2::PathRequestFilter>, member: &str) -> AwsResult<Option<PathFilter>> {
    let Some(f) = f else {
        return Ok(None);
    };
    let range = |r: &Option<ec2::RequestFilterPortRange>| {
        r.as_ref().map(|r| PathPortRange {
            from_port: r.from_port,
            to_port: r.to_port,
        })
    };
    Ok(Some(PathFilter {
        source_address: parse_ip(
            &format!("{member}.SourceAddress"),
            f.source_address.as_deref(),
        )?,
        source_port_range: range(&f.source_port_range),
        destination_address: parse_ip(
            &format!("{member}.DestinationAddress"),
            f.destination_address.as_deref(),
        )?,
        destination_port_range: range(&f.destination_port_range),
    }))
}

fn intersect(a: Option<(u16, u16)>, b: Option<(u16, u16)>) -> AwsResult<Option<(u16, u16)>> {
    match (a, b) {
        (Some(x), Some(y)) if x.0.max(y.0) <= x.1.min(y.1) => {
            Ok(Some((x.0.max(y.0), x.1.min(y.1))))
        }
        (Some(_), Some(_)) => Err(AwsError::invalid_parameter_combination(
            "The port ranges of FilterAtSource and FilterAtDestination do not overlap.",
        )),
        (x, None) | (None, x) => Ok(x),
    }
}

/// What a path asks once its filters are folded in: the addresses and the
/// port ranges the analysis may use.
struct Effective {
    source_ip: Option<Ipv4Addr>,
    destination_ip: Option<Ipv4Addr>,
    ports: Option<(u16, u16)>,
    source_ports: Option<(u16, u16)>,
}

/// One address given by a field and the filters' members; two different ones conflict.
fn one_address(given: [(&str, Option<Ipv4Addr>); 3]) -> AwsResult<Option<Ipv4Addr>> {
    let mut found: Option<(&str, Ipv4Addr)> = None;
    for (member, ip) in given {
        let Some(ip) = ip else {
            continue;
        };
        match found {
            Some((other, prev)) if prev != ip => {
                return Err(AwsError::invalid_parameter_combination(format!(
                    "{member} and {other} name different addresses."
                )))
            }
            _ => found = Some((member, ip)),
        }
    }
    Ok(found.map(|f| f.1))
}

fn effective(p: &NetworkInsightsPath) -> AwsResult<Effective> {
    let none = PathFilter::default();
    let fs = p.filter_at_source.as_ref().unwrap_or(&none);
    let fd = p.filter_at_destination.as_ref().unwrap_or(&none);
    let source_ip = one_address([
        ("SourceIp", p.source_ip),
        ("FilterAtSource.SourceAddress", fs.source_address),
        ("FilterAtDestination.SourceAddress", fd.source_address),
    ])?;
    let destination_ip = one_address([
        ("DestinationIp", p.destination_ip),
        ("FilterAtSource.DestinationAddress", fs.destination_address),
        (
            "FilterAtDestination.DestinationAddress",
            fd.destination_address,
        ),
    ])?;
    let ports = intersect(
        filter_ports(fs.destination_port_range.as_ref(), "DestinationPortRange")?,
        filter_ports(fd.destination_port_range.as_ref(), "DestinationPortRange")?,
    )?;
    if ports.is_some() && p.destination_port.is_some() {
        return Err(AwsError::invalid_parameter_combination(
            "DestinationPort cannot be combined with a filter's DestinationPortRange.",
        ));
    }
    let source_ports = intersect(
        filter_ports(fs.source_port_range.as_ref(), "SourcePortRange")?,
        filter_ports(fd.source_port_range.as_ref(), "SourcePortRange")?,
    )?;
    Ok(Effective {
        source_ip,
        destination_ip,
        ports,
        source_ports,
    })
}

pub fn create_path(r: &Req, q: &ec2::CreateNetworkInsightsPathRequest) -> AwsResult<Value> {
    let (region, account) = (r.region().to_string(), r.account().to_string());
    let source = resource_id(need(&q.source, "Source")?).to_string();
    let destination = q.destination.as_deref().map(|d| resource_id(d).to_string());
    let source_ip = parse_ip("SourceIp", q.source_ip.as_deref())?;
    let destination_ip = parse_ip("DestinationIp", q.destination_ip.as_deref())?;
    let raw_protocol = need(&q.protocol, "Protocol")?;
    let protocol = match raw_protocol.parse() {
        Ok(p @ (RuleProtocol::Tcp | RuleProtocol::Udp)) => p,
        _ => {
            return Err(AwsError::invalid_parameter_value(format!(
                "Value ({raw_protocol}) for parameter protocol is invalid. Valid values: tcp, udp"
            )))
        }
    };
    let port = q.destination_port;
    let token = q.client_token.clone();
    let tags = tag_specs(r, &q.tag_specifications, "network-insights-path")?;
    let world = r.world();
    if let Some(t) = &token {
        if let Some(p) = world
            .network_insights_paths
            .values()
            .find(|p| p.region == region && p.client_token.as_deref() == Some(t))
        {
            return Ok(json!({"NetworkInsightsPath": render_path(&world, p)}));
        }
    }
    let source_kind = check_end(&world, &region, &source, "Source")?;
    let destination_kind = destination
        .as_deref()
        .map(|d| check_end(&world, &region, d, "Destination"))
        .transpose()?;
    let filters = NetworkInsightsPath {
        id: String::new(),
        region: region.clone(),
        arn: String::new(),
        created_date: String::new(),
        source: source.clone(),
        source_arn: String::new(),
        destination: destination.clone(),
        destination_arn: None,
        source_ip,
        destination_ip,
        protocol,
        destination_port: port,
        client_token: None,
        filter_at_source: path_filter(&q.filter_at_source, "FilterAtSource")?,
        filter_at_destination: path_filter(&q.filter_at_destination, "FilterAtDestination")?,
    };
    let wanted = effective(&filters)?;
    if destination.is_none() && wanted.destination_ip.is_none() {
        return Err(AwsError::client(
            "MissingParameter",
            "The request must contain the parameter Destination or DestinationIp.",
        ));
    }
    if source_kind == Kind::VpcEndpoint {
        return Err(AwsError::invalid_parameter_value(
            "Source: a VPC endpoint can only be a destination in Cove.",
        ));
    }
    if source_kind == Kind::InternetGateway
        && destination_kind != Some(Kind::NetworkInterface)
        && destination.is_some()
    {
        return Err(AwsError::invalid_parameter_value(
            "From an internet gateway, the destination must be a network interface.",
        ));
    }
    if let (Kind::NetworkInterface, Some(ip)) = (source_kind, wanted.source_ip) {
        let own = world.network_interfaces[&source].private_ip;
        if own != ip {
            return Err(AwsError::invalid_parameter_value(format!(
                "SourceIp {ip} is not an address of {source} ({own})."
            )));
        }
    }
    let id = new_id("nip");
    let path = NetworkInsightsPath {
        arn: format!("arn:aws:ec2:{region}:{account}:network-insights-path/{id}"),
        id,
        created_date: now(),
        source_arn: arn(&region, &account, source_kind, &source).unwrap_or_default(),
        destination_arn: destination
            .as_deref()
            .zip(destination_kind)
            .and_then(|(d, k)| arn(&region, &account, k, d)),
        client_token: token,
        ..filters
    };
    r.write(|tx| {
        tx.put(path.clone());
        if !tags.is_empty() {
            tx.set_tags(&path.id, tags.clone());
        }
        Ok(())
    })?;
    Ok(json!({"NetworkInsightsPath": render_path(&r.world(), &path)}))
}

fn render_path(world: &World, p: &NetworkInsightsPath) -> Value {
    let mut v = json!({
        "NetworkInsightsPathId": p.id,
        "NetworkInsightsPathArn": p.arn,
        "CreatedDate": p.created_date,
        "Source": p.source,
        "SourceArn": p.source_arn,
        "Protocol": p.protocol,
    });
    for (k, val) in [
        ("Destination", &p.destination),
        ("DestinationArn", &p.destination_arn),
        ("SourceIp", &p.source_ip.map(|ip| ip.to_string())),
        ("DestinationIp", &p.destination_ip.map(|ip| ip.to_string())),
    ] {
        if let Some(x) = val {
            v[k] = json!(x);
        }
    }
    if let Some(port) = p.destination_port {
        v["DestinationPort"] = json!(port);
    }
    for (key, filter) in [
        ("FilterAtSource", &p.filter_at_source),
        ("FilterAtDestination", &p.filter_at_destination),
    ] {
        if let Some(f) = filter {
            v[key] = json!(f);
        }
    }
    with_tags(v, world, &p.id, "Tags")
}

fn path_field(world: &World, p: &NetworkInsightsPath, account: &str, name: &str) -> FieldValues {
    match name {
        "network-insights-path-id" => one(&p.id),
        "source" => one(&p.source),
        "destination" => opt(p.destination.as_ref()),
        "source-ip" => opt(p.source_ip.as_ref()),
        "destination-ip" => opt(p.destination_ip.as_ref()),
        "protocol" => one(p.protocol),
        "destination-port" => Some(
            p.destination_port
                .map(|x| x.to_string())
                .into_iter()
                .collect(),
        ),
        _ => common_field(world, &p.id, account, name),
    }
}

pub fn describe_paths(r: &Req, q: &ec2::DescribeNetworkInsightsPathsRequest) -> AwsResult<Value> {
    describe_all::<NetworkInsightsPath>(
        r,
        &Describe::of(q, "NetworkInsightsPathIds", &q.network_insights_path_ids),
        "NetworkInsightsPaths",
        |p| &p.region,
        path_not_found,
        path_field,
        |w, p, _| render_path(w, p),
    )
}

/// Deletes a path and, with it, its analyses.
pub fn delete_path(r: &Req, q: &ec2::DeleteNetworkInsightsPathRequest) -> AwsResult<Value> {
    let id = need(&q.network_insights_path_id, "NetworkInsightsPathId")?.to_string();
    let region = r.region().to_string();
    r.write(|tx| {
        find::<NetworkInsightsPath>(&tx.world, &id, &region, |p| &p.region, path_not_found)?;
        let analyses: Vec<String> = tx
            .world
            .network_insights_analyses
            .values()
            .filter(|a| a.path_id == id)
            .map(|a| a.id.clone())
            .collect();
        for a in analyses {
            tx.delete::<NetworkInsightsAnalysis>(&a);
        }
        tx.delete::<NetworkInsightsPath>(&id);
        Ok(())
    })?;
    Ok(json!({"NetworkInsightsPathId": id}))
}

/// The query a path asks, in `cove-reach`'s terms, with the port ranges its filters allow.
fn query_of(p: &NetworkInsightsPath, e: &Effective) -> Query {
    let source = if p.source.starts_with("igw-") {
        Source::Internet {
            igw: Some(p.source.clone()),
            ip: e.source_ip,
        }
    } else {
        Source::Eni(p.source.clone())
    };
    let target = match p.destination.as_deref() {
        Some(d) if d.starts_with("igw-") => Target::InternetGateway {
            igw: d.to_string(),
            ip: e.destination_ip,
        },
        Some(d) if d.starts_with("vpce-") => Target::VpcEndpoint(d.to_string()),
        Some(d) => Target::Eni(d.to_string()),
        None => Target::Address(e.destination_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)),
    };
    Query {
        source,
        target,
        protocol: match p.protocol {
            RuleProtocol::Udp => Protocol::Udp,
            _ => Protocol::Tcp,
        },
        port: p.destination_port.map(clamp_port),
        source_port: None,
    }
}

pub fn start_analysis(r: &Req, q: &ec2::StartNetworkInsightsAnalysisRequest) -> AwsResult<Value> {
    let (region, account) = (r.region().to_string(), r.account().to_string());
    for (unsupported, given) in [
        ("FilterInArns", &q.filter_in_arns),
        ("FilterOutArns", &q.filter_out_arns),
        ("AdditionalAccounts", &q.additional_accounts),
    ] {
        if !list(given).is_empty() {
            return Err(AwsError::invalid_parameter_value(format!(
                "{unsupported} is not supported by Cove."
            )));
        }
    }
    let path_id = need(&q.network_insights_path_id, "NetworkInsightsPathId")?.to_string();
    let token = q.client_token.clone();
    let tags = tag_specs(r, &q.tag_specifications, "network-insights-analysis")?;
    let world = r.world();
    if let Some(t) = &token {
        if let Some(a) = world
            .network_insights_analyses
            .values()
            .find(|a| a.region == region && a.client_token.as_deref() == Some(t))
        {
            return Ok(json!({"NetworkInsightsAnalysis": render_analysis(&world, a, true)}));
        }
    }
    let path =
        find::<NetworkInsightsPath>(&world, &path_id, &region, |p| &p.region, path_not_found)?;
    let id = new_id("nia");
    let mut analysis = NetworkInsightsAnalysis {
        arn: format!("arn:aws:ec2:{region}:{account}:network-insights-analysis/{id}"),
        id,
        region: region.clone(),
        path_id: path_id.clone(),
        start_date: now(),
        status: AnalysisStatus::Succeeded,
        status_message: None,
        network_path_found: None,
        forward_path_components: json!([]),
        return_path_components: json!([]),
        explanations: json!([]),
        client_token: token,
    };
    let result = effective(path)
        .map_err(|e| cove_reach::QueryError(e.message))
        .and_then(|e| {
            cove_reach::analyze_within(
                &world,
                &query_of(path, &e),
                e.ports.unwrap_or((0, 65535)),
                e.source_ports.unwrap_or(cove_reach::EPHEMERAL),
            )
        });
    match result {
        Ok(result) => {
            let render = Render {
                world: &world,
                region: &region,
                account: &account,
            };
            analysis.network_path_found = Some(result.found);
            analysis.forward_path_components = render.hops(&result.forward);
            analysis.return_path_components = if result.found {
                render.hops(&result.ret)
            } else {
                json!([])
            };
            analysis.explanations = Value::Array(
                result
                    .explanations
                    .iter()
                    .map(|e| render.explanation(e))
                    .collect(),
            );
        }
        Err(e) => {
            analysis.status = AnalysisStatus::Failed;
            analysis.status_message = Some(format!("The request failed: {e}"));
        }
    }
    r.write(|tx| {
        tx.put(analysis.clone());
        if !tags.is_empty() {
            tx.set_tags(&analysis.id, tags.clone());
        }
        Ok(())
    })?;
    Ok(json!({"NetworkInsightsAnalysis": render_analysis(&r.world(), &analysis, true)}))
}

/// One analysis; `starting` renders the Start answer, which AWS gives before any result.
fn render_analysis(world: &World, a: &NetworkInsightsAnalysis, starting: bool) -> Value {
    let mut v = json!({
        "NetworkInsightsAnalysisId": a.id,
        "NetworkInsightsAnalysisArn": a.arn,
        "NetworkInsightsPathId": a.path_id,
        "StartDate": a.start_date,
        "Status": if starting { "running" } else { a.status.as_str() },
    });
    if !starting {
        if let Some(m) = &a.status_message {
            v["StatusMessage"] = json!(m);
        }
        if let Some(found) = a.network_path_found {
            v["NetworkPathFound"] = json!(found);
            v["ForwardPathComponents"] = a.forward_path_components.clone();
            v["ReturnPathComponents"] = a.return_path_components.clone();
            v["Explanations"] = a.explanations.clone();
        }
    }
    with_tags(v, world, &a.id, "Tags")
}

fn analysis_field(
    world: &World,
    a: &NetworkInsightsAnalysis,
    account: &str,
    name: &str,
) -> FieldValues {
    match name {
        "path-found" => flag(a.network_path_found == Some(true)),
        "status" => one(a.status),
        _ => common_field(world, &a.id, account, name),
    }
}

pub fn describe_analyses(
    r: &Req,
    q: &ec2::DescribeNetworkInsightsAnalysesRequest,
) -> AwsResult<Value> {
    let path = q.network_insights_path_id.as_deref();
    let (from, to) = (&q.analysis_start_time, &q.analysis_end_time);
    let w = r.world();
    let account = r.account();
    let (items, next) = Describe::of(
        q,
        "NetworkInsightsAnalysisIds",
        &q.network_insights_analysis_ids,
    )
    .run::<NetworkInsightsAnalysis>(
        &w,
        |a| &a.region,
        r.region(),
        analysis_not_found,
        |a, n| analysis_field(&w, a, account, n),
    )?;
    let within = |a: &NetworkInsightsAnalysis| {
        let t = parse_time(&a.start_date);
        let bound = |b: &Option<String>| b.as_deref().and_then(parse_time);
        path.is_none_or(|p| a.path_id == p)
            && bound(from).is_none_or(|f| t.is_some_and(|t| t >= f))
            && bound(to).is_none_or(|e| t.is_some_and(|t| t <= e))
    };
    let items = items
        .into_iter()
        .filter(|a| within(a))
        .map(|a| render_analysis(&w, a, false))
        .collect();
    Ok(listing("NetworkInsightsAnalyses", items, next))
}

fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

pub fn delete_analysis(r: &Req, q: &ec2::DeleteNetworkInsightsAnalysisRequest) -> AwsResult<Value> {
    let id = need(&q.network_insights_analysis_id, "NetworkInsightsAnalysisId")?.to_string();
    let region = r.region().to_string();
    r.write(|tx| {
        find::<NetworkInsightsAnalysis>(
            &tx.world,
            &id,
            &region,
            |a| &a.region,
            analysis_not_found,
        )?;
        tx.delete::<NetworkInsightsAnalysis>(&id);
        Ok(())
    })?;
    Ok(json!({"NetworkInsightsAnalysisId": id}))
}

/// Renders `cove-reach` results in the EC2 API's shapes.
pub struct Render<'a> {
    pub world: &'a World,
    pub region: &'a str,
    pub account: &'a str,
}

fn protocol_number(p: RuleProtocol) -> String {
    match p.number() {
        None => "all".into(),
        Some(n) => n.to_string(),
    }
}

fn port_range(r: Option<(i64, i64)>) -> Option<Value> {
    r.map(|(from, to)| json!({"From": from, "To": to}))
}

impl Render<'_> {
    fn component(&self, c: &Component) -> Value {
        let mut v = json!({"Id": c.id});
        if let Some(a) = arn(self.region, self.account, c.kind, &c.id) {
            v["Arn"] = json!(a);
        }
        if let Some(name) = self.world.tags.get(&c.id).and_then(|t| t.get("Name")) {
            v["Name"] = json!(name);
        }
        v
    }

    fn of(&self, kind: Kind, id: &Option<String>) -> Option<Value> {
        id.as_ref().map(|i| {
            self.component(&Component {
                kind,
                id: i.clone(),
            })
        })
    }

    fn header(p: &Packet) -> Value {
        let mut v = json!({
            "Protocol": p.protocol.number().to_string(),
            "SourceAddresses": [format!("{}/32", p.src)],
            "DestinationAddresses": [format!("{}/32", p.dst)],
        });
        if p.protocol != Protocol::Icmp {
            v["SourcePortRanges"] = json!([{"From": p.src_port, "To": p.src_port}]);
            v["DestinationPortRanges"] = json!([{"From": p.dst_port, "To": p.dst_port}]);
        }
        v
    }

    fn acl_rule(r: &cove_reach::AclRuleHit) -> Value {
        let mut v = json!({
            "Cidr": r.cidr,
            "Egress": r.egress,
            "Protocol": protocol_number(r.protocol),
            "RuleAction": if r.allow { "allow" } else { "deny" },
            "RuleNumber": r.number,
        });
        if let Some(p) = port_range(r.ports) {
            v["PortRange"] = p;
        }
        v
    }

    fn route(r: &cove_reach::RouteHit) -> Value {
        let mut v = Map::new();
        if let Some(c) = &r.destination_cidr {
            v.insert("DestinationCidr".into(), json!(c));
        }
        if let Some(pl) = &r.destination_prefix_list {
            v.insert("DestinationPrefixListId".into(), json!(pl));
        }
        let (key, id) = r.target.member();
        v.insert(key.into(), json!(id));
        v.insert("Origin".into(), json!(r.origin));
        v.insert("State".into(), json!(r.state));
        Value::Object(v)
    }

    pub fn hops(&self, hops: &[Hop]) -> Value {
        Value::Array(
            hops.iter()
                .enumerate()
                .map(|(i, h)| {
                    let mut v = json!({"SequenceNumber": i + 1, "Component": self.component(&h.component)});
                    if let Some(x) = self.of(Kind::Vpc, &h.vpc) {
                        v["Vpc"] = x;
                    }
                    if let Some(x) = self.of(Kind::Subnet, &h.subnet) {
                        v["Subnet"] = x;
                    }
                    if let Some(r) = &h.acl_rule {
                        v["AclRule"] = Self::acl_rule(r);
                    }
                    if let Some(r) = &h.sg_rule {
                        let mut s = json!({"Direction": r.direction, "Protocol": protocol_number(r.protocol)});
                        match &r.peer {
                            SgPeer::Cidr { cidr } => s["Cidr"] = json!(cidr),
                            SgPeer::PrefixList { id } => s["PrefixListId"] = json!(id),
                            SgPeer::Group { group_id, .. } => s["SecurityGroupId"] = json!(group_id),
                        }
                        if let Some(p) = port_range(r.ports) {
                            s["PortRange"] = p;
                        }
                        v["SecurityGroupRule"] = s;
                    }
                    if let Some(r) = &h.route {
                        v["RouteTableRoute"] = Self::route(r);
                    }
                    if let Some(p) = &h.inbound {
                        v["InboundHeader"] = Self::header(p);
                    }
                    if let Some(p) = &h.outbound {
                        v["OutboundHeader"] = Self::header(p);
                    }
                    if let Some(s) = &h.service {
                        v["ServiceName"] = json!(s);
                    }
                    v
                })
                .collect(),
        )
    }

    pub fn explanation(&self, e: &Explanation) -> Value {
        let mut v = json!({"ExplanationCode": e.code, "Component": self.component(&e.component)});
        if let Some(d) = e.direction {
            v["Direction"] = json!(d);
        }
        if let Some(x) = self.of(Kind::Vpc, &e.vpc) {
            v["Vpc"] = x;
        }
        if let Some(x) = self.of(Kind::Subnet, &e.subnet) {
            v["Subnet"] = x;
        }
        if let Some(r) = &e.acl_rule {
            v["Acl"] = self.component(&Component {
                kind: Kind::NetworkAcl,
                id: r.acl_id.clone(),
            });
            v["AclRule"] = Self::acl_rule(r);
        }
        if !e.security_groups.is_empty() {
            v["SecurityGroups"] = Value::Array(
                e.security_groups
                    .iter()
                    .map(|g| {
                        self.component(&Component {
                            kind: Kind::SecurityGroup,
                            id: g.clone(),
                        })
                    })
                    .collect(),
            );
        }
        if let Some(x) = self.of(Kind::RouteTable, &e.route_table) {
            v["RouteTable"] = x;
        }
        if let Some(r) = &e.route {
            v["RouteTableRoute"] = Self::route(r);
        }
        if let Some(a) = e.address {
            v["Address"] = json!(a.to_string());
        }
        match e.component.kind {
            Kind::NetworkInterface => v["NetworkInterface"] = self.component(&e.component),
            Kind::InternetGateway => v["InternetGateway"] = self.component(&e.component),
            Kind::NatGateway => v["NatGateway"] = self.component(&e.component),
            Kind::VpcEndpoint => v["VpcEndpoint"] = self.component(&e.component),
            _ => {}
        }
        if e.packet.protocol != Protocol::Icmp {
            v["Port"] = json!(e.packet.dst_port);
        }
        v["Protocols"] = json!([e.packet.protocol.name()]);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_ids_or_arns() {
        assert_eq!(resource_id("eni-123"), "eni-123");
        assert_eq!(
            resource_id("arn:aws:ec2:us-east-1:123456789012:network-interface/eni-9"),
            "eni-9"
        );
        assert_eq!(kind_of("igw-1"), Some(Kind::InternetGateway));
        assert_eq!(kind_of("i-1"), None);
        assert_eq!(protocol_number(RuleProtocol::Tcp), "6");
        assert_eq!(protocol_number(RuleProtocol::All), "all");
    }
}
