//! The tokio runtime around tabby-bgp: listeners, connectors, timers, TCP MD5, GTSM, per-peer tasks, control socket, the bgpd daemon.
