//! Links and addresses: look up, create (veth pairs, VXLAN, IPIP), move into
//! a namespace, rename, MTU, MAC, up/down, delete; IPv4/IPv6 addresses; and
//! the neighbour (ARP/NDP) and bridge FDB entries a VXLAN device needs.
//!
//! Links are named by their index (`u32`) once they exist; [`Netlink::link`]
//! resolves a name.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::IpNet;
use netlink_packet_core::Parseable;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoIpTunnel, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};

use crate::error::{Error, Result};
use crate::netlink::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, Netlink, Request};
use crate::netns::Netns;
use crate::route::{Route, RouteChange, encode_change};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;
const IFNAMSIZ: usize = 16;
/// The most TX/RX queues the kernel lets a device have (`rtnl_create_link`).
const MAX_QUEUES: u32 = 4096;

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<MacAddr> {
        let bad = || Error::Invalid {
            field: "mac".into(),
            reason: format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Device kind (`veth`, `vxlan`, `ipip`, ...); `None` for physical ones.
    pub kind: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Hardware address, for Ethernet-like links.
    pub mac: Option<MacAddr>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Operationally up (`IFF_RUNNING`: up with a carrier, a veth whose
    /// peer is up too), what Calico's MTU detection asks of an interface.
    pub running: bool,
    /// `IFLA_LINK`: the link this one is tied to, as the kernel reports it:
    /// a veth's other end (an index in the other end's namespace when the
    /// pair spans two, where the kernel always reports it), a VLAN's or
    /// tunnel's underlay. The kernel leaves it out when it would equal this
    /// link's own index in the same namespace.
    pub linked: Option<u32>,
}

/// A veth pair to create: `name` stays in the namespace of the socket, `peer`
/// goes to `peer_netns` (or stays too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VethPair {
    /// The near end's name (the host side of a pod: `tby0123456789a`).
    pub name: String,
    /// The far end's name (`eth0` in a pod).
    pub peer: String,
    /// MTU of both ends; the kernel default if `None`.
    pub mtu: Option<u32>,
    /// MAC of the near end; random if `None`.
    pub mac: Option<MacAddr>,
    /// MAC of the far end; random if `None`.
    pub peer_mac: Option<MacAddr>,
    /// The near end administratively up from the moment it exists (inside
    /// the creating request, as `ip link add ... up`), saving a request.
    /// The far end is always created down: the kernel would open it before
    /// the pair is joined, which veth refuses (ENOTCONN).
    pub up: bool,
    /// TX and RX queues of each end; `None`: the kernel's default, one per
    /// possible CPU. Every queue is a sysfs object the kernel registers at
    /// creation, so fewer queues make the pair faster to create; more than
    /// one only matter for veth NAPI (XDP programs or GRO turned on).
    pub queues: Option<u32>,
}

/// A VXLAN device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    /// Device name (`vxlan.tabby`).
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// Local (source) underlay address.
    pub local: Option<IpAddr>,
    /// Underlay interface index to send through.
    pub underlay: Option<u32>,
    /// UDP destination port (4789 is IANA's).
    pub port: u16,
    /// Learn remote MACs from received packets; tabby programs FDB entries
    /// instead, so normally `false`.
    pub learning: bool,
    /// MTU; the kernel default (underlay minus 50) if `None`.
    pub mtu: Option<u32>,
    /// MAC of the device; random if `None`.
    pub mac: Option<MacAddr>,
}

/// A neighbour (ARP/NDP) entry as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// Its link-layer address, when resolved.
    pub mac: Option<MacAddr>,
    /// A permanent (static) entry, as tabby makes them.
    pub permanent: bool,
}

/// A bridge forwarding (FDB) entry of a VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    /// The MAC address frames are sent for.
    pub mac: MacAddr,
    /// The remote underlay address they are sent to.
    pub remote: Option<IpAddr>,
    /// A permanent (static) entry, as tabby makes them.
    pub permanent: bool,
}

