//! CNI plugin (spec 1.0/1.1) and the tabby-ipam IPAM plugin.
