//! The UDP driver for single-hop BFD (RFC 5881) on tokio.
//!
//! Owns the sockets, the clock and the randomness that [`crate::session`]
//! does not: one task runs every session, receives Control packets on UDP
//! port 3784 (IPv4 and IPv6), sends each session's packets from a source
//! port of its own in 49152-65535, and reports state changes on a channel.
//!
//! RFC 5881 rules enforced here:
//! - packets are sent with TTL / Hop Limit 255, and a received packet whose
//!   TTL / Hop Limit is not 255 is discarded (GTSM, §5: tabby has no
//!   authentication, so this check always applies);
//! - a packet is matched to a session by Your Discriminator, or by its
//!   source address when Your Discriminator is 0 (§3); a packet whose source
//!   address is not the session's peer is discarded too, since single-hop
//!   sessions have one peer address.
//!
//! Sessions are added and removed while the driver runs ([`Bfd::add_session`],
//! [`Bfd::remove_session`]); a removed session first tells its peer it is
//! AdminDown, so the peer goes Down at once instead of timing out.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::packet::{Diagnostic, State, decode};
use crate::session::{ConfigError, Event, Session, SessionConfig};

/// UDP destination port of single-hop BFD Control packets (RFC 5881 §4).
pub const CONTROL_PORT: u16 = 3784;

/// The TTL / Hop Limit sent and required on receipt (RFC 5881 §5).
pub const TTL: u8 = 255;

/// First source port a session may use (RFC 5881 §4).
pub const SOURCE_PORT_MIN: u16 = 49152;

/// One session as the driver is asked to run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionSpec {
    /// The peer's address on the shared link.
    pub peer: IpAddr,
    /// The local address to send from (`None`: chosen by the kernel's
    /// routing).
    pub local: Option<IpAddr>,
    /// Timer parameters.
    pub config: SessionConfig,
}

/// A state change of one session, as the driver reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerEvent {
    /// The session's peer.
    pub peer: IpAddr,
    /// The state before.
    pub from: State,
    /// The state now.
    pub to: State,
    /// Why (bfd.LocalDiag).
    pub diagnostic: Diagnostic,
    /// The peer's state as it last told us: AdminDown means the peer took
    /// the session down on purpose, which a client protocol should not
    /// treat as a path failure (RFC 5882 §3.2).
    pub peer_state: State,
}

/// A snapshot of one session, for status output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionStatus {
    /// The session's peer.
    pub peer: IpAddr,
    /// bfd.SessionState.
    pub state: State,
    /// bfd.LocalDiag.
    pub diagnostic: Diagnostic,
    /// bfd.LocalDiscr.
    pub local_discriminator: u32,
    /// bfd.RemoteDiscr.
    pub remote_discriminator: u32,
    /// The detection time now in force, once the peer has been heard.
    pub detection_time: Option<Duration>,
}

/// What the driver could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// A socket could not be made, configured or bound.
    #[error("BFD socket {what}: {source}")]
    Socket {
        /// Which socket operation, with its address.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// The session's configuration is invalid.
    #[error("BFD session with {peer}: {source}")]
    Config {
        /// The peer.
        peer: IpAddr,
        /// What is wrong.
        source: ConfigError,
    },
    /// A session with this peer exists already.
    #[error("BFD session with {0} exists already")]
    Duplicate(IpAddr),
    /// No session with this peer exists.
    #[error("no BFD session with {0}")]
    NoSuchSession(IpAddr),
    /// The driver task has stopped.
    #[error("the BFD driver has stopped")]
    Stopped,
}

fn socket_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> DriverError {
    let what = what.into();
    move |source| DriverError::Socket { what, source }
}

enum Command {
    Add(SessionSpec, oneshot::Sender<Result<(), DriverError>>),
    Remove(IpAddr, oneshot::Sender<Result<(), DriverError>>),
    Status(oneshot::Sender<Vec<SessionStatus>>),
}