/// An IPIP tunnel device (`tunl0` in Calico's layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpipTunnel {
    /// Device name; `tunl0` is the kernel's fallback device name.
    pub name: String,
    /// Local underlay address; `None` for any.
    pub local: Option<Ipv4Addr>,
    /// MTU (underlay minus 20).
    pub mtu: Option<u32>,
}

fn check_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(Error::Invalid {
            field: field.into(),
            reason: format!("{name:?} is not an interface name (1 to 15 bytes, no '/' or spaces)"),
        });
    }
    Ok(())
}

fn decode_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        kind: None,
        mtu: 0,
        mac: None,
        up: m.header.flags.contains(LinkFlags::Up),
        running: m.header.flags.contains(LinkFlags::Running),
        linked: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Link(i) if *i != 0 => l.linked = Some(*i),
            LinkAttribute::Mtu(mtu) => l.mtu = *mtu,
            LinkAttribute::Address(mac) => {
                if let Ok(b) = <[u8; 6]>::try_from(mac.as_slice()) {
                    l.mac = Some(MacAddr(b));
                }
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        l.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    l
}

/// `NUD_PERMANENT` is a bit; FDB entries also carry `NUD_NOARP`.
fn is_permanent(state: NeighbourState) -> bool {
    u16::from(state) & 0x80 != 0
}

/// The `RTM_NEWLINK` body that creates an IPIP device.
fn ipip_message(tunnel: &IpipTunnel) -> LinkMessage {
    let mut data = Vec::new();
    if let Some(local) = tunnel.local {
        data.push(InfoIpTunnel::Local(IpAddr::V4(local)));
    }
    let mut m = LinkMessage::default();
    m.attributes
        .push(LinkAttribute::IfName(tunnel.name.clone()));
    let mut info = vec![LinkInfo::Kind(InfoKind::IpIp)];
    if !data.is_empty() {
        info.push(LinkInfo::Data(InfoData::IpTunnel(data)));
    }
    m.attributes.push(LinkAttribute::LinkInfo(info));
    m
}

fn link_msg(index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m
}

/// A permanent neighbour entry: `ip` is at `mac` on link `index`.
fn neighbour_msg(index: u32, ip: IpAddr, mac: MacAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes.push(NeighbourAttribute::Destination(match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }));
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    m
}

/// One change of a pipelined burst ([`Netlink::apply_link_changes`]): the
/// steps that configure an interface once it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    /// Set the link with this index administratively up.
    Up(u32),
    /// Add an address to a link (already there is not an error).
    AddAddress(u32, IpNet),
    /// Add or replace a permanent neighbour entry: link, address, MAC.
    ReplaceNeighbour(u32, IpAddr, MacAddr),
    /// Add or replace a route (tagged `proto tabby`).
    ReplaceRoute(Route),
}

impl fmt::Display for LinkChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkChange::Up(i) => write!(f, "set link #{i} up"),
            LinkChange::AddAddress(i, a) => write!(f, "add address {a} to link #{i}"),
            LinkChange::ReplaceNeighbour(i, ip, mac) => {
                write!(f, "neighbour {ip} lladdr {mac} on link #{i}")
            }
            LinkChange::ReplaceRoute(r) => write!(f, "replace route {r}"),
        }
    }
}

impl Netlink {
    /// The link named `name`, if there is one (one request, not a dump).
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        check_name("link name", name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.get_link(&m, || format!("look up link {name}"))
    }

