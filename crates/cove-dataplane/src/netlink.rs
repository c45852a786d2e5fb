//! Talking to the kernel's routing stack directly (rtnetlink), and named
//! network namespaces made without `ip`.
//!
//! Plumbing an ENI with `ip` takes a dozen processes whose text output is
//! parsed, each a fork, an exec and a namespace switch (~20-40 ms an ENI).
//! Here the same requests go over a `NETLINK_ROUTE` socket, one round trip
//! each, and the kernel's answer is its errno (`EEXIST`, `ENOENT`, ...),
//! not a message to parse.
//!
//! * [`Netlink`] is a blocking socket bound to one network namespace (a
//!   socket keeps the namespace it was opened in for life, so one opened
//!   from a thread that entered a namespace configures that namespace from
//!   any thread). Links, IPv4 addresses, routes and policy rules.
//! * [`create_netns`] / [`delete_netns`] make and remove namespaces named
//!   the way iproute2 names them (`/run/netns/<name>`), so `ip netns`,
//!   `ip -n` and `cove exec` see them.
//! * [`PendingNetns`] is a namespace that has no name yet: it is configured
//!   while only its file descriptor reaches it, then [`PendingNetns::publish`]
//!   names it. An ENI's namespace thus appears whole, its `eth0` already up
//!   with its address and default route, or not at all; dropping an
//!   unpublished one removes it together with its veth peer.
//! * [`sysctl_in`] writes a sysctl inside a namespace.
//!
//! Everything is synchronous: the reconciler is a plain thread.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use cove_dataplane::netlink::{self, Netlink, PendingNetns, Route, RouteKind};
//! use std::net::Ipv4Addr;
//!
//! // An ENI: veth `cvr1` in the router namespace, `eth0` in the ENI's.
//! netlink::create_netns("router")?;
//! let mut router = Netlink::in_netns("router")?;
//! let eni = PendingNetns::new()?;
//! router.add_veth("cvr1", None, "eth0", eni.fd())?;
//! let mut inside = eni.netlink()?;
//! let eth0 = inside.link_index("eth0")?.expect("just made");
//! let lo = inside.link_index("lo")?.expect("every namespace has lo");
//! inside.set_up(lo)?;
//! inside.set_up(eth0)?;
//! inside.replace_address(eth0, Ipv4Addr::new(10, 0, 1, 4), 24, true)?;
//! inside.replace_route(&Route::new(
//!     netlink::MAIN_TABLE,
//!     Ipv4Addr::UNSPECIFIED,
//!     0,
//!     RouteKind::Via { gateway: Ipv4Addr::new(10, 0, 1, 1), oif: eth0, onlink: true },
//! ))?;
//! eni.publish("eni-1")?; // now `ip netns exec eni-1 ...` works
//! # Ok(())
//! # }
//! ```
//!
//! Dependencies, all licence-compatible with Apache-2.0:
//! * `netlink-packet-route` + `netlink-packet-core` (MIT): the typed
//!   rtnetlink messages that `rtnetlink` itself is built on, without its
//!   tokio runtime. Hand-packing `ifinfomsg`/`rtmsg` structs would be
//!   more code to get wrong than the crates cost.
//! * `netlink-sys` (MIT, no default features): the plain blocking netlink
//!   socket underneath them.
//! * `rustix` (Apache-2.0 / MIT): `setns`, `mount` and `statfs`; the one
//!   call it only offers as `unsafe` (`unshare`) comes from `cove-sys`.
//! * `libc` (MIT / Apache-2.0, already a workspace dependency): errno and
//!   `MSG_TRUNC` constants.

use cove_model::cidr::Cidr;
use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLM_F_ACK,
    NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use std::fmt;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Where iproute2 (and Cove) keep named namespaces.
pub const NETNS_DIR: &str = cove_net::netns::NETNS_DIR;

/// The kernel's main routing table (`ip route` without `table`).
pub const MAIN_TABLE: u32 = 254;

/// Receive buffer: a dump datagram is at most 32 KiB; a single reply
/// (a link with many attributes) is well under this.
const RECV_BUF: usize = 64 * 1024;

/// How often a dump that the kernel marks inconsistent (the table changed
/// while it was being read) is started again before giving up.
const DUMP_RETRIES: usize = 5;

/// `NSFS_MAGIC` from `linux/magic.h`: the file system of namespace files.
const NSFS_MAGIC: u64 = 0x6e73_6673;

/// `NLMSGERR_ATTR_MSG`: the kernel's text explaining an error (extended ack).
const NLMSGERR_ATTR_MSG: u16 = 1;

// ---------------------------------------------------------------------------
// Errors

