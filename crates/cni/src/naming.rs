//! Names derived from a container: the host-side veth name (`tby` + 11 hex
//! digits of a SHA-256, Calico's `cali` scheme with tabby's prefix) and the
//! IPAM handle.

use sha2::{Digest, Sha256};

use crate::env::PodIdentity;

/// Prefix of every host-side veth tabby creates.
pub const HOST_VETH_PREFIX: &str = "tby";

/// The host-side veth name for a container: `tby` followed by the first 11
/// hex digits of SHA-256 over the container id (and the pod's namespace and
/// name when the runtime passed them). 14 characters, within the kernel's
/// 15.
pub fn host_veth_name(container_id: &str, pod: Option<&PodIdentity>) -> String {
    let mut h = Sha256::new();
    if let Some(pod) = pod {
        h.update(pod.namespace.as_bytes());
        h.update(b".");
        h.update(pod.name.as_bytes());
        h.update(b".");
    }
    h.update(container_id.as_bytes());
    let digest = h.finalize();
    let mut name = String::with_capacity(14);
    name.push_str(HOST_VETH_PREFIX);
    name.push_str(&hex::encode(&digest[..6])[..11]);
    name
}

/// The MAC address of a pod's interface: locally administered, unicast,
/// from SHA-256 over the container (and pod) id and the interface name, so
/// the plugin knows it before the interface exists (and records it in the
/// WorkloadEndpoint while the kernel creates the veth). Only the host end
/// of the pod's own veth ever sees it.
pub fn pod_mac(container_id: &str, pod: Option<&PodIdentity>, ifname: &str) -> [u8; 6] {
    let mut h = Sha256::new();
    h.update(b"mac.");
    if let Some(pod) = pod {
        h.update(pod.namespace.as_bytes());
        h.update(b".");
        h.update(pod.name.as_bytes());
        h.update(b".");
    }
    h.update(container_id.as_bytes());
    h.update(b".");
    h.update(ifname.as_bytes());
    let d = h.finalize();
    [(d[0] & 0xfc) | 0x02, d[1], d[2], d[3], d[4], d[5]]
}

/// The IPAM handle of a container's addresses: `<network>.<containerID>`,
/// Calico's scheme (`k8s-pod-network.<id>` with the usual network name).
pub fn ipam_handle(network: &str, container_id: &str) -> String {
    format!("{network}.{container_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_name_is_stable_short_and_distinct() {
        let a = host_veth_name("abc", None);
        assert_eq!(a, host_veth_name("abc", None));
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("tby"));
        assert!(a[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, host_veth_name("abd", None));
        let pod = PodIdentity {
            namespace: "default".into(),
            name: "web".into(),
        };
        assert_ne!(a, host_veth_name("abc", Some(&pod)));
        // SHA-256("abc") starts ba7816bf8f01...
        assert_eq!(a, "tbyba7816bf8f0");
    }

    #[test]
    fn pod_mac_is_stable_unicast_and_local() {
        let m = pod_mac("abc", None, "eth0");
        assert_eq!(m, pod_mac("abc", None, "eth0"));
        assert_ne!(m, pod_mac("abc", None, "eth1"));
        assert_ne!(m, pod_mac("abd", None, "eth0"));
        assert_eq!(m[0] & 0x01, 0, "unicast");
        assert_eq!(m[0] & 0x02, 0x02, "locally administered");
    }

    #[test]
    fn handle_is_calicos() {
        assert_eq!(ipam_handle("k8s-pod-network", "c1"), "k8s-pod-network.c1");
    }
}
