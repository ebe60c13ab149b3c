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