/// A failed kernel request: the errno, what was attempted, and the
/// kernel's own explanation when it gave one (netlink extended ack).
/// Wrapped in an `io::Error` whose kind follows the errno; [`errno`]
/// recovers the number.
#[derive(Debug)]
struct KernelError {
    errno: i32,
    what: String,
    detail: Option<String>,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.what,
            io::Error::from_raw_os_error(self.errno)
        )?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for KernelError {}

fn kernel_error(errno: i32, what: String, detail: Option<String>) -> io::Error {
    io::Error::new(
        io::Error::from_raw_os_error(errno).kind(),
        KernelError {
            errno,
            what,
            detail,
        },
    )
}

/// Adds what was being attempted to an error, keeping its errno.
fn context(err: io::Error, what: impl FnOnce() -> String) -> io::Error {
    if let Some(n) = err.raw_os_error() {
        return kernel_error(n, what(), None);
    }
    if let Some(k) = err.get_ref().and_then(|e| e.downcast_ref::<KernelError>()) {
        return kernel_error(k.errno, format!("{}: {}", what(), k.what), k.detail.clone());
    }
    io::Error::new(err.kind(), format!("{}: {err}", what()))
}

/// The errno behind an error from this module (`libc::EEXIST`, ...), if
/// the kernel refused something.
pub fn errno(err: &io::Error) -> Option<i32> {
    err.raw_os_error().or_else(|| {
        err.get_ref()?
            .downcast_ref::<KernelError>()
            .map(|k| k.errno)
    })
}

/// Whether `err` says the thing to delete or look up is not there. The
/// kernel says so differently per object: `ENODEV` for links,
/// `EADDRNOTAVAIL` for addresses, `ESRCH` for routes, `ENOENT` for rules
/// and files.
pub fn is_absent(err: &io::Error) -> bool {
    matches!(
        errno(err),
        Some(libc::ENOENT | libc::ESRCH | libc::ENODEV | libc::EADDRNOTAVAIL)
    )
}

// ---------------------------------------------------------------------------
// Routes and rules as plain data

/// An IPv4 route in one table, as Cove makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// Kernel table id ([`MAIN_TABLE`], or a route table's own id).
    pub table: u32,
    /// Destination; `0.0.0.0/0` is the default route.
    pub dest: Cidr,
    pub kind: RouteKind,
}

impl Route {
    /// A route to `dest/prefix` (host bits are cleared, as the kernel
    /// requires).
    ///
    /// # Panics
    /// If `prefix` is over 32.
    pub fn new(table: u32, dest: Ipv4Addr, prefix: u8, kind: RouteKind) -> Route {
        Route {
            table,
            dest: Cidr::new(dest, prefix).expect("an IPv4 prefix is at most 32"),
            kind,
        }
    }
}

/// Where a [`Route`] sends packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Through a gateway (`via GW dev OIF [onlink]`). `oif` 0 lets the
    /// kernel find the link from the gateway; `onlink` makes the kernel
    /// take the gateway as reachable on `oif` without a covering subnet
    /// route, which is how an ENI with a `noprefixroute` address reaches
    /// its router.
    Via {
        gateway: Ipv4Addr,
        oif: u32,
        onlink: bool,
    },
    /// Directly out of a link (`dev OIF`, scope link).
    Dev { oif: u32 },
    /// Dropped silently (`blackhole`).
    Blackhole,
}

/// What a [`PolicyRule`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Selector {
    /// Every packet (`from all`).
    All,
    /// Packets from a source range (`from CIDR`).
    From(Cidr),
    /// Packets to a destination range (`to CIDR`).
    To(Cidr),
}

/// An IPv4 policy-routing rule that looks up a table
/// (`ip rule add pref PRIORITY from|to CIDR lookup TABLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PolicyRule {
    pub priority: u32,
    pub selector: Selector,
    pub table: u32,
}

// ---------------------------------------------------------------------------
// The socket

/// A `NETLINK_ROUTE` socket bound in one network namespace, with its
/// request sequence counter. Requests are answered one at a time.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    recv: Vec<u8>,
    send: Vec<u8>,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.socket.as_raw_fd())
            .finish()
    }
}

