//! The resource map of one VPC, laid out as AWS's console draws it: the
//! VPC, its subnets grouped by availability zone (each with its ENIs and
//! what owns them), its route tables, and its network connections
//! (gateways, endpoints, peering), with a line from each subnet to the
//! route table it uses and from each route table to what its routes name.
//! [`layout`] is pure geometry over the world; [`render`] draws it as SVG,
//! every box a link to the thing's details, the components of a
//! reachability answer outlined (blue on the path, red where blocked).

use crate::html::{esc, query_value, BASE};
use cove_model::vpc::{EndpointType, RouteTarget};
use cove_model::world::World;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

/// What a box on the map is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Vpc,
    Zone,
    Subnet,
    RouteTable,
    Connection,
}

/// One line of text inside a box; with an id, the line is a link and can
/// be outlined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub id: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub kind: Kind,
    pub title: String,
    pub lines: Vec<Line>,
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub nodes: Vec<Node>,
    /// From a node's id to another's.
    pub edges: Vec<(String, String)>,
    pub width: u32,
    pub height: u32,
}

impl Layout {
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// Which components to outline.
#[derive(Debug, Default, Clone)]
pub struct Marks {
    pub on_path: BTreeSet<String>,
    pub blocked: BTreeSet<String>,
}

const TITLE_H: u32 = 34;
const LINE_H: u32 = 18;
const GAP: u32 = 14;
const COLUMNS: [(u32, u32); 4] = [(10, 170), (200, 430), (660, 250), (940, 260)];

/// What each ENI of the world is for, in words: the job, endpoint, app,
/// endpoint or gateway that owns it.
pub fn eni_owners(world: &World) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for job in world.sagemaker_jobs.values() {
        let kind = match job.kind {
            cove_model::jobs::JobKind::Training => "training job",
            cove_model::jobs::JobKind::Processing => "processing job",
        };
        for h in &job.hosts {
            if let Some(eni) = &h.eni_id {
                out.insert(eni.clone(), format!("{kind} {} ({})", job.name, h.name));
            }
        }
    }
    for e in world.sagemaker_endpoints.values() {
        for i in &e.instances {
            if let Some(eni) = &i.eni_id {
                out.insert(eni.clone(), format!("endpoint {} ({})", e.name, i.variant));
            }
        }
    }
    for t in world.transform_jobs.values() {
        for i in &t.instances {
            if let Some(eni) = &i.eni_id {
                out.insert(eni.clone(), format!("transform job {}", t.name));
            }
        }
    }
    for c in world.compilation_jobs.values() {
        if let Some(eni) = &c.eni_id {
            out.insert(eni.clone(), format!("compilation job {}", c.name));
        }
    }
    for a in world.studio_apps.values() {
        for eni in a.eni_id.iter().chain(a.home_eni_id.iter()) {
            out.insert(
                eni.clone(),
                format!("Studio app {} ({})", a.app_name, a.user_profile_name),
            );
        }
    }
    for v in world.vpc_endpoints.values() {
        for eni in &v.network_interface_ids {
            out.insert(
                eni.clone(),
                format!(
                    "interface endpoint {} ({})",
                    v.id,
                    short_service(&v.service_name)
                ),
            );
        }
    }
    for n in world.nat_gateways.values() {
        out.insert(
            n.network_interface_id.clone(),
            format!("NAT gateway {}", n.id),
        );
    }
    out
}

/// `com.amazonaws.us-east-1.s3` → `s3`.
fn short_service(name: &str) -> &str {
    name.splitn(4, '.').nth(3).unwrap_or(name)
}

/// The route table a subnet uses: its explicit association, else the main one.
pub fn route_table_of<'w>(world: &'w World, vpc: &str, subnet: &str) -> Option<&'w str> {
    world
        .route_tables
        .values()
        .find(|rt| {
            rt.associations
                .iter()
                .any(|a| a.subnet_id.as_deref() == Some(subnet))
        })
        .map(|rt| rt.as_ref())
        .or_else(|| world.main_route_table(vpc))
        .map(|rt| rt.id.as_str())
}