/// A handle on the running driver. Dropping every handle stops it, after
/// telling every peer AdminDown.
#[derive(Clone, Debug)]
pub struct Bfd {
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Bfd {
    /// Binds UDP port 3784 on IPv4 and IPv6 and starts the driver task on
    /// the current tokio runtime. State changes arrive on the returned
    /// receiver.
    ///
    /// IPv6 is optional: if the host has no IPv6 the driver runs IPv4 only.
    pub fn start() -> Result<(Bfd, mpsc::UnboundedReceiver<PeerEvent>), DriverError> {
        let v4 = Some(listen(IpAddr::V4(Ipv4Addr::UNSPECIFIED))?);
        let v6 = match listen(IpAddr::V6(Ipv6Addr::UNSPECIFIED)) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("BFD runs without IPv6: {e}");
                None
            }
        };
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events, event_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            v4,
            v6,
            sessions: HashMap::new(),
            by_peer: HashMap::new(),
            events,
        };
        tokio::spawn(driver.run(command_rx));
        Ok((Bfd { commands }, event_rx))
    }

    /// Starts a session with `spec.peer`.
    pub async fn add_session(&self, spec: SessionSpec) -> Result<(), DriverError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Add(spec, tx))
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?
    }

    /// Stops the session with `peer` (its peer is told AdminDown first).
    pub async fn remove_session(&self, peer: IpAddr) -> Result<(), DriverError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Remove(peer, tx))
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?
    }

    /// The state of every session.
    pub async fn sessions(&self) -> Result<Vec<SessionStatus>, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Status(tx))
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }
}

/// The receive socket of one address family on port 3784, asking the
/// kernel for each packet's TTL / Hop Limit.
fn listen(any: IpAddr) -> Result<UdpSocket, DriverError> {
    let addr = SocketAddr::new(any, CONTROL_PORT);
    let what = format!("listen on {addr}");
    let domain = Domain::for_address(addr);
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .map_err(socket_error(what.clone()))?;
    // No SO_REUSEADDR: a second BFD instance in the same network namespace
    // must fail here rather than silently share (and split) the port.
    match any {
        IpAddr::V4(_) => setsockopt(&socket, sockopt::Ipv4RecvTtl, &true),
        IpAddr::V6(_) => {
            socket
                .set_only_v6(true)
                .map_err(socket_error(what.clone()))?;
            setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true)
        }
    }
    .map_err(|e| DriverError::Socket {
        what: what.clone(),
        source: e.into(),
    })?;
    socket
        .set_nonblocking(true)
        .map_err(socket_error(what.clone()))?;
    socket
        .bind(&addr.into())
        .map_err(socket_error(what.clone()))?;
    UdpSocket::from_std(socket.into()).map_err(socket_error(what))
}

/// The send socket of one session: TTL 255, a source port in
/// 49152-65535 (tried from a point picked by `start`), IP precedence
/// "network control" (CS6) on IPv4.
fn sender(local: IpAddr, start: u32) -> Result<UdpSocket, DriverError> {
    let what = format!("send from {local}");
    let domain = Domain::for_address(SocketAddr::new(local, 0));
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .map_err(socket_error(what.clone()))?;
    match local {
        IpAddr::V4(_) => {
            socket
                .set_ttl_v4(u32::from(TTL))
                .map_err(socket_error(what.clone()))?;
            socket
                .set_tos_v4(0xc0)
                .map_err(socket_error(what.clone()))?;
        }
        IpAddr::V6(_) => {
            socket
                .set_only_v6(true)
                .map_err(socket_error(what.clone()))?;
            socket
                .set_unicast_hops_v6(u32::from(TTL))
                .map_err(socket_error(what.clone()))?;
        }
    }
    socket
        .set_nonblocking(true)
        .map_err(socket_error(what.clone()))?;
    let span = u32::from(u16::MAX - SOURCE_PORT_MIN) + 1;
    let mut last = None;
    for i in 0..span {
        let port = SOURCE_PORT_MIN + ((start.wrapping_add(i)) % span) as u16;
        match socket.bind(&SocketAddr::new(local, port).into()) {
            Ok(()) => {
                return UdpSocket::from_std(socket.into()).map_err(socket_error(what));
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(socket_error(what)(e)),
        }
    }
    Err(socket_error(format!("{what}: no free source port"))(
        last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)),
    ))
}