/// What a request expects back.
#[derive(Clone, Copy, PartialEq)]
enum Reply {
    /// An acknowledgement (and any messages before it).
    Ack,
    /// A multipart dump ending in `NLMSG_DONE`.
    Dump,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn current() -> io::Result<Netlink> {
        let what = || "opening a NETLINK_ROUTE socket".to_string();
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| context(e, what))?;
        socket.bind_auto().map_err(|e| context(e, what))?;
        // The kernel's reason for a refusal, and only the failed request's
        // header echoed back, not the whole request. Both are optional
        // (older kernels): errors still carry their errno without them.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Netlink {
            socket,
            seq: 0,
            recv: Vec::with_capacity(RECV_BUF),
            send: Vec::new(),
        })
    }

    /// A socket in the named namespace `/run/netns/<name>`, opened by a
    /// thread that entered it.
    pub fn in_netns(name: &str) -> io::Result<Netlink> {
        let ns = open_netns(name)?;
        Self::in_netns_fd(ns.as_fd())
    }

    /// A socket in the namespace that `ns` refers to (a namespace file, or
    /// a [`PendingNetns`]).
    pub fn in_netns_fd(ns: BorrowedFd<'_>) -> io::Result<Netlink> {
        in_namespace(ns, Netlink::current)
    }

    /// The index of link `name`, or `None` when there is none.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(msg), 0, Reply::Ack, || {
            format!("looking up link {name}")
        }) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A VXLAN link's identity as the kernel holds it: its network
    /// identifier, local (underlay) address and MAC; `None` when there is no
    /// such link or it is not VXLAN.
    pub fn vxlan_identity(&mut self, name: &str) -> io::Result<Option<(u32, Ipv4Addr, [u8; 6])>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        let replies = match self.request(RouteNetlinkMessage::GetLink(msg), 0, Reply::Ack, || {
            format!("looking up link {name}")
        }) {
            Ok(replies) => replies,
            Err(e) if errno(&e) == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(link) = replies.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l),
            _ => None,
        }) else {
            return Ok(None);
        };
        let (mut vni, mut local, mut mac) = (None, None, None);
        for attr in link.attributes {
            match attr {
                LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Data(InfoData::Vxlan(settings)) = info {
                            for v in settings {
                                match v {
                                    InfoVxlan::Id(id) => vni = Some(id),
                                    InfoVxlan::Local(addr) => local = Some(addr),
                                    _ => {}
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(vni.zip(local).zip(mac).map(|((v, l), m)| (v, l, m)))
    }

    /// Every link of the namespace as `(index, name)`.
    pub fn links(&mut self) -> io::Result<Vec<(u32, String)>> {
        let replies = self.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), || {
            "listing links".to_string()
        })?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => {
                    let name = l.attributes.into_iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n),
                        _ => None,
                    })?;
                    Some((l.header.index, name))
                }
                _ => None,
            })
            .collect())
    }

    /// Sets link `index` up (`ip link set DEV up`); already up is fine.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.ack(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("setting link {index} up")
        })
    }

    /// Sets link `index`'s MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.ack(RouteNetlinkMessage::SetLink(msg), 0, || {
            format!("setting link {index}'s MTU to {mtu}")
        })
    }

    /// Deletes link `index`; for a veth, its peer goes too.
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.ack(RouteNetlinkMessage::DelLink(msg), 0, || {
            format!("deleting link {index}")
        })
    }

    /// Creates a veth pair: `name` in namespace `ns` (this socket's when
    /// `None`) and its peer `peer` in `peer_ns`, both down. `EEXIST` when a
    /// link of either name is already there.
    pub fn add_veth(
        &mut self,
        name: &str,
        ns: Option<BorrowedFd<'_>>,
        peer: &str,
        peer_ns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        peer_msg
            .attributes
            .push(LinkAttribute::NetNsFd(peer_ns.as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(ns) = ns {
            msg.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.ack(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("adding veth {name} with peer {peer}"),
        )
    }

    /// Creates a VXLAN link `name` for network identifier `vni`, sending
    /// from `local` to UDP `port` of the remote ends its forwarding entries
    /// name ([`Netlink::replace_fdb`]), with hardware address `mac` and no
    /// learning. It is made in namespace `ns` (this socket's when `None`),
    /// but its UDP socket stays in this socket's namespace: so a host's
    /// underlay carries the overlay of a router namespace that has no
    /// underlay address. Its MTU is `mtu` (the kernel's default leaves room
    /// for the 50 bytes of encapsulation under a 1500-byte underlay). Down;
    /// `EEXIST` when the name is taken.
    #[allow(clippy::too_many_arguments)]
    pub fn add_vxlan(
        &mut self,
        name: &str,
        ns: Option<BorrowedFd<'_>>,
        vni: u32,
        local: Ipv4Addr,
        port: u16,
        mac: [u8; 6],
        mtu: u32,
    ) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        if let Some(ns) = ns {
            msg.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(vni),
                InfoVxlan::Local(local),
                InfoVxlan::Port(port),
                InfoVxlan::Learning(false),
            ])),
        ]));
        self.ack(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("adding vxlan {name} (vni {vni}, local {local})"),
        )
    }

    /// Sets (or replaces) the static neighbour entry `ip` → `mac` on link
    /// `index` (`ip neigh replace … nud permanent`).
    pub fn replace_neighbour(&mut self, index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> io::Result<()> {
        let msg = permanent_entry(AddressFamily::Inet, NeighbourFlags::empty(), index, ip, mac);
        self.ack(
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("replacing neighbour {ip} on link {index}"),
        )
    }

    /// Sets (or replaces) the forwarding entry of VXLAN link `index` that
    /// sends frames for `mac` to the remote end `remote`
    /// (`bridge fdb replace MAC dev VXLAN dst REMOTE self permanent`).
    pub fn replace_fdb(&mut self, index: u32, mac: [u8; 6], remote: Ipv4Addr) -> io::Result<()> {
        self.ack(
            RouteNetlinkMessage::NewNeighbour(forwarding_entry(index, mac, remote)),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("replacing forwarding entry to {remote} on link {index}"),
        )
    }

    /// Deletes the neighbour entry `ip` on link `index` (`ENOENT` when
    /// there is none; see [`is_absent`]).
    pub fn delete_neighbour(&mut self, index: u32, ip: Ipv4Addr) -> io::Result<()> {
        let msg = permanent_entry(
            AddressFamily::Inet,
            NeighbourFlags::empty(),
            index,
            ip,
            [0; 6],
        );
        self.ack(RouteNetlinkMessage::DelNeighbour(msg), 0, || {
            format!("deleting neighbour {ip} on link {index}")
        })
    }

    /// Deletes the forwarding entry of VXLAN link `index` for `mac` towards
    /// `remote` (`ENOENT` when there is none).
    pub fn delete_fdb(&mut self, index: u32, mac: [u8; 6], remote: Ipv4Addr) -> io::Result<()> {
        let msg = forwarding_entry(index, mac, remote);
        self.ack(RouteNetlinkMessage::DelNeighbour(msg), 0, || {
            format!("deleting forwarding entry to {remote} on link {index}")
        })
    }

    /// Puts `addr/prefix` on link `index` or updates it in place
    /// (`ip addr replace`). `noprefixroute` leaves out the subnet route the
    /// kernel would otherwise add.
    pub fn replace_address(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
        noprefixroute: bool,
    ) -> io::Result<()> {
        let mut msg = address_message(index, addr, prefix);
        // As iproute2: loopback addresses are host-scoped, others global.
        msg.header.scope = if addr.is_loopback() {
            AddressScope::Host
        } else {
            AddressScope::Universe
        };
        if noprefixroute {
            // The flag does not fit the header's 8 bits: IFA_FLAGS carries it.
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
        }
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("replacing address {addr}/{prefix} on link {index}"),
        )
    }

    /// The IPv4 addresses on link `index` as `(address, prefix)`.
    pub fn addresses(&mut self, index: u32) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet;
        let replies = self.dump(RouteNetlinkMessage::GetAddress(req), || {
            format!("listing addresses of link {index}")
        })?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a)
                    if a.header.index == index && a.header.family == AddressFamily::Inet =>
                {
                    let local = a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    });
                    let address = a.attributes.iter().find_map(|at| match at {
                        AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    });
                    Some((local.or(address)?, a.header.prefix_len))
                }
                _ => None,
            })
            .collect())
    }

    /// Removes `addr/prefix` from link `index` (`EADDRNOTAVAIL` when it is
    /// not there; see [`is_absent`]).
    pub fn delete_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let msg = address_message(index, addr, prefix);
        self.ack(RouteNetlinkMessage::DelAddress(msg), 0, || {
            format!("deleting address {addr}/{prefix} from link {index}")
        })
    }

    /// Adds `route` or replaces the one to the same destination in its
    /// table, whatever it was (`ip route replace`): atomic, so a packet in
    /// flight always finds a route.
    pub fn replace_route(&mut self, route: &Route) -> io::Result<()> {
        let msg = route_message(route, false);
        self.ack(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("replacing route {}", describe_route(route)),
        )
    }

    /// Deletes exactly `route` (same table, destination, kind, gateway and
    /// link); `ESRCH` when there is none (see [`is_absent`]).
    pub fn delete_route(&mut self, route: &Route) -> io::Result<()> {
        let msg = route_message(route, true);
        self.ack(RouteNetlinkMessage::DelRoute(msg), 0, || {
            format!("deleting route {}", describe_route(route))
        })
    }

    /// The unicast and blackhole IPv4 routes of `table`, with the link the
    /// kernel resolved for each. Other kinds (local, broadcast,
    /// unreachable, ...) and multipath routes are left out: Cove makes
    /// none. Metrics are not compared: Cove sets none.
    pub fn routes(&mut self, table: u32) -> io::Result<Vec<Route>> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        let replies = self.dump(RouteNetlinkMessage::GetRoute(req), || {
            format!("listing routes of table {table}")
        })?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => parse_route(&r),
                _ => None,
            })
            .filter(|r| r.table == table)
            .collect())
    }

    /// Adds `rule` unless an identical one is there (`ip rule add`, made
    /// idempotent: the kernel keeps duplicates otherwise).
    pub fn add_rule(&mut self, rule: &PolicyRule) -> io::Result<()> {
        let msg = rule_message(rule);
        match self.ack(
            RouteNetlinkMessage::NewRule(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("adding rule {rule:?}"),
        ) {
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    /// Deletes `rule`; `ENOENT` when there is none (see [`is_absent`]).
    pub fn delete_rule(&mut self, rule: &PolicyRule) -> io::Result<()> {
        let msg = rule_message(rule);
        self.ack(RouteNetlinkMessage::DelRule(msg), 0, || {
            format!("deleting rule {rule:?}")
        })
    }

    /// The IPv4 policy rules that look up a table by source, destination
    /// or for all packets, the kernel's own three included (priority 0
    /// `local`, 32766 `main`, 32767 `default`). Rules that match on more
    /// (marks, interfaces, ports, both ends) or do anything else (goto,
    /// blackhole) are left out: Cove makes none.
    pub fn rules(&mut self) -> io::Result<Vec<PolicyRule>> {
        let mut req = RuleMessage::default();
        req.header.family = AddressFamily::Inet;
        let replies = self.dump(RouteNetlinkMessage::GetRule(req), || {
            "listing rules".to_string()
        })?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => parse_rule(&r),
                _ => None,
            })
            .collect())
    }

    // -- request machinery ---------------------------------------------------

    fn ack(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        what: impl Fn() -> String,
    ) -> io::Result<()> {
        self.request(msg, flags, Reply::Ack, what).map(|_| ())
    }

    fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        what: impl Fn() -> String,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_RETRIES {
            match self.request(msg.clone(), NLM_F_DUMP, Reply::Dump, &what) {
                Err(e) if errno(&e) == Some(libc::EINTR) => continue,
                other => return other,
            }
        }
        Err(kernel_error(
            libc::EINTR,
            what(),
            Some(format!("dump interrupted {DUMP_RETRIES} times")),
        ))
    }

    /// Sends one request and reads until its acknowledgement or the end of
    /// its dump, returning the messages that came before. A dump that the
    /// kernel marks interrupted fails with `EINTR` (read to its end first,
    /// so the socket stays in step).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        reply: Reply,
        what: impl Fn() -> String,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST
            | flags
            | match reply {
                Reply::Ack => NLM_F_ACK,
                Reply::Dump => 0,
            };
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        self.send.clear();
        self.send.resize(packet.buffer_len(), 0);
        packet.serialize(&mut self.send);
        loop {
            match self.socket.send(&self.send, 0) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(context(e, &what)),
            }
        }

        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            self.recv.clear();
            let n = loop {
                match self.socket.recv(&mut self.recv, libc::MSG_TRUNC) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(context(e, &what)),
                }
            };
            if n > self.recv.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: a {n}-byte netlink reply did not fit", what()),
                ));
            }
            let mut offset = 0;
            while offset < n {
                let bytes = &self.recv[offset..n];
                let len = NetlinkBuffer::new_checked(bytes)
                    .map(|b| b.length() as usize)
                    .map_err(|e| invalid(&what, e))?;
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                    .map_err(|e| invalid(&what, e))?;
                offset += (len + 3) & !3;
                if parsed.header.sequence_number != seq {
                    continue; // a late answer to an earlier, abandoned request
                }
                if parsed.header.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                let msg_flags = parsed.header.flags;
                match parsed.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out),
                        Some(code) => {
                            let detail = ack_message(msg_flags, &e.header);
                            return Err(kernel_error(code.get().abs(), what(), detail));
                        }
                    },
                    NetlinkPayload::Done(d) => {
                        if d.code < 0 {
                            return Err(kernel_error(-d.code, what(), None));
                        }
                        if interrupted {
                            return Err(kernel_error(libc::EINTR, what(), None));
                        }
                        return Ok(out);
                    }
                    NetlinkPayload::Noop | NetlinkPayload::Overrun(_) => {}
                    _ => {}
                }
            }
        }
    }
}