fn stack(column: usize, nodes: &mut Vec<Node>, mut boxes: Vec<Node>, top: u32) -> u32 {
    let (x, w) = COLUMNS[column];
    let mut y = top;
    for mut n in boxes.drain(..) {
        n.x = x;
        n.w = w;
        n.y = y;
        if n.kind != Kind::Zone {
            n.h = TITLE_H + LINE_H * u32::try_from(n.lines.len()).unwrap_or(u32::MAX / 64) + 6;
        } else {
            n.h = 22;
        }
        y += n.h + if n.kind == Kind::Zone { 4 } else { GAP };
        nodes.push(n);
    }
    y
}

fn node(id: &str, kind: Kind, title: String, lines: Vec<Line>) -> Node {
    Node {
        id: id.to_string(),
        kind,
        title,
        lines,
        x: 0,
        y: 0,
        w: 0,
        h: 0,
    }
}

fn line(id: Option<&str>, text: String) -> Line {
    Line {
        id: id.map(str::to_string),
        text,
    }
}

/// The map of `vpc_id`; `None` when the world has no such VPC.
pub fn layout(world: &World, vpc_id: &str) -> Option<Layout> {
    layout_with_owners(world, vpc_id, &eni_owners(world))
}

/// [`layout`] with the ENIs' owners already known ([`eni_owners`]).
pub fn layout_with_owners(
    world: &World,
    vpc_id: &str,
    owners: &HashMap<String, String>,
) -> Option<Layout> {
    let vpc = world.vpcs.get(vpc_id)?;
    let top = 34;
    let mut nodes = Vec::new();
    let mut edges = Vec::new();

    let cidrs: Vec<String> = vpc.cidrs().iter().map(|c| c.to_string()).collect();
    let name = world.tags_of(vpc_id).get("Name").cloned();
    let mut vpc_lines = vec![line(None, cidrs.join(", "))];
    if let Some(n) = name {
        vpc_lines.insert(0, line(None, n));
    }
    if vpc.is_default {
        vpc_lines.push(line(None, "default VPC".into()));
    }
    let bottom_vpc = stack(
        0,
        &mut nodes,
        vec![node(vpc_id, Kind::Vpc, vpc_id.into(), vpc_lines)],
        top,
    );

    // Subnets by zone, each listing its ENIs.
    let mut zones: BTreeMap<&str, Vec<&cove_model::vpc::Subnet>> = BTreeMap::new();
    for s in world.subnets.values().filter(|s| s.vpc_id == vpc_id) {
        zones.entry(&s.availability_zone).or_default().push(s);
    }
    let mut subnet_boxes = Vec::new();
    for (zone, subnets) in &zones {
        subnet_boxes.push(node(
            &format!("zone:{zone}"),
            Kind::Zone,
            (*zone).to_string(),
            vec![],
        ));
        for s in subnets {
            let mut lines = vec![line(None, s.cidr.to_string())];
            if let Some(n) = world.tags_of(&s.id).get("Name") {
                lines[0].text = format!("{} · {n}", s.cidr);
            }
            for e in world
                .network_interfaces
                .values()
                .filter(|e| e.subnet_id == s.id)
            {
                let owner = owners.get(&e.id).cloned().unwrap_or_else(|| {
                    if e.description.is_empty() {
                        "ENI".into()
                    } else {
                        e.description.clone()
                    }
                });
                lines.push(line(
                    Some(&e.id),
                    format!("{} {} · {owner}", e.id, e.private_ip),
                ));
            }
            subnet_boxes.push(node(&s.id, Kind::Subnet, s.id.clone(), lines));
            if let Some(rt) = route_table_of(world, vpc_id, &s.id) {
                edges.push((s.id.clone(), rt.to_string()));
            }
        }
    }
    let bottom_subnets = stack(1, &mut nodes, subnet_boxes, top);

    // Route tables, with their routes.
    let mut connections: BTreeSet<String> = BTreeSet::new();
    let mut table_boxes = Vec::new();
    for rt in world.route_tables.values().filter(|r| r.vpc_id == vpc_id) {
        let main = rt.associations.iter().any(|a| a.main);
        let mut lines = Vec::new();
        if main {
            lines.push(line(None, "main route table".into()));
        }
        for r in &rt.routes {
            let dest = r
                .destination_cidr
                .map(|c| c.to_string())
                .or_else(|| r.destination_prefix_list_id.clone())
                .unwrap_or_default();
            let target = r.target.member().1.to_string();
            lines.push(line(None, format!("{dest} → {target}")));
            if !matches!(
                r.target,
                RouteTarget::Local | RouteTarget::NetworkInterface(_)
            ) {
                connections.insert(target.clone());
                edges.push((rt.id.clone(), target));
            }
        }
        table_boxes.push(node(&rt.id, Kind::RouteTable, rt.id.clone(), lines));
    }
    let bottom_tables = stack(2, &mut nodes, table_boxes, top);
    edges.sort();
    edges.dedup();

    // Network connections: what the VPC has, routed to or not.
    if let Some(igw) = world.attached_internet_gateway(vpc_id) {
        connections.insert(igw.id.clone());
    }
    for n in world.nat_gateways.values().filter(|n| n.vpc_id == vpc_id) {
        connections.insert(n.id.clone());
    }
    for v in world.vpc_endpoints.values().filter(|v| v.vpc_id == vpc_id) {
        connections.insert(v.id.clone());
    }
    for p in world.vpc_peering_connections.values() {
        if p.requester_vpc_id == vpc_id || p.accepter_vpc_id == vpc_id {
            connections.insert(p.id.clone());
        }
    }
    let mut connection_boxes = Vec::new();
    for id in &connections {
        let (kind, mut lines) = describe_connection(world, vpc_id, id);
        lines.insert(0, line(None, kind));
        connection_boxes.push(node(id, Kind::Connection, id.clone(), lines));
    }
    let bottom_connections = stack(3, &mut nodes, connection_boxes, top);

    let height = [
        bottom_vpc,
        bottom_subnets,
        bottom_tables,
        bottom_connections,
    ]
    .into_iter()
    .max()
    .unwrap_or(top)
        + 10;
    let (x, w) = COLUMNS[3];
    Some(Layout {
        nodes,
        edges,
        width: x + w + 10,
        height,
    })
}

