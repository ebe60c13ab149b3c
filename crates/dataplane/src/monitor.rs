//! Route change notifications: a socket subscribed to the kernel's IPv4 and
//! IPv6 route groups, so the agent notices at once when a route is added or
//! removed behind its back (an operator's `ip route del`, a link going down)
//! instead of waiting for its next reconcile. Events that were dropped
//! because the reader fell behind are reported as [`RouteEvent::Overrun`]:
//! the caller then reconciles from a fresh dump.

use std::os::fd::AsFd;
use std::time::Duration;

use netlink_packet_core::Parseable;
use netlink_packet_route::route::RouteMessage;
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

use crate::error::{Error, Result};
use crate::netlink::split;
use crate::route::{InstalledRoute, decode};

const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;

/// One change the kernel announced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteEvent {
    /// A route was added or replaced.
    Added(InstalledRoute),
    /// A route was removed.
    Removed(InstalledRoute),
    /// Notifications were lost (the reader was too slow): resynchronise
    /// from a dump.
    Overrun,
}

/// A socket receiving route change notifications in one namespace.
pub struct RouteMonitor {
    socket: Socket,
    rx: Vec<u8>,
}

impl std::fmt::Debug for RouteMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMonitor").finish_non_exhaustive()
    }
}

impl RouteMonitor {
    /// Subscribes, in the calling thread's namespace (see
    /// [`Netns::run`](crate::Netns::run) for another one).
    pub fn open() -> Result<RouteMonitor> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(Error::Socket)?;
        socket.bind_auto().map_err(Error::Socket)?;
        for group in [RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE] {
            socket.add_membership(group).map_err(Error::Socket)?;
        }
        use nix::sys::socket::{setsockopt, sockopt};
        let size: usize = 4 << 20;
        if setsockopt(&socket.as_fd(), sockopt::RcvBufForce, &size).is_err() {
            let _ = setsockopt(&socket.as_fd(), sockopt::RcvBuf, &size);
        }
        Ok(RouteMonitor {
            socket,
            rx: Vec::with_capacity(1 << 20),
        })
    }

    /// Waits up to `timeout` (forever if `None`) for notifications and
    /// returns those of one datagram; empty when the time ran out.
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<Vec<RouteEvent>> {
        use nix::sys::socket::{setsockopt, sockopt};
        use nix::sys::time::TimeVal;
        let tv = match timeout {
            // A zero timeval would mean "block forever": use 1 µs.
            Some(t) => TimeVal::new(
                i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
                i64::from(t.subsec_micros()).max(i64::from(t.is_zero())),
            ),
            None => TimeVal::new(0, 0),
        };
        setsockopt(&self.socket.as_fd(), sockopt::ReceiveTimeout, &tv)
            .map_err(|e| Error::Socket(e.into()))?;
        self.rx.clear();
        match self.socket.recv(&mut self.rx, 0) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                return Ok(vec![RouteEvent::Overrun]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Vec::new());
            }
            Err(e) => return Err(Error::Socket(e)),
        }
        let mut out = Vec::new();
        for m in split(&self.rx)? {
            if m.kind != RTM_NEWROUTE && m.kind != RTM_DELROUTE {
                continue;
            }
            let msg = RouteMessage::parse(m.payload)
                .map_err(|e| Error::Decode(format!("route notification: {e}")))?;
            if let Some(r) = decode(&msg) {
                out.push(if m.kind == RTM_NEWROUTE {
                    RouteEvent::Added(r)
                } else {
                    RouteEvent::Removed(r)
                });
            }
        }
        Ok(out)
    }
}