fn invalid(what: impl Fn() -> String, e: impl fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: unreadable netlink reply: {e}", what()),
    )
}

/// The kernel's explanation in an error acknowledgement, if it sent one:
/// after the echoed request (only its header when capped) come
/// `NLMSGERR_ATTR_*` attributes.
fn ack_message(flags: u16, echoed: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || echoed.len() < 16 {
        return None;
    }
    let skip = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        let len = u32::from_ne_bytes(echoed[..4].try_into().ok()?) as usize;
        (len + 3) & !3
    };
    let tlvs = echoed.get(skip..)?;
    NlasIterator::new(tlvs).flatten().find_map(|nla| {
        (nla.kind() == NLMSGERR_ATTR_MSG).then(|| {
            String::from_utf8_lossy(nla.value())
                .trim_end_matches('\0')
                .to_string()
        })
    })
}

/// A VXLAN link's forwarding entry: a neighbour entry of the bridge family,
/// flagged as the device's own (`self`), whose destination is the remote
/// end, not the MAC's owner.
fn forwarding_entry(index: u32, mac: [u8; 6], remote: Ipv4Addr) -> NeighbourMessage {
    permanent_entry(
        AddressFamily::Bridge,
        NeighbourFlags::Own,
        index,
        remote,
        mac,
    )
}