fn describe_connection(world: &World, vpc_id: &str, id: &str) -> (String, Vec<Line>) {
    if let Some(g) = world.internet_gateways.get(id) {
        let attached = g.attached_vpc_id.as_deref() == Some(vpc_id);
        let state = if attached {
            "attached"
        } else {
            "not attached to this VPC"
        };
        return (
            "Internet gateway".to_string(),
            vec![line(None, state.into())],
        );
    }
    if let Some(n) = world.nat_gateways.get(id) {
        let mut lines = vec![
            line(None, format!("{} · {}", n.connectivity_type, n.state)),
            line(Some(&n.subnet_id), format!("in {}", n.subnet_id)),
        ];
        if let Some(ip) = n.public_ip {
            lines.push(line(None, format!("public {ip}")));
        }
        return ("NAT gateway".to_string(), lines);
    }
    if let Some(v) = world.vpc_endpoints.get(id) {
        let kind = match v.endpoint_type {
            EndpointType::Gateway => "Gateway endpoint",
            _ => "Interface endpoint",
        };
        let mut lines = vec![line(
            None,
            format!("{} · {}", short_service(&v.service_name), v.state),
        )];
        if v.private_dns_enabled {
            lines.push(line(None, "private DNS".into()));
        }
        return (kind.to_string(), lines);
    }
    if let Some(p) = world.vpc_peering_connections.get(id) {
        let other = if p.requester_vpc_id == vpc_id {
            &p.accepter_vpc_id
        } else {
            &p.requester_vpc_id
        };
        return (
            "Peering connection".to_string(),
            vec![
                line(None, p.status.to_string()),
                line(Some(other), format!("with {other}")),
            ],
        );
    }
    ("Not found".to_string(), vec![])
}

fn link(id: &str) -> String {
    format!("{BASE}/resource/{}", query_value(id))
}

