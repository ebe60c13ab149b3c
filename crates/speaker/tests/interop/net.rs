//! Two-namespace (and three-namespace) topologies for interop tests: each
//! test gets namespaces of its own, so addresses can repeat across tests
//! running in parallel.

use tabby_testbed::{Netns, veth};

/// Two namespaces joined by one veth: `a` is 10.77.0.1/24 on `eth0`, `b` is
/// 10.77.0.2/24 on `eth0`.
pub struct Pair {
    /// The first namespace (usually tabby).
    pub a: Netns,
    /// The second namespace (usually the other daemon).
    pub b: Netns,
}

/// Address of `a` in a [`Pair`].
pub const A: &str = "10.77.0.1";
/// Address of `b` in a [`Pair`].
pub const B: &str = "10.77.0.2";

impl Pair {
    /// Builds the pair; `tag` goes into the namespace names.
    pub fn new(tag: &str) -> Pair {
        let a = Netns::new(&format!("{tag}a")).expect("netns a");
        let b = Netns::new(&format!("{tag}b")).expect("netns b");
        veth(
            &a,
            "eth0",
            Some("10.77.0.1/24"),
            &b,
            "eth0",
            Some("10.77.0.2/24"),
        )
        .expect("veth");
        Pair { a, b }
    }
}

/// A hub namespace joined to several spokes over one bridge: the hub is
/// 10.78.0.1/24, spoke i is 10.78.0.(i+2)/24; spokes reach each other too.
pub struct Star {
    /// The centre (the route reflector).
    pub hub: Netns,
    /// The others.
    pub spokes: Vec<Netns>,
}

impl Star {
    /// Address of the hub.
    pub const HUB: &'static str = "10.78.0.1";

    /// Address of spoke `i`.
    pub fn spoke_addr(i: usize) -> String {
        format!("10.78.0.{}", i + 2)
    }

    /// Builds a hub and `n` spokes, all on one bridge inside a switch namespace.
    pub fn new(tag: &str, n: usize) -> (Star, Netns) {
        let sw = Netns::new(&format!("{tag}sw")).expect("netns sw");
        sw.ip(["link", "add", "br0", "type", "bridge"])
            .expect("bridge");
        sw.ip(["link", "set", "br0", "up"]).expect("bridge up");
        let hub = Netns::new(&format!("{tag}h")).expect("netns hub");
        veth(&hub, "eth0", Some("10.78.0.1/24"), &sw, "p0", None).expect("veth hub");
        sw.ip(["link", "set", "p0", "master", "br0"])
            .expect("enslave");
        let mut spokes = Vec::new();
        for i in 0..n {
            let s = Netns::new(&format!("{tag}s{i}")).expect("netns spoke");
            let addr = format!("{}/24", Self::spoke_addr(i));
            let port = format!("p{}", i + 1);
            veth(&s, "eth0", Some(&addr), &sw, &port, None).expect("veth spoke");
            sw.ip(["link", "set", &port, "master", "br0"])
                .expect("enslave");
            spokes.push(s);
        }
        (Star { hub, spokes }, sw)
    }
}
