//! The control-socket protocol between `tabby bgpd` and `tabby bgp ...`.
//!
//! A Unix stream socket; the client writes one JSON request on one line, the
//! daemon answers with one JSON response on one line and closes. This module
//! owns the message types and the blocking client; the serving side lives in
//! the daemon. Field names are camelCase, stable for scripts (`-o json`).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "camelCase")]
#[non_exhaustive]
pub enum Request {
    /// Every configured neighbour and its session.
    Neighbors,
    /// Loc-RIB paths, all or those for one prefix (exact or longest match).
    Routes {
        /// `10.0.0.0/24` (exact) or `10.0.0.1` (longest match); all when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
    },
    /// Counters.
    Summary,
    /// Re-read the config file (like SIGHUP).
    Reload,
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum Response {
    /// Answer to [`Request::Neighbors`].
    Neighbors(Vec<NeighborStatus>),
    /// Answer to [`Request::Routes`].
    Routes(Vec<RouteStatus>),
    /// Answer to [`Request::Summary`].
    Summary(Summary),
    /// Answer to [`Request::Reload`].
    Reloaded(ReloadReport),
    /// The request failed.
    Error(String),
}

/// One neighbour, as `tabby bgp neighbors` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NeighborStatus {
    /// Remote address.
    pub address: IpAddr,
    /// Remote port.
    pub port: u16,
    /// Remote AS (configured).
    pub as_number: u32,
    /// `iBGP` or `eBGP`.
    pub session_type: String,
    /// FSM state (`Idle`, `Connect`, `Active`, `OpenSent`, `OpenConfirm`, `Established`).
    pub state: String,
    /// Seconds since the session reached Established (or since it left it).
    pub uptime_secs: Option<u64>,
    /// The neighbour's BGP identifier once known.
    pub router_id: Option<Ipv4Addr>,
    /// Negotiated hold time.
    pub hold_time: Option<u16>,
    /// The last error: a NOTIFICATION sent or received (with its code), a
    /// socket error, an RFC 7606 action.
    pub last_error: Option<String>,
    /// Prefixes in the Adj-RIB-In.
    pub prefixes_received: u64,
    /// Prefixes the import policy accepted.
    pub prefixes_accepted: u64,
    /// Prefixes in the Adj-RIB-Out.
    pub prefixes_advertised: u64,
    /// Whether the neighbour is a route-reflector client.
    pub route_reflector_client: bool,
    /// The configured description, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Graceful restart (RFC 4724) with this neighbour: `negotiated`,
    /// `restarting` (its routes kept stale), or absent when not negotiated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<String>,
    /// Routes from this neighbour kept stale through its restart.
    #[serde(default)]
    pub stale_routes: u64,
}

/// One path in the Loc-RIB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// The prefix.
    pub prefix: String,
    /// NEXT_HOP (or the MP_REACH next hop).
    pub next_hop: Option<IpAddr>,
    /// AS path, with sets written `{1 2}`.
    pub as_path: String,
    /// `IGP`, `EGP` or `Incomplete`.
    pub origin: String,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// RFC 1997 communities (`a:b`).
    pub communities: Vec<String>,
    /// RFC 8092 large communities (`a:b:c`).
    pub large_communities: Vec<String>,
    /// ORIGINATOR_ID.
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST.
    pub cluster_list: Vec<Ipv4Addr>,
    /// The best path for its prefix.
    pub best: bool,
    /// Its next hop is not reachable through the kernel routing table, so
    /// it cannot be best (seed 003).
    #[serde(default)]
    pub unresolved: bool,
    /// Part of the multipath (ECMP) set.
    pub multipath: bool,
    /// The neighbour it came from; `None` for locally originated routes.
    pub peer: Option<IpAddr>,
    /// Kept through the neighbour's graceful restart, not yet refreshed.
    #[serde(default)]
    pub stale: bool,
}

/// Counters, `tabby bgp summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Local AS.
    pub as_number: u32,
    /// Local BGP identifier.
    pub router_id: Ipv4Addr,
    /// Prefixes in the Loc-RIB.
    pub loc_rib_prefixes: u64,
    /// Paths in the Loc-RIB (a prefix may have several).
    pub loc_rib_paths: u64,
    /// Configured neighbours.
    pub peers: u64,
    /// Neighbours in Established.
    pub established: u64,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Routes programmed into the kernel (when `fib: true`).
    pub fib_routes: Option<u64>,
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// Neighbours started.
    pub added: Vec<IpAddr>,
    /// Neighbours stopped (sessions closed with a Cease).
    pub removed: Vec<IpAddr>,
    /// Neighbours whose session settings changed (session restarted).
    pub restarted: Vec<IpAddr>,
    /// Neighbours whose routing settings (policy, next hop mode, RR client)
    /// changed: applied without dropping the session.
    pub updated: Vec<IpAddr>,
    /// Neighbours left untouched.
    pub unchanged: Vec<IpAddr>,
}

/// Why a control request failed on the client side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket could not be reached (daemon not running, wrong path).
    #[error("cannot connect to {path}: {source} (is `tabby bgpd` running? see --socket)")]
    Connect {
        /// The socket path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reading or writing failed mid-way.
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The daemon sent something that is not a response.
    #[error("bad response from daemon: {0}")]
    BadResponse(#[from] serde_json::Error),
    /// The daemon answered with an error.
    #[error("daemon: {0}")]
    Daemon(String),
}

/// Sends one request and waits (up to `timeout`) for its response.
pub fn request(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer)?;
    match serde_json::from_str(&answer)? {
        Response::Error(e) => Err(ClientError::Daemon(e)),
        r => Ok(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        assert_eq!(
            serde_json::to_string(&Request::Neighbors).expect("json"),
            r#"{"command":"neighbors"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Routes {
                prefix: Some("10.0.0.0/24".into())
            })
            .expect("json"),
            r#"{"command":"routes","prefix":"10.0.0.0/24"}"#
        );
        let r: Request = serde_json::from_str(r#"{"command":"routes"}"#).expect("parse");
        assert_eq!(r, Request::Routes { prefix: None });
        assert!(serde_json::from_str::<Request>(r#"{"command":"explode"}"#).is_err());
    }

    #[test]
    fn responses_round_trip() {
        let r = Response::Summary(Summary {
            as_number: 64512,
            router_id: Ipv4Addr::new(1, 2, 3, 4),
            loc_rib_prefixes: 3,
            loc_rib_paths: 4,
            peers: 2,
            established: 1,
            uptime_secs: 5,
            fib_routes: None,
        });
        let text = serde_json::to_string(&r).expect("json");
        assert!(text.contains("\"locRibPrefixes\":3"), "{text}");
        assert_eq!(serde_json::from_str::<Response>(&text).expect("parse"), r);
    }

    #[test]
    fn client_reports_a_missing_socket_clearly() {
        let e = request(
            Path::new("/nonexistent/tabby.sock"),
            &Request::Summary,
            Duration::from_secs(1),
        )
        .expect_err("no daemon");
        assert!(e.to_string().contains("/nonexistent/tabby.sock"), "{e}");
    }
}