    /// The link with interface index `index`, if there is one.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        self.get_link(&link_msg(index), || format!("look up link #{index}"))
    }

    fn get_link(&mut self, m: &LinkMessage, what: impl FnOnce() -> String) -> Result<Option<Link>> {
        match self.get(RTM_GETLINK, m)? {
            Ok(payload) => {
                let m = LinkMessage::parse(&payload[..])
                    .map_err(|e| Error::Decode(format!("link message: {e}")))?;
                Ok(Some(decode_link(&m)))
            }
            Err(e) if e.errno == libc::ENODEV => Ok(None),
            Err(source) => Err(Error::Kernel {
                operation: what(),
                source,
            }),
        }
    }

    /// The link named `name`, or [`Error::NoSuchLink`].
    pub fn require_link(&mut self, name: &str) -> Result<Link> {
        self.link(name)?
            .ok_or_else(|| Error::NoSuchLink(name.to_owned()))
    }

    /// The index of the link named `name`, or [`Error::NoSuchLink`].
    pub fn link_index(&mut self, name: &str) -> Result<u32> {
        Ok(self.require_link(name)?.index)
    }

    /// Every link in the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let mut out = Vec::new();
        self.dump(RTM_GETLINK, &LinkMessage::default(), |p| {
            let m =
                LinkMessage::parse(p).map_err(|e| Error::Decode(format!("link message: {e}")))?;
            out.push(decode_link(&m));
            Ok(())
        })?;
        Ok(out)
    }

    /// Creates a veth pair, the peer end moved straight into `peer_netns`
    /// when given. Returns the near end as the kernel reports it (its
    /// [`Link::linked`] is the far end's index). The near end is up if
    /// `pair.up` says so, the far end is down.
    pub fn create_veth(&mut self, pair: &VethPair, peer_netns: Option<&Netns>) -> Result<Link> {
        check_name("veth.name", &pair.name)?;
        check_name("veth.peer", &pair.peer)?;
        let mut m = LinkMessage::default();
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(pair.peer.clone()));
        if let Some(mtu) = pair.mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = pair.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(q) = pair.queues {
            if q == 0 || q > MAX_QUEUES {
                return Err(Error::Invalid {
                    field: "veth.queues".into(),
                    reason: format!("{q} is not a queue count (1..={MAX_QUEUES})"),
                });
            }
            for end in [&mut peer.attributes, &mut m.attributes] {
                end.push(LinkAttribute::NumTxQueues(q));
                end.push(LinkAttribute::NumRxQueues(q));
            }
        }
        if let Some(ns) = peer_netns {
            peer.attributes.push(LinkAttribute::NetNsFd(ns.raw_fd()));
        }
        if pair.up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        m.attributes.push(LinkAttribute::IfName(pair.name.clone()));
        if let Some(mtu) = pair.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = pair.mac {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        let echoed = self
            .request_echo(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &m, RTM_NEWLINK)?
            .map_err(|source| Error::Kernel {
                operation: format!("create veth {} peer {}", pair.name, pair.peer),
                source,
            })?;
        // The kernel's echo of the new link (Linux 6.3+) is the link as a
        // look-up would report it; older kernels need the look-up.
        match echoed.as_deref().map(LinkMessage::parse) {
            Some(Ok(m)) => Ok(decode_link(&m)),
            _ => self.require_link(&pair.name),
        }
    }

    /// Creates a VXLAN device; returns its index. Left down.
    pub fn create_vxlan(&mut self, vx: &Vxlan) -> Result<u32> {
        check_name("vxlan.name", &vx.name)?;
        if vx.vni >= 1 << 24 {
            return Err(Error::Invalid {
                field: "vxlan.vni".into(),
                reason: format!("{} does not fit in 24 bits", vx.vni),
            });
        }
        let mut data = vec![
            InfoVxlan::Id(vx.vni),
            InfoVxlan::Port(vx.port),
            InfoVxlan::Learning(vx.learning),
        ];
        match vx.local {
            Some(IpAddr::V4(a)) => data.push(InfoVxlan::Local(a)),
            Some(IpAddr::V6(a)) => data.push(InfoVxlan::Local6(a)),
            None => {}
        }
        if let Some(dev) = vx.underlay {
            data.push(InfoVxlan::Link(dev));
        }
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(vx.name.clone()));
        if let Some(mtu) = vx.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = vx.mac {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(data)),
        ]));
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &m)?
            .map_err(|source| {
                if source.errno == libc::EOPNOTSUPP {
                    Error::KernelLacks {
                        kind: "vxlan",
                        config: "CONFIG_VXLAN",
                        consequence: "vxlanMode pools cannot be used on this node",
                    }
                } else {
                    Error::Kernel {
                        operation: format!("create vxlan {} id {}", vx.name, vx.vni),
                        source,
                    }
                }
            })?;
        self.link_index(&vx.name)
    }

    /// The VXLAN device named `name` (its index and settings), if there is one.
    pub fn vxlan(&mut self, name: &str) -> Result<Option<(u32, Vxlan)>> {
        check_name("vxlan.name", name)?;
        let mut req = LinkMessage::default();
        req.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let payload = match self.get(RTM_GETLINK, &req)? {
            Ok(p) => p,
            Err(e) if e.errno == libc::ENODEV => return Ok(None),
            Err(source) => {
                return Err(Error::Kernel {
                    operation: format!("look up link {name}"),
                    source,
                });
            }
        };
        let m = LinkMessage::parse(&payload[..])
            .map_err(|e| Error::Decode(format!("link message: {e}")))?;
        let link = decode_link(&m);
        let mut vx = Vxlan {
            name: link.name.clone(),
            vni: 0,
            local: None,
            underlay: None,
            port: 0,
            learning: true,
            mtu: Some(link.mtu),
            mac: link.mac,
        };
        let mut is_vxlan = false;
        for a in &m.attributes {
            let LinkAttribute::LinkInfo(infos) = a else {
                continue;
            };
            for i in infos {
                if let LinkInfo::Data(InfoData::Vxlan(data)) = i {
                    is_vxlan = true;
                    for d in data {
                        match d {
                            InfoVxlan::Id(v) => vx.vni = *v,
                            InfoVxlan::Port(p) => vx.port = *p,
                            InfoVxlan::Local(a) => vx.local = Some(IpAddr::V4(*a)),
                            InfoVxlan::Local6(a) => vx.local = Some(IpAddr::V6(*a)),
                            InfoVxlan::Link(l) if *l != 0 => vx.underlay = Some(*l),
                            InfoVxlan::Learning(l) => vx.learning = *l,
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(is_vxlan.then_some((link.index, vx)))
    }

    /// Makes sure a VXLAN device with these settings exists and returns its
    /// index: an existing one with the same VNI, port, local address,
    /// underlay and learning is kept (MTU and MAC updated in place, so a
    /// restart causes no interruption); a different one is recreated.
    pub fn ensure_vxlan(&mut self, vx: &Vxlan) -> Result<u32> {
        if let Some((index, have)) = self.vxlan(&vx.name)? {
            let same = have.vni == vx.vni
                && have.port == vx.port
                && have.local == vx.local
                && (vx.underlay.is_none() || have.underlay == vx.underlay)
                && have.learning == vx.learning;
            if same {
                if let Some(mtu) = vx.mtu {
                    if have.mtu != Some(mtu) {
                        self.set_mtu(index, mtu)?;
                    }
                }
                if let Some(mac) = vx.mac {
                    if have.mac != Some(mac) {
                        self.set_mac(index, mac)?;
                    }
                }
                return Ok(index);
            }
            self.delete_link(index)?;
        } else if let Some(other) = self.link(&vx.name)? {
            return Err(Error::Invalid {
                field: "vxlan.name".into(),
                reason: format!(
                    "{} exists and is a {} device, not vxlan",
                    other.name,
                    other.kind.as_deref().unwrap_or("physical")
                ),
            });
        }
        self.create_vxlan(vx)
    }

    /// The neighbour (ARP/NDP) entries on link `index`.
    pub fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            // Filtered by NDA_IFINDEX (strict dumps refuse a header ifindex).
            let mut req = NeighbourMessage::default();
            req.header.family = family;
            req.attributes.push(NeighbourAttribute::IfIndex(index));
            self.dump(RTM_GETNEIGH, &req, |p| {
                let m = NeighbourMessage::parse(p)
                    .map_err(|e| Error::Decode(format!("neighbour message: {e}")))?;
                if m.header.ifindex != index {
                    return Ok(());
                }
                let mut ip = None;
                let mut mac = None;
                for a in &m.attributes {
                    match a {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                            ip = Some(IpAddr::V4(*v4))
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                            ip = Some(IpAddr::V6(*v6))
                        }
                        NeighbourAttribute::LinkLayerAddress(l) => {
                            mac = <[u8; 6]>::try_from(l.as_slice()).ok().map(MacAddr)
                        }
                        _ => {}
                    }
                }
                if let Some(ip) = ip {
                    out.push(Neighbour {
                        ip,
                        mac,
                        permanent: is_permanent(m.header.state),
                    });
                }
                Ok(())
            })?;
        }
        Ok(out)
    }

    /// The bridge forwarding entries of (VXLAN) link `index`.
    pub fn fdb(&mut self, index: u32) -> Result<Vec<FdbEntry>> {
        let mut out = Vec::new();
        let mut req = NeighbourMessage::default();
        req.header.family = AddressFamily::Bridge;
        self.dump(RTM_GETNEIGH, &req, |p| {
            let m = NeighbourMessage::parse(p)
                .map_err(|e| Error::Decode(format!("fdb message: {e}")))?;
            if m.header.ifindex != index {
                return Ok(());
            }
            let mut mac = None;
            let mut remote = None;
            for a in &m.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(l) => {
                        mac = <[u8; 6]>::try_from(l.as_slice()).ok().map(MacAddr)
                    }
                    NeighbourAttribute::Destination(d) => {
                        remote = match d {
                            NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
                            NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
                            NeighbourAddress::Other(b) => match b.len() {
                                4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                                16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
                                _ => None,
                            },
                            _ => None,
                        }
                    }
                    _ => {}
                }
            }
            if let Some(mac) = mac {
                out.push(FdbEntry {
                    mac,
                    remote,
                    permanent: is_permanent(m.header.state),
                });
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Makes sure the IPIP device exists and is configured; returns its
    /// index. `tunl0` is the kernel's own fallback device, present in every
    /// namespace once the `ipip` module is loaded: it is configured, not
    /// created. A kernel without IPIP gives [`Error::KernelLacks`].
    pub fn ensure_ipip(&mut self, tunnel: &IpipTunnel) -> Result<u32> {
        check_name("ipip.name", &tunnel.name)?;
        let index = match self.link(&tunnel.name)? {
            Some(l) if l.kind.as_deref() == Some("ipip") => l.index,
            Some(l) => {
                return Err(Error::Invalid {
                    field: "ipip.name".into(),
                    reason: format!(
                        "{} exists and is a {} device, not ipip",
                        l.name,
                        l.kind.as_deref().unwrap_or("physical")
                    ),
                });
            }
            None => {
                let m = ipip_message(tunnel);
                self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &m)?
                    .map_err(|source| match source.errno {
                        libc::EOPNOTSUPP => Error::KernelLacks {
                            kind: "ipip",
                            config: "CONFIG_NET_IPIP",
                            consequence: "ipipMode pools (tunl0) cannot be used on this node; \
                                          use ipipMode: Never with native routing, or vxlanMode",
                        },
                        _ => Error::Kernel {
                            operation: format!("create ipip device {}", tunnel.name),
                            source,
                        },
                    })?;
                self.link_index(&tunnel.name)?
            }
        };
        if let Some(mtu) = tunnel.mtu {
            self.set_mtu(index, mtu)?;
        }
        Ok(index)
    }

    fn set_link(&mut self, m: LinkMessage, what: impl FnOnce() -> String) -> Result<()> {
        self.request_ok(RTM_NEWLINK, 0, &m, what)
    }

    /// Sets a link administratively up.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut m = link_msg(index);
        m.header.flags = LinkFlags::Up;
        m.header.change_mask = LinkFlags::Up;
        self.set_link(m, || format!("set link #{index} up"))
    }

    /// Sets a link administratively down.
    pub fn set_down(&mut self, index: u32) -> Result<()> {
        let mut m = link_msg(index);
        m.header.change_mask = LinkFlags::Up;
        self.set_link(m, || format!("set link #{index} down"))
    }

    /// Sets a link's MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.set_link(m, || format!("set link #{index} mtu {mtu}"))
    }

    /// Sets a link's MAC address.
    pub fn set_mac(&mut self, index: u32, mac: MacAddr) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        self.set_link(m, || format!("set link #{index} address {mac}"))
    }

    /// Renames a link (it must be down).
    pub fn rename(&mut self, index: u32, name: &str) -> Result<()> {
        check_name("new name", name)?;
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.set_link(m, || format!("rename link #{index} to {name}"))
    }

    /// Moves a link into another namespace (it gets a new index there).
    pub fn move_to_netns(&mut self, index: u32, netns: &Netns) -> Result<()> {
        let mut m = link_msg(index);
        m.attributes.push(LinkAttribute::NetNsFd(netns.raw_fd()));
        self.set_link(m, || {
            format!("move link #{index} to namespace {}", netns.path().display())
        })
    }

    /// Deletes a link (a veth takes its peer with it).
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        self.request_ok(RTM_DELLINK, 0, &link_msg(index), || {
            format!("delete link #{index}")
        })
    }

    fn address_msg(index: u32, addr: IpNet) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = match addr {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        m.header.prefix_len = addr.prefix_len();
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(addr.addr()));
        m.attributes.push(AddressAttribute::Address(addr.addr()));
        m
    }

    /// Adds an address (`10.0.0.1/24`, `fd00::1/64`) to a link; an address
    /// already there is not an error.
    pub fn add_address(&mut self, index: u32, addr: IpNet) -> Result<()> {
        let m = Self::address_msg(index, addr);
        self.request_ok(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &m, || {
            format!("add address {addr} to link #{index}")
        })
    }

    /// Removes an address from a link.
    pub fn delete_address(&mut self, index: u32, addr: IpNet) -> Result<()> {
        let m = Self::address_msg(index, addr);
        self.request_ok(RTM_DELADDR, 0, &m, || {
            format!("delete address {addr} from link #{index}")
        })
    }

    /// The addresses on a link (both families).
    pub fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>> {
        let mut out = Vec::new();
        // Filtered by the kernel (strict dump checking is on), and here.
        let mut req = AddressMessage::default();
        req.header.index = index;
        self.dump(RTM_GETADDR, &req, |p| {
            let m = AddressMessage::parse(p)
                .map_err(|e| Error::Decode(format!("address message: {e}")))?;
            if m.header.index != index {
                return Ok(());
            }
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = local.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = addr {
                if let Ok(net) = IpNet::new(ip, m.header.prefix_len) {
                    out.push(net);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Adds or replaces a permanent neighbour (ARP/NDP) entry: `ip` is at
    /// `mac` on link `index`.
    pub fn replace_neighbour(&mut self, index: u32, ip: IpAddr, mac: MacAddr) -> Result<()> {
        let m = neighbour_msg(index, ip, mac);
        self.request_ok(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, &m, || {
            format!("neighbour {ip} lladdr {mac} on link #{index}")
        })
    }

    /// Applies `changes` in order in one pipelined exchange (one system call
    /// out, one barrier acknowledged back) instead of one round trip each.
    /// The kernel applies each change in turn; the first that failed is
    /// returned as [`Error::Kernel`] naming it (later ones were still
    /// tried).
    pub fn apply_link_changes(&mut self, changes: &[LinkChange]) -> Result<()> {
        enum Body {
            Link(LinkMessage),
            Address(AddressMessage),
            Neighbour(NeighbourMessage),
            Route(netlink_packet_route::route::RouteMessage),
        }
        let mut bodies = Vec::with_capacity(changes.len());
        for (i, c) in changes.iter().enumerate() {
            bodies.push(match c {
                LinkChange::Up(index) => {
                    let mut m = link_msg(*index);
                    m.header.flags = LinkFlags::Up;
                    m.header.change_mask = LinkFlags::Up;
                    (RTM_NEWLINK, 0, Body::Link(m))
                }
                LinkChange::AddAddress(index, addr) => (
                    RTM_NEWADDR,
                    NLM_F_CREATE | NLM_F_REPLACE,
                    Body::Address(Self::address_msg(*index, *addr)),
                ),
                LinkChange::ReplaceNeighbour(index, ip, mac) => (
                    RTM_NEWNEIGH,
                    NLM_F_CREATE | NLM_F_REPLACE,
                    Body::Neighbour(neighbour_msg(*index, *ip, *mac)),
                ),
                LinkChange::ReplaceRoute(route) => {
                    route.check().map_err(|(field, reason)| Error::Invalid {
                        field: format!("changes[{i}].{field}"),
                        reason,
                    })?;
                    let (kind, flags, m) = encode_change(&RouteChange::Replace(route.clone()));
                    (kind, flags, Body::Route(m))
                }
            });
        }
        let requests: Vec<Request<'_>> = bodies
            .iter()
            .map(|(kind, flags, body)| Request {
                kind: *kind,
                flags: *flags,
                body: match body {
                    Body::Link(m) => m,
                    Body::Address(m) => m,
                    Body::Neighbour(m) => m,
                    Body::Route(m) => m,
                },
            })
            .collect();
        match self.batch(&requests)?.into_iter().next() {
            None => Ok(()),
            Some((i, source)) => Err(Error::Kernel {
                operation: changes[i].to_string(),
                source,
            }),
        }
    }

    /// Removes a neighbour entry.
    pub fn delete_neighbour(&mut self, index: u32, ip: IpAddr) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        m.header.ifindex = index;
        m.attributes.push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
        self.request_ok(RTM_DELNEIGH, 0, &m, || {
            format!("delete neighbour {ip} on link #{index}")
        })
    }

    fn fdb_msg(index: u32, mac: MacAddr, remote: IpAddr) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(match remote {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        m
    }

    /// Adds or replaces a VXLAN forwarding entry: frames for `mac` on the
    /// VXLAN device `index` go to the underlay address `remote`.
    pub fn replace_fdb(&mut self, index: u32, mac: MacAddr, remote: IpAddr) -> Result<()> {
        let m = Self::fdb_msg(index, mac, remote);
        self.request_ok(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, &m, || {
            format!("fdb {mac} dst {remote} on link #{index}")
        })
    }

    /// Removes a VXLAN forwarding entry.
    pub fn delete_fdb(&mut self, index: u32, mac: MacAddr, remote: IpAddr) -> Result<()> {
        let m = Self::fdb_msg(index, mac, remote);
        self.request_ok(RTM_DELNEIGH, 0, &m, || {
            format!("delete fdb {mac} dst {remote} on link #{index}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_print() {
        let m: MacAddr = "02:aa:00:0b:cc:ff".parse().expect("mac");
        assert_eq!(m.to_string(), "02:aa:00:0b:cc:ff");
        assert!("02:aa:00:0b:cc".parse::<MacAddr>().is_err());
        assert!("02:aa:00:0b:cc:ff:00".parse::<MacAddr>().is_err());
        assert!("zz:aa:00:0b:cc:ff".parse::<MacAddr>().is_err());
    }

    #[test]
    fn ipip_request_names_the_kind_and_local_address() {
        use netlink_packet_core::Emitable;
        let m = ipip_message(&IpipTunnel {
            name: "tunl0".into(),
            local: Some(Ipv4Addr::new(192, 168, 0, 1)),
            mtu: None,
        });
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        let back = LinkMessage::parse(&buf[..]).expect("parses");
        let l = decode_link(&back);
        assert_eq!(
            (l.name.as_str(), l.kind.as_deref()),
            ("tunl0", Some("ipip"))
        );
        let local = back.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(i) => i.iter().find_map(|x| match x {
                LinkInfo::Data(InfoData::IpTunnel(d)) => d.iter().find_map(|t| match t {
                    InfoIpTunnel::Local(ip) => Some(*ip),
                    _ => None,
                }),
                _ => None,
            }),
            _ => None,
        });
        assert_eq!(local, Some(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1))));
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(check_name("n", "eth0").is_ok());
        assert!(check_name("n", "").is_err());
        assert!(check_name("n", "sixteen-chars-xx").is_err());
        assert!(check_name("n", "a/b").is_err());
    }
}