/// One datagram as received: payload length, source, TTL / Hop Limit.
struct Received {
    len: usize,
    source: Option<IpAddr>,
    ttl: Option<i32>,
}

async fn receive(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Received> {
    socket
        .async_io(Interest::READABLE, || {
            let mut iov = [io::IoSliceMut::new(buf)];
            let mut cmsg = nix::cmsg_space!(libc::c_int);
            let msg = recvmsg::<SockaddrStorage>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )
            .map_err(io::Error::from)?;
            let mut ttl = None;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                            ttl = Some(t)
                        }
                        _ => {}
                    }
                }
            }
            let source = msg.address.and_then(|a| {
                if let Some(v4) = a.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    a.as_sockaddr_in6().map(|v6| {
                        let ip = v6.ip();
                        ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4)
                    })
                }
            });
            Ok(Received {
                len: msg.bytes,
                source,
                ttl,
            })
        })
        .await
}

async fn receive_on(socket: &Option<UdpSocket>, buf: &mut [u8]) -> io::Result<Received> {
    match socket {
        Some(s) => receive(s, buf).await,
        None => std::future::pending().await,
    }
}

struct Entry {
    peer: IpAddr,
    session: Session,
    socket: UdpSocket,
}

struct Driver {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    /// Sessions by local discriminator.
    sessions: HashMap<u32, Entry>,
    /// Local discriminator by peer address.
    by_peer: HashMap<IpAddr, u32>,
    events: mpsc::UnboundedSender<PeerEvent>,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf4 = [0u8; 512];
        let mut buf6 = [0u8; 512];
        loop {
            let deadline = self
                .sessions
                .values()
                .filter_map(|e| e.session.poll_timeout())
                .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => {
                        self.shut_down().await;
                        return;
                    }
                },
                r = receive_on(&self.v4, &mut buf4) => self.datagram(r, &buf4).await,
                r = receive_on(&self.v6, &mut buf6) => self.datagram(r, &buf6).await,
                () = sleep => self.timeouts().await,
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Add(spec, reply) => {
                let _ = reply.send(self.add(spec).await);
            }
            Command::Remove(peer, reply) => {
                let _ = reply.send(self.remove(peer).await);
            }
            Command::Status(reply) => {
                let _ = reply.send(
                    self.sessions
                        .values()
                        .map(|e| SessionStatus {
                            peer: e.peer,
                            state: e.session.state(),
                            diagnostic: e.session.local_diagnostic(),
                            local_discriminator: e.session.local_discriminator(),
                            remote_discriminator: e.session.remote_discriminator(),
                            detection_time: e.session.detection_time(),
                        })
                        .collect(),
                );
            }
        }
    }

    async fn add(&mut self, spec: SessionSpec) -> Result<(), DriverError> {
        if self.by_peer.contains_key(&spec.peer) {
            return Err(DriverError::Duplicate(spec.peer));
        }
        // A random, unused, nonzero discriminator (RFC 5880 §6.3 asks for
        // unique and suggests random).
        let discriminator = loop {
            if let Some(d) = NonZeroU32::new(rand::random::<u32>())
                && !self.sessions.contains_key(&d.get())
            {
                break d;
            }
        };
        let local = spec.local.unwrap_or(match spec.peer {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        let socket = sender(local, rand::random::<u32>())?;
        let session = Session::new(
            Instant::now().into_std(),
            spec.config,
            discriminator,
            rand::random::<u64>(),
        )
        .map_err(|source| DriverError::Config {
            peer: spec.peer,
            source,
        })?;
        tracing::info!(peer = %spec.peer, discriminator, "BFD session added");
        self.by_peer.insert(spec.peer, discriminator.get());
        self.sessions.insert(
            discriminator.get(),
            Entry {
                peer: spec.peer,
                session,
                socket,
            },
        );
        self.flush(discriminator.get()).await;
        Ok(())
    }

    async fn remove(&mut self, peer: IpAddr) -> Result<(), DriverError> {
        let discriminator = self
            .by_peer
            .remove(&peer)
            .ok_or(DriverError::NoSuchSession(peer))?;
        if let Some(e) = self.sessions.get_mut(&discriminator) {
            e.session.admin_down(Instant::now().into_std());
        }
        self.flush(discriminator).await;
        self.sessions.remove(&discriminator);
        tracing::info!(%peer, "BFD session removed");
        Ok(())
    }

    /// Every handle is gone: tell each peer AdminDown (so it goes Down
    /// without counting it as a path failure) and stop.
    async fn shut_down(&mut self) {
        let now = Instant::now().into_std();
        let all: Vec<u32> = self.sessions.keys().copied().collect();
        for d in all {
            if let Some(e) = self.sessions.get_mut(&d) {
                e.session.admin_down(now);
            }
            self.flush(d).await;
        }
    }

    async fn datagram(&mut self, received: io::Result<Received>, buf: &[u8]) {
        let r = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("BFD receive: {e}");
                return;
            }
        };
        let Some(source) = r.source else {
            return;
        };
        if r.ttl != Some(i32::from(TTL)) {
            tracing::debug!(%source, ttl = ?r.ttl, "BFD packet discarded: TTL is not 255");
            return;
        }
        let packet = match decode(&buf[..r.len.min(buf.len())]) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%source, "BFD packet discarded: {e}");
                return;
            }
        };
        let discriminator = if packet.your_discriminator != 0 {
            packet.your_discriminator
        } else {
            match self.by_peer.get(&source) {
                Some(d) => *d,
                None => {
                    tracing::debug!(%source, "BFD packet discarded: no session with this peer");
                    return;
                }
            }
        };
        let Some(entry) = self.sessions.get_mut(&discriminator) else {
            tracing::debug!(%source, discriminator, "BFD packet discarded: no such session");
            return;
        };
        if entry.peer != source {
            tracing::debug!(%source, peer = %entry.peer, "BFD packet discarded: not from the session's peer");
            return;
        }
        if let Err(e) = entry
            .session
            .handle_packet(Instant::now().into_std(), &packet)
        {
            tracing::debug!(%source, "BFD packet discarded: {e}");
            return;
        }
        self.flush(discriminator).await;
    }

    async fn timeouts(&mut self) {
        let now = Instant::now().into_std();
        let due: Vec<u32> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.session.poll_timeout().is_some_and(|t| t <= now))
            .map(|(d, _)| *d)
            .collect();
        for d in due {
            if let Some(e) = self.sessions.get_mut(&d) {
                e.session.handle_timeout(now);
            }
            self.flush(d).await;
        }
    }

    /// Sends what the session has to send and reports its events.
    async fn flush(&mut self, discriminator: u32) {
        let Some(e) = self.sessions.get_mut(&discriminator) else {
            return;
        };
        let to = SocketAddr::new(e.peer, CONTROL_PORT);
        while let Some(p) = e.session.poll_transmit(Instant::now().into_std()) {
            if let Err(err) = e.socket.send_to(&p.encode(), to).await {
                // A down link or a missing route: the detection timer
                // takes care of the session, nothing else to do here.
                tracing::debug!(peer = %e.peer, "BFD send: {err}");
            }
        }
        while let Some(ev) = e.session.poll_event() {
            let Event::StateChanged {
                from,
                to,
                diagnostic,
            } = ev;
            tracing::info!(peer = %e.peer, %from, %to, %diagnostic, "BFD session state");
            let _ = self.events.send(PeerEvent {
                peer: e.peer,
                from,
                to,
                diagnostic,
                peer_state: e.session.remote_state(),
            });
        }
    }
}