/// A permanent neighbour-table entry on link `index`: `dest` ↔ `mac`.
fn permanent_entry(
    family: AddressFamily,
    flags: NeighbourFlags,
    index: u32,
    dest: Ipv4Addr,
    mac: [u8; 6],
) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = flags;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            dest,
        )));
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    msg
}

fn address_message(index: u32, addr: Ipv4Addr, prefix: u8) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix;
    msg.header.index = index;
    msg.header.flags = AddressHeaderFlags::empty();
    msg.attributes.push(AddressAttribute::Local(addr.into()));
    msg.attributes.push(AddressAttribute::Address(addr.into()));
    msg
}

/// The request iproute2 sends for `ip route replace|del`. For a delete,
/// protocol and scope are wildcards so any route of that shape matches.
fn route_message(route: &Route, delete: bool) -> RouteMessage {
    let mut msg = RouteMessage::default();
    let h = &mut msg.header;
    h.address_family = AddressFamily::Inet;
    h.destination_prefix_length = route.dest.prefix;
    // Ids above 255 only fit RTA_TABLE; the header says "unspecified" then.
    h.table = u8::try_from(route.table).unwrap_or(0);
    h.protocol = if delete {
        RouteProtocol::Unspec
    } else {
        RouteProtocol::Boot
    };
    h.kind = match route.kind {
        RouteKind::Blackhole => RouteType::BlackHole,
        _ => RouteType::Unicast,
    };
    h.scope = match (delete, route.kind) {
        (true, _) => RouteScope::NoWhere,
        (false, RouteKind::Dev { .. }) => RouteScope::Link,
        (false, _) => RouteScope::Universe,
    };
    if let RouteKind::Via { onlink: true, .. } = route.kind {
        h.flags = RouteFlags::Onlink;
    }
    msg.attributes.push(RouteAttribute::Table(route.table));
    if route.dest.prefix > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                Ipv4Addr::from(route.dest.base),
            )));
    }
    match route.kind {
        RouteKind::Via { gateway, oif, .. } => {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
            if oif != 0 {
                msg.attributes.push(RouteAttribute::Oif(oif));
            }
        }
        RouteKind::Dev { oif } => msg.attributes.push(RouteAttribute::Oif(oif)),
        RouteKind::Blackhole => {}
    }
    msg
}

