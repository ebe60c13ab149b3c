//! Kernel dataplane over netlink: routes, links, addresses, veth, namespaces, sysctls, tunnels, nftables NAT.