/// The map as an SVG picture.
pub fn render(layout: &Layout, marks: &Marks) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"Resource map\" font-family=\"system-ui,sans-serif\" font-size=\"12\">",
        w = layout.width,
        h = layout.height
    );
    for (i, (label, _)) in ["VPC", "Subnets", "Route tables", "Network connections"]
        .iter()
        .zip(COLUMNS)
        .enumerate()
    {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"20\" font-weight=\"700\" font-size=\"13\" fill=\"#414d5c\">{label}</text>",
            COLUMNS[i].0
        );
    }
    for (from, to) in &layout.edges {
        let (Some(a), Some(b)) = (layout.node(from), layout.node(to)) else {
            continue;
        };
        let (x1, y1) = (a.x + a.w, a.y + TITLE_H / 2);
        let (x2, y2) = (b.x, b.y + TITLE_H / 2);
        let mid = (x1 + x2) / 2;
        let on = marks.on_path.contains(from) && marks.on_path.contains(to);
        let (stroke, width) = if on {
            ("#0972d3", 2.5)
        } else {
            ("#8d99a8", 1.2)
        };
        let _ = write!(
            out,
            "<path d=\"M{x1} {y1} C{mid} {y1} {mid} {y2} {x2} {y2}\" fill=\"none\" stroke=\"{stroke}\" stroke-width=\"{width}\" data-from=\"{}\" data-to=\"{}\"/>",
            esc(from),
            esc(to)
        );
    }
    for n in &layout.nodes {
        if n.kind == Kind::Zone {
            let _ = write!(
                out,
                "<text x=\"{}\" y=\"{}\" font-weight=\"600\" fill=\"#5f6b7a\">Availability Zone {}</text>",
                n.x,
                n.y + 15,
                esc(&n.title)
            );
            continue;
        }
        let (fill, base_stroke) = match n.kind {
            Kind::Vpc => ("#f2f8fd", "#0972d3"),
            Kind::Subnet => ("#f2fcf3", "#29ad32"),
            Kind::RouteTable => ("#fbf7ff", "#8454c8"),
            _ => ("#fff8ee", "#d97c00"),
        };
        let (stroke, width, state) = stroke_of(&n.id, marks, base_stroke);
        let _ = write!(
            out,
            "<g class=\"node\" data-id=\"{id}\" data-kind=\"{kind:?}\"{state}><a href=\"{href}\"><title>{id}</title>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"6\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{width}\"/>\
             <text x=\"{tx}\" y=\"{ty}\" font-weight=\"700\" fill=\"#16191f\">{title}</text></a>",
            id = esc(&n.id),
            kind = n.kind,
            href = link(&n.id),
            x = n.x,
            y = n.y,
            w = n.w,
            h = n.h,
            tx = n.x + 8,
            ty = n.y + 20,
            title = esc(&clip(&n.title, (n.w - 16) * 66 / 76)),
        );
        for (i, l) in n.lines.iter().enumerate() {
            let y = n.y + TITLE_H + LINE_H * u32::try_from(i).unwrap_or(0);
            let text = esc(&clip(&l.text, n.w - 16));
            match &l.id {
                Some(id) => {
                    let (stroke, width, state) = stroke_of(id, marks, "#d5dbdb");
                    let _ = write!(
                        out,
                        "<a href=\"{href}\" data-id=\"{eid}\"{state}><title>{full}</title><rect x=\"{rx}\" y=\"{ry}\" width=\"{rw}\" height=\"{rh}\" rx=\"3\" fill=\"#fff\" stroke=\"{stroke}\" stroke-width=\"{width}\"/>\
                         <text x=\"{tx}\" y=\"{ty}\" fill=\"#0972d3\">{text}</text></a>",
                        href = link(id),
                        eid = esc(id),
                        full = esc(&l.text),
                        rx = n.x + 6,
                        ry = y - 4,
                        rw = n.w - 12,
                        rh = LINE_H - 2,
                        tx = n.x + 10,
                        ty = y + 9,
                    );
                }
                None => {
                    let _ = write!(
                        out,
                        "<text x=\"{}\" y=\"{}\" fill=\"#414d5c\">{text}</text>",
                        n.x + 8,
                        y + 9
                    );
                }
            }
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

fn stroke_of(id: &str, marks: &Marks, base: &'static str) -> (&'static str, f32, &'static str) {
    if marks.blocked.contains(id) {
        ("#d91515", 3.0, " data-state=\"blocked\"")
    } else if marks.on_path.contains(id) {
        ("#0972d3", 3.0, " data-state=\"path\"")
    } else {
        (base, 1.2, "")
    }
}

/// Text cut to what fits `width` pixels at about 6.6 px a character.
fn clip(text: &str, width: u32) -> String {
    let fits = usize::try_from(width * 10 / 66).unwrap_or(usize::MAX);
    if text.chars().count() <= fits {
        return text.to_string();
    }
    let mut out: String = text.chars().take(fits.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cove_model::fixtures::*;

    fn fixture() -> World {
        let mut w = web_and_clients("");
        add_route_table(&mut w, "rtb-main", &[], vec![]);
        add_route_table(
            &mut w,
            "rtb-public",
            &["subnet-b"],
            vec![("0.0.0.0/0", RouteTarget::Gateway("igw-1".into()))],
        );
        attach_igw(&mut w, "igw-1");
        add_s3_gateway_endpoint(&mut w, "vpce-s3", &["rtb-main"]);
        w
    }

    #[test]
    fn every_subnet_eni_table_and_connection_has_a_box() {
        let w = fixture();
        let map = layout(&w, "vpc-1").expect("the VPC");
        for id in [
            "vpc-1",
            "subnet-a",
            "subnet-b",
            "rtb-main",
            "rtb-public",
            "igw-1",
            "vpce-s3",
        ] {
            assert!(map.node(id).is_some(), "{id} is not on the map");
        }
        let subnet_a = map.node("subnet-a").unwrap();
        let enis: Vec<_> = subnet_a.lines.iter().filter_map(|l| l.id.clone()).collect();
        assert_eq!(enis, ["eni-a1", "eni-a2"]);
        assert!(map.node("zone:us-east-1a").is_some());
    }

    #[test]
    fn lines_go_from_subnets_to_their_tables_and_from_tables_to_gateways() {
        let map = layout(&fixture(), "vpc-1").unwrap();
        let has = |a: &str, b: &str| map.edges.iter().any(|(x, y)| x == a && y == b);
        assert!(has("subnet-a", "rtb-main"), "{:?}", map.edges);
        assert!(has("subnet-b", "rtb-public"));
        assert!(!has("subnet-b", "rtb-main"));
        assert!(has("rtb-public", "igw-1"));
        assert!(has("rtb-main", "vpce-s3"));
    }

    #[test]
    fn boxes_of_one_column_do_not_overlap() {
        let map = layout(&fixture(), "vpc-1").unwrap();
        for a in &map.nodes {
            for b in &map.nodes {
                if a.id != b.id && a.x == b.x {
                    assert!(
                        a.y + a.h <= b.y || b.y + b.h <= a.y,
                        "{} and {} overlap",
                        a.id,
                        b.id
                    );
                }
            }
            assert!(a.x + a.w <= map.width && a.y + a.h <= map.height);
        }
    }

    #[test]
    fn an_eni_is_named_by_what_owns_it() {
        let mut w = fixture();
        add_nat_gateway(&mut w, "nat-1", "eni-b1");
        let owners = eni_owners(&w);
        assert_eq!(owners["eni-b1"], "NAT gateway nat-1");
    }

    #[test]
    fn marked_components_are_outlined_and_everything_links_to_its_details() {
        let map = layout(&fixture(), "vpc-1").unwrap();
        let marks = Marks {
            on_path: ["eni-a1".to_string(), "subnet-a".into()].into(),
            blocked: ["eni-b1".to_string()].into(),
        };
        let svg = render(&map, &marks);
        assert!(
            svg.contains("data-id=\"eni-a1\" data-state=\"path\""),
            "{svg}"
        );
        assert!(svg.contains("data-id=\"eni-b1\" data-state=\"blocked\""));
        assert!(svg.contains("href=\"/_cove/console/resource/igw-1\""));
        assert!(layout(&fixture(), "vpc-nope").is_none());
    }
}