fn parse_route(r: &RouteMessage) -> Option<Route> {
    let h = &r.header;
    if h.address_family != AddressFamily::Inet || h.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut dest = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = 0;
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dest = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
            RouteAttribute::Oif(o) => oif = *o,
            RouteAttribute::MultiPath(_) => return None,
            _ => {}
        }
    }
    let kind = match (h.kind, gateway) {
        (RouteType::BlackHole, _) => RouteKind::Blackhole,
        (RouteType::Unicast, Some(gateway)) => RouteKind::Via {
            gateway,
            oif,
            onlink: h.flags.contains(RouteFlags::Onlink),
        },
        (RouteType::Unicast, None) => RouteKind::Dev { oif },
        _ => return None,
    };
    Some(Route {
        table,
        dest: Cidr::new(dest, h.destination_prefix_length)?,
        kind,
    })
}

fn describe_route(r: &Route) -> String {
    let kind = match r.kind {
        RouteKind::Via {
            gateway,
            oif,
            onlink,
        } => format!(
            "via {gateway} dev #{oif}{}",
            if onlink { " onlink" } else { "" }
        ),
        RouteKind::Dev { oif } => format!("dev #{oif}"),
        RouteKind::Blackhole => "blackhole".to_string(),
    };
    format!("{} {kind} table {}", r.dest, r.table)
}

