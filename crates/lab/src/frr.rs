//! FRR configs generated from the topology (one file per daemon: zebra,
//! ospfd, bgpd) and the command lines that run those daemons in a router's
//! namespace with every socket and pid file in the router's state directory.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::topology::{Router, Topology};

/// FRR's daemons.
pub const FRR_DIR: &str = "/usr/lib/frr";

/// The router id: the configured one, else its first interface address.
pub fn router_id(topology: &Topology, r: &Router) -> Ipv4Addr {
    r.router_id.unwrap_or_else(|| {
        topology
            .interfaces(&r.name)
            .first()
            .map(|(_, a)| a.addr())
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    })
}

/// The generated configs: `(daemon, text)` for zebra and, when the router
/// has them, ospfd and bgpd.
pub fn configs(topology: &Topology, r: &Router, dir: &Path) -> Vec<(&'static str, String)> {
    let rid = router_id(topology, r);
    let log = |d: &str| {
        format!(
            "hostname {}\nlog file {}/{d}.log\n!\n",
            r.name,
            dir.display()
        )
    };
    let mut out = vec![("zebra", log("zebra"))];
    let link_ifaces = link_interfaces(topology, &r.name);
    if let Some(ospf) = &r.ospf {
        let mut c = log("ospfd");
        for (iface, _) in topology.interfaces(&r.name) {
            c += &format!(
                "interface {iface}\n ip ospf hello-interval 1\n ip ospf dead-interval 4\n"
            );
            if link_ifaces.contains(&iface) {
                c += " ip ospf network point-to-point\n";
            }
            c += "exit\n!\n";
        }
        c += &format!(
            "router ospf\n ospf router-id {rid}\n network 0.0.0.0/0 area {}\n redistribute connected\n",
            ospf.area
        );
        if ospf.redistribute_bgp {
            c += " redistribute bgp\n";
        }
        c += "exit\n";
        out.push(("ospfd", c));
    }
    if let (Some(bgp), Some(asn)) = (&r.bgp, r.asn) {
        let mut c = log("bgpd");
        c += &format!(
            "router bgp {asn}\n bgp router-id {rid}\n no bgp ebgp-requires-policy\n no bgp network import-check\n"
        );
        for n in &bgp.neighbors {
            c += &format!(
                " neighbor {a} remote-as {asn}\n neighbor {a} timers connect 2\n neighbor {a} advertisement-interval 0\n",
                a = n.address,
                asn = n.asn
            );
        }
        c += " address-family ipv4 unicast\n";
        if bgp.redistribute_ospf {
            c += "  redistribute ospf\n";
        }
        for n in &bgp.neighbors {
            c += &format!("  neighbor {} activate\n", n.address);
            if n.route_reflector_client {
                c += &format!("  neighbor {} route-reflector-client\n", n.address);
            }
        }
        c += " exit-address-family\nexit\n";
        out.push(("bgpd", c));
    }
    out
}

/// The interface names of `host` that are point-to-point links.
fn link_interfaces(topology: &Topology, host: &str) -> Vec<String> {
    let n: usize = topology
        .links
        .iter()
        .map(|l| l.ends.iter().filter(|e| e.host == host).count())
        .sum();
    (0..n).map(|i| format!("eth{i}")).collect()
}

/// The arguments of one FRR daemon reading `dir/<daemon>.conf`. The
/// daemons run as FRR's own user (`frr`), which must own `dir`.
pub fn daemon_args(daemon: &str, dir: &Path) -> Vec<String> {
    let d = dir.display();
    let mut a = vec![
        "-f".to_owned(),
        format!("{d}/{daemon}.conf"),
        "-i".to_owned(),
        format!("{d}/{daemon}.pid"),
        "-z".to_owned(),
        format!("{d}/zserv.api"),
        "--vty_socket".to_owned(),
        d.to_string(),
    ];
    if daemon != "zebra" {
        a.extend(["-P".to_owned(), "0".to_owned()]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_gets_ospf_with_bgp_redistributed_and_its_neighbours() {
        let t = Topology::parse(
            r"
name: t
routers:
  - name: leaf1
    kind: frr
    as: 65011
    ospf: {redistributeBgp: true}
    bgp: {neighbors: [{address: 10.0.11.1, as: 65000}]}
  - {name: spine, kind: frr, ospf: {}}
nodes:
  - {name: n, address: 10.0.11.1/31}
links:
  - ends: [{host: spine, address: 10.11.99.0/31}, {host: leaf1, address: 10.11.99.1/31}]
  - ends: [{host: leaf1, address: 10.0.11.0/31}, {host: n, address: 10.0.11.1/31}]
",
            "t.yaml",
        )
        .expect("parse");
        let c = configs(&t, &t.routers[0], Path::new("/x"));
        let names: Vec<&str> = c.iter().map(|(d, _)| *d).collect();
        assert_eq!(names, ["zebra", "ospfd", "bgpd"]);
        assert!(c[1].1.contains("ospf router-id 10.11.99.1"), "{}", c[1].1);
        assert!(c[1].1.contains(" redistribute bgp\n"), "{}", c[1].1);
        assert!(c[2].1.contains("router bgp 65011\n"), "{}", c[2].1);
        assert!(
            c[2].1.contains("neighbor 10.0.11.1 remote-as 65000"),
            "{}",
            c[2].1
        );
        let spine = configs(&t, &t.routers[1], Path::new("/x"));
        assert_eq!(spine.len(), 2, "no bgpd on the spine");
        assert!(!spine[1].1.contains("redistribute bgp"));
    }
}
