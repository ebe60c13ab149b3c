//! Lab topologies: a YAML topology built on one machine from namespaces, with real routers, and verified.