/// The request iproute2 sends for `ip rule add|del pref P from|to C lookup T`.
fn rule_message(rule: &PolicyRule) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.action = RuleAction::ToTable;
    msg.header.table = u8::try_from(rule.table).unwrap_or(0);
    msg.attributes.push(RuleAttribute::Priority(rule.priority));
    msg.attributes.push(RuleAttribute::Table(rule.table));
    match rule.selector {
        Selector::All => {}
        Selector::From(c) => {
            msg.header.src_len = c.prefix;
            msg.attributes
                .push(RuleAttribute::Source(Ipv4Addr::from(c.base).into()));
        }
        Selector::To(c) => {
            msg.header.dst_len = c.prefix;
            msg.attributes
                .push(RuleAttribute::Destination(Ipv4Addr::from(c.base).into()));
        }
    }
    msg
}

fn parse_rule(r: &RuleMessage) -> Option<PolicyRule> {
    let h = &r.header;
    if h.family != AddressFamily::Inet
        || h.action != RuleAction::ToTable
        || h.tos != 0
        || h.flags.contains(RuleFlags::Invert)
    {
        return None;
    }
    let mut priority = 0; // the kernel leaves FRA_PRIORITY out for 0
    let mut table = u32::from(h.table);
    let (mut src, mut dst) = (None, None);
    for a in &r.attributes {
        match a {
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Source(IpAddr::V4(s)) => src = Some(*s),
            RuleAttribute::Destination(IpAddr::V4(d)) => dst = Some(*d),
            RuleAttribute::Protocol(_) => {}
            RuleAttribute::SuppressPrefixLen(l) if *l == u32::MAX => {}
            RuleAttribute::SuppressIfGroup(g) if *g == u32::MAX => {}
            // A matcher or action this type cannot say (marks, interfaces,
            // ports, attributes newer than the crate): not a Cove rule.
            _ => return None,
        }
    }
    let selector = match (src, dst) {
        (None, None) => Selector::All,
        (Some(s), None) => Selector::From(Cidr::new(s, h.src_len)?),
        (None, Some(d)) => Selector::To(Cidr::new(d, h.dst_len)?),
        (Some(_), Some(_)) => return None,
    };
    Some(PolicyRule {
        priority,
        selector,
        table,
    })
}

// ---------------------------------------------------------------------------
// Namespaces

/// Runs `f` on a fresh thread that entered the network namespace `ns`, and
/// returns its result. The caller's thread never changes namespace.
fn in_namespace<T: Send>(
    ns: BorrowedFd<'_>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::move_into_link_name_space(
                ns,
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| context(e.into(), || "entering a network namespace".to_string()))?;
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn netns_path(name: &str) -> io::Result<PathBuf> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a namespace name"),
        ));
    }
    Ok(Path::new(NETNS_DIR).join(name))
}

/// Opens named namespace `name` (to hand its file descriptor to a link
/// that is made in it).
pub fn open_netns(name: &str) -> io::Result<File> {
    let path = netns_path(name)?;
    File::open(&path).map_err(|e| context(e, || format!("opening {}", path.display())))
}

/// Whether `path` is a namespace file (a mounted nsfs inode), not the
/// empty file a crash between creating and mounting can leave.
fn is_netns(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|st| u64::try_from(st.f_type).is_ok_and(|t| t == NSFS_MAGIC))
}

/// Makes `/run/netns` exist and be a shared mount point, as `ip netns add`
/// does, so a namespace unmounted in one mount namespace is unmounted in
/// all (and can be freed).
fn prepare_netns_dir() -> io::Result<()> {
    use rustix::mount::{mount_bind_recursive, mount_change, MountPropagationFlags};
    let what = || format!("preparing {NETNS_DIR}");
    match rustix::fs::mkdir(NETNS_DIR, rustix::fs::Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(context(e.into(), what)),
    }
    let shared = MountPropagationFlags::SHARED | MountPropagationFlags::REC;
    match mount_change(NETNS_DIR, shared) {
        Ok(()) => Ok(()),
        // Not a mount point yet: make it one (a bind mount on itself).
        Err(rustix::io::Errno::INVAL) => mount_bind_recursive(NETNS_DIR, NETNS_DIR)
            .and_then(|()| mount_change(NETNS_DIR, shared))
            .map_err(|e| context(e.into(), what)),
        Err(e) => Err(context(e.into(), what)),
    }
}

/// Creates the named namespace `/run/netns/<name>` the way `ip netns add`
/// does, with every link down (`lo` too). Already there is fine.
pub fn create_netns(name: &str) -> io::Result<()> {
    if is_netns(&netns_path(name)?) {
        return Ok(());
    }
    PendingNetns::new()?.publish(name)
}

/// Removes the named namespace (`ip netns del`): detaches its mount and
/// removes the file. The kernel frees the namespace, with the links in
/// it and their veth peers elsewhere, once nothing else holds it (a
/// process inside, an open descriptor). Already gone is fine.
pub fn delete_netns(name: &str) -> io::Result<()> {
    let path = netns_path(name)?;
    match rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH) {
        // EINVAL: not a mount point (a leftover empty file).
        Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {}
        Err(e) => {
            return Err(context(e.into(), || {
                format!("unmounting {}", path.display())
            }))
        }
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(context(e, || format!("removing {}", path.display()))),
    }
}

fn sysctl_path(key: &str) -> PathBuf {
    // As sysctl(8): dots separate levels; a slash stands for a dot inside
    // one level (an interface named `eth0.100` is `eth0/100`).
    let rel: String = key
        .chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect();
    Path::new("/proc/sys").join(rel)
}

/// Writes sysctl `key` (`net.ipv4.ip_forward`) from a thread inside the
/// namespace `ns`: `/proc/sys/net` shows the namespace of the thread that
/// looks, not of the process.
fn sysctl_in_fd(ns: BorrowedFd<'_>, key: &str, value: &str) -> io::Result<()> {
    let path = sysctl_path(key);
    in_namespace(ns, || {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| io::Write::write_all(&mut f, value.as_bytes()))
            .map_err(|e| context(e, || format!("setting {key}={value}")))
    })
}

/// Sets a sysctl such as `net.ipv4.ip_forward` inside the named namespace
/// `netns`; the host's own value is untouched.
pub fn sysctl_in(netns: &str, key: &str, value: &str) -> io::Result<()> {
    let ns = open_netns(netns)?;
    sysctl_in_fd(ns.as_fd(), key, value).map_err(|e| context(e, || format!("in {netns}")))
}

/// A new network namespace that has no name yet, held by a file
/// descriptor. Configure it ([`PendingNetns::netlink`],
/// [`PendingNetns::sysctl`], veths with [`PendingNetns::fd`]), then
/// [`PendingNetns::publish`] gives it its name in one step. Dropped
/// unpublished, it is freed with everything in it.
#[derive(Debug)]
pub struct PendingNetns {
    fd: OwnedFd,
}

impl PendingNetns {
    /// Creates the namespace from a thread that leaves its own
    /// (`unshare(CLONE_NEWNET)`) and exits; the descriptor keeps it.
    pub fn new() -> io::Result<PendingNetns> {
        let what = || "creating a network namespace".to_string();
        std::thread::scope(|s| {
            s.spawn(|| {
                // Only this short-lived thread moves.
                cove_sys::unshare_net_namespace_of_thread().map_err(|e| context(e, what))?;
                let ns = File::open("/proc/thread-self/ns/net").map_err(|e| context(e, what))?;
                Ok(PendingNetns { fd: ns.into() })
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The namespace, for [`Netlink::add_veth`] or [`Netlink::in_netns_fd`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A socket inside the namespace.
    pub fn netlink(&self) -> io::Result<Netlink> {
        Netlink::in_netns_fd(self.fd())
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        sysctl_in_fd(self.fd(), key, value)
    }

    /// Names the namespace `/run/netns/<name>`, as `ip netns add` would
    /// have: a bind mount of the namespace on an empty file there. The
    /// file exists for an instant before the mount lands (a mount needs a
    /// target); a reader in that instant finds no namespace in it and
    /// `setns` refuses it with `EINVAL`. `EEXIST` if a namespace of that
    /// name exists.
    pub fn publish(self, name: &str) -> io::Result<()> {
        let path = netns_path(name)?;
        prepare_netns_dir()?;
        let created = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if is_netns(&path) {
                    return Err(kernel_error(
                        libc::EEXIST,
                        format!("naming a namespace {}", path.display()),
                        None,
                    ));
                }
                false // an empty file left by a crash: mount over it
            }
            Err(e) => return Err(context(e, || format!("creating {}", path.display()))),
        };
        let source = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        rustix::mount::mount_bind(source.as_str(), &path).map_err(|e| {
            if created {
                let _ = std::fs::remove_file(&path);
            }
            context(e.into(), || {
                format!("mounting a namespace on {}", path.display())
            })
        })
    }
}
