//! One task per neighbour: it owns the neighbour's `tabby_bgp::Session`,
//! its TCP connection(s) and real timers, and moves bytes between them.
//!
//! The task connects when the FSM asks ([`Event::Connect`]), takes incoming
//! connections the listener hands it, resolves connection collisions with a
//! second `Session` until the peer's OPEN says which survives (RFC 4271
//! §6.8, decided by `tabby_bgp::collision_survivor`), wakes up at
//! `Session::poll_timeout`, and reports what the session says (state
//! changes, Established, UPDATEs, Down) to the RIB task. It makes no
//! protocol decision of its own.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tabby_bgp::capability::GracefulRestart;
use tabby_bgp::fsm::{DownReason, collision_survivor};
use tabby_bgp::{
    CodecContext, Direction, Event, Input, Message, Negotiated, Notification, Session,
    SessionConfig, State, Update,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::sockopt;

/// How a neighbour's sockets are set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// The neighbour's address and port.
    pub remote: SocketAddr,
    /// Local address to bind outgoing connections to.
    pub source: Option<IpAddr>,
    /// TCP MD5 key.
    pub password: Option<String>,
    /// TTL of packets sent (eBGP direct: 1, multihop: n, iBGP: 64).
    pub ttl: u8,
    /// GTSM: packets must arrive with TTL >= this (and are sent with 255).
    pub min_ttl: Option<u8>,
}

/// What the RIB task (or the listener) tells a peer task.
#[derive(Debug)]
pub enum PeerCommand {
    /// A connection from the neighbour arrived on a listener.
    Incoming(TcpStream),
    /// Encoded messages (UPDATEs) to send while Established.
    Send(Vec<Vec<u8>>),
    /// Close the session with this NOTIFICATION and end the task.
    Stop(Notification),
    /// Close the session with this NOTIFICATION now, and start over (BFD
    /// said the path is down: the session is not waited on until the hold
    /// timer expires).
    Reset(Notification),
    /// Ask the peer to send its routes again (after an import policy change).
    RouteRefresh,
    /// Close the connection without a NOTIFICATION and end the task: a
    /// graceful restart (RFC 4724 §4), so the neighbour keeps our routes.
    Abandon,
}

/// What a peer task reports to the RIB task.
#[derive(Debug)]
pub enum PeerReport {
    /// The FSM moved.
    State {
        /// The neighbour.
        peer: IpAddr,
        /// New state.
        state: State,
    },
    /// The session is Established.
    Up {
        /// The neighbour.
        peer: IpAddr,
        /// What was negotiated.
        negotiated: Box<Negotiated>,
        /// Our address on the connection (for NEXT_HOP self).
        local: SocketAddr,
    },
    /// An UPDATE arrived.
    Update {
        /// The neighbour.
        peer: IpAddr,
        /// The decoded UPDATE (with its RFC 7606 issues).
        update: Update,
    },
    /// The peer asked for our routes again.
    RouteRefresh {
        /// The neighbour.
        peer: IpAddr,
    },
    /// The session went down (its routes must go).
    Down {
        /// The neighbour.
        peer: IpAddr,
        /// Why, with the NOTIFICATION code when there was one.
        reason: String,
        /// The same, as the session reported it (graceful restart decides
        /// on it).
        cause: DownReason,
    },
    /// A connection-level problem that did not change the FSM (connect
    /// failure, refused collision).
    Error {
        /// The neighbour.
        peer: IpAddr,
        /// What happened.
        error: String,
    },
}

/// One TCP connection and the session running on it.
struct Conn {
    session: Session,
    reader: Option<OwnedReadHalf>,
    writer: Option<OwnedWriteHalf>,
    local: Option<SocketAddr>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(config: SessionConfig) -> Conn {
        Conn {
            session: Session::new(config),
            reader: None,
            writer: None,
            local: None,
            buf: vec![0; 64 * 1024],
        }
    }

    fn attach(&mut self, stream: TcpStream) {
        self.local = stream.local_addr().ok();
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        self.reader = Some(r);
        self.writer = Some(w);
    }

    fn detach(&mut self) {
        self.reader = None;
        self.writer = None;
        self.local = None;
    }

    /// Writes everything the session has queued; a write error is a TCP failure.
    async fn flush(&mut self) {
        while let Some(bytes) = self.session.poll_transmit() {
            let Some(w) = self.writer.as_mut() else {
                continue;
            };
            if w.write_all(&bytes).await.is_err() {
                self.detach();
                self.session.handle_input(Instant::now(), Input::TcpFailed);
            }
        }
    }
}

async fn read_some(reader: &mut Option<OwnedReadHalf>, buf: &mut [u8]) -> std::io::Result<usize> {
    match reader {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (x, None) | (None, x) => x,
    }
}

/// Opens a TCP connection with the neighbour's socket options.
async fn connect(t: &Transport, timeout: Duration) -> std::io::Result<TcpStream> {
    let v6 = t.remote.is_ipv6();
    let socket = if v6 {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    if let Some(pw) = &t.password {
        sockopt::set_md5_key(&socket, t.remote.ip(), Some(pw.as_bytes()))?;
    }
    match t.min_ttl {
        Some(min) => {
            sockopt::set_ttl(&socket, v6, 255)?;
            sockopt::set_min_ttl(&socket, v6, min)?;
        }
        None => sockopt::set_ttl(&socket, v6, t.ttl)?,
    }
    if let Some(src) = t.source {
        socket.bind(SocketAddr::new(src, 0))?;
    }
    tokio::time::timeout(timeout, socket.connect(t.remote))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Applies per-neighbour options to a connection the listener accepted.
pub fn prepare_incoming(stream: &TcpStream, t: &Transport) -> std::io::Result<()> {
    let v6 = t.remote.is_ipv6();
    match t.min_ttl {
        Some(min) => {
            sockopt::set_ttl(stream, v6, 255)?;
            sockopt::set_min_ttl(stream, v6, min)?;
        }
        None => sockopt::set_ttl(stream, v6, t.ttl)?,
    }
    Ok(())
}

fn describe_down(reason: &DownReason) -> String {
    reason.to_string()
}

/// Runs one neighbour until [`PeerCommand::Stop`] or the RIB task goes away.
pub async fn run(
    config: SessionConfig,
    transport: Transport,
    mut commands: mpsc::UnboundedReceiver<PeerCommand>,
    reports: mpsc::Sender<PeerReport>,
) {
    let peer = transport.remote.ip();
    let local_id = config.router_id;
    let connect_timeout = config.connect_retry.max(Duration::from_secs(1));
    let mut main = Conn::new(config.clone());
    let mut pending: Option<Conn> = None;
    let (conn_tx, mut conn_rx) = mpsc::channel::<(u64, std::io::Result<TcpStream>)>(2);
    let mut attempt: u64 = 0;
    main.session
        .handle_input(Instant::now(), Input::ManualStart);
    let mut stopping = false;
    // A restarted neighbour's connection, handed to the session once the
    // old session's teardown (RFC 4724 §4.2) has been acted on.
    let mut restarted: Option<TcpStream> = None;

    loop {
        // Drain what the sessions want written and what they report.
        main.flush().await;
        while let Some(ev) = main.session.poll_event() {
            match ev {
                Event::Connect => {
                    attempt += 1;
                    let (tx, t, id) = (conn_tx.clone(), transport.clone(), attempt);
                    tokio::spawn(async move {
                        let r = connect(&t, connect_timeout).await;
                        let _ = tx.send((id, r)).await;
                    });
                }
                Event::Disconnect => {
                    main.flush().await;
                    main.detach();
                }
                Event::StateChanged { to, .. } => {
                    let sent = reports.send(PeerReport::State { peer, state: to }).await;
                    if sent.is_err() {
                        return;
                    }
                }
                Event::Established(negotiated) => {
                    // The Restart State bit is for the first session after
                    // our restart only (RFC 4724 §4.1).
                    if let Some(gr) = main
                        .session
                        .config()
                        .graceful_restart
                        .clone()
                        .filter(|g| g.restarting)
                    {
                        main.session.set_graceful_restart(Some(GracefulRestart {
                            restarting: false,
                            ..gr
                        }));
                    }
                    let local = main.local.unwrap_or_else(|| SocketAddr::new(peer, 0));
                    let _ = reports
                        .send(PeerReport::Up {
                            peer,
                            negotiated,
                            local,
                        })
                        .await;
                }
                Event::Update(update) => {
                    let sent = reports.send(PeerReport::Update { peer, update }).await;
                    if sent.is_err() {
                        return;
                    }
                }
                Event::RouteRefresh(_) => {
                    let _ = reports.send(PeerReport::RouteRefresh { peer }).await;
                }
                Event::Down(cause) => {
                    let reason = describe_down(&cause);
                    tracing::info!(%peer, %reason, "session down");
                    let _ = reports
                        .send(PeerReport::Down {
                            peer,
                            reason,
                            cause,
                        })
                        .await;
                }
                _ => {}
            }
        }
        if stopping {
            return;
        }
        if let Some(stream) = restarted.take() {
            if main.session.accepts_connection() {
                attempt += 1; // an outgoing attempt in flight is superseded
                main.attach(stream);
                main.session
                    .handle_input(Instant::now(), Input::TcpConnected(Direction::Incoming));
            } else {
                refuse(stream, main.session.state()).await;
            }
            continue;
        }
        // Collision resolution once either connection has the peer's OPEN.
        if let Some(p) = pending.as_mut() {
            p.flush().await;
            while p.session.poll_event().is_some() {}
            let remote_id = main
                .session
                .peer_open()
                .or_else(|| p.session.peer_open())
                .map(|o| o.bgp_id);
            if p.reader.is_none() {
                pending = None;
            } else if let Some(remote_id) = remote_id {
                let cease = Notification::new(6, 7, Vec::new());
                if collision_survivor(local_id, remote_id) == Direction::Incoming {
                    tracing::info!(%peer, "connection collision: keeping the incoming connection");
                    main.session
                        .handle_input(Instant::now(), Input::ManualStop(Some(cease)));
                    main.flush().await;
                    if let Some(p) = pending.take() {
                        main = p;
                    }
                    attempt += 1; // ignore any outgoing attempt still running
                } else {
                    tracing::info!(%peer, "connection collision: keeping the outgoing connection");
                    p.session
                        .handle_input(Instant::now(), Input::ManualStop(Some(cease)));
                    p.flush().await;
                    pending = None;
                }
                continue;
            }
        }

        let timeout = earliest(
            main.session.poll_timeout(),
            pending.as_ref().and_then(|p| p.session.poll_timeout()),
        );
        let (pending_reader, pending_buf) = match pending.as_mut() {
            Some(p) => (&mut p.reader, &mut p.buf[..]),
            None => (&mut None, &mut [][..]),
        };
        tokio::select! {
            r = read_some(&mut main.reader, &mut main.buf) => {
                let now = Instant::now();
                match r {
                    Ok(n) if n > 0 => {
                        let data = &main.buf[..n];
                        main.session.handle_input(now, Input::Data(data));
                    }
                    _ => {
                        main.detach();
                        main.session.handle_input(now, Input::TcpFailed);
                    }
                }
            }
            r = read_some(pending_reader, pending_buf) => {
                if let Some(p) = pending.as_mut() {
                    match r {
                        Ok(n) if n > 0 => {
                            let data = &p.buf[..n];
                            p.session.handle_input(Instant::now(), Input::Data(data));
                        }
                        _ => pending = None,
                    }
                }
            }
            () = sleep_until(timeout) => {
                let now = Instant::now();
                main.session.handle_timeout(now);
                if let Some(p) = pending.as_mut() {
                    p.session.handle_timeout(now);
                }
            }
            Some((id, result)) = conn_rx.recv() => {
                let now = Instant::now();
                if id != attempt {
                    continue;
                }
                match result {
                    Ok(stream) if main.session.accepts_connection() => {
                        main.attach(stream);
                        main.session.handle_input(now, Input::TcpConnected(Direction::Outgoing));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = reports.send(PeerReport::Error { peer, error: format!("connect to {}: {e}", transport.remote) }).await;
                        main.session.handle_input(now, Input::TcpFailed);
                    }
                }
            }
            cmd = commands.recv() => {
                let now = Instant::now();
                match cmd {
                    None => {
                        main.session.handle_input(now, Input::ManualStop(None));
                        stopping = true;
                    }
                    Some(PeerCommand::Stop(n)) => {
                        main.session.handle_input(now, Input::ManualStop(Some(n)));
                        stopping = true;
                    }
                    Some(PeerCommand::Reset(n)) => {
                        main.session.handle_input(now, Input::ManualStop(Some(n)));
                        main.session.handle_input(now, Input::ManualStart);
                    }
                    Some(PeerCommand::Abandon) => {
                        // Dropping the sockets closes them with no NOTIFICATION.
                        main.detach();
                        drop(pending.take());
                        return;
                    }
                    Some(PeerCommand::RouteRefresh) => {
                        let families = main.session.negotiated().map(|n| n.families.clone()).unwrap_or_default();
                        for f in families {
                            main.session.send_route_refresh(now, f);
                        }
                    }
                    Some(PeerCommand::Send(msgs)) => {
                        for m in msgs {
                            main.session.send_raw(now, m);
                        }
                    }
                    Some(PeerCommand::Incoming(stream)) => {
                        if let Err(e) = prepare_incoming(&stream, &transport) {
                            tracing::warn!(%peer, "socket options on incoming connection: {e}");
                        }
                        if main.session.state() == State::Established
                            && main.session.accept_restarted_peer(now)
                        {
                            tracing::info!(%peer, "new connection while Established: the neighbour restarted (graceful restart), closing the old one");
                            restarted = Some(stream);
                        } else if main.session.accepts_connection() {
                            attempt += 1; // an outgoing attempt in flight is superseded
                            main.attach(stream);
                            main.session.handle_input(now, Input::TcpConnected(Direction::Incoming));
                        } else if matches!(main.session.state(), State::OpenSent | State::OpenConfirm)
                            && main.session.direction() == Some(Direction::Outgoing)
                            && pending.is_none()
                        {
                            let mut p = Conn::new(main.session.config().clone());
                            p.session.handle_input(now, Input::ManualStart);
                            while p.session.poll_event().is_some() {}
                            p.attach(stream);
                            p.session.handle_input(now, Input::TcpConnected(Direction::Incoming));
                            pending = Some(p);
                        } else {
                            refuse(stream, main.session.state()).await;
                            let _ = reports.send(PeerReport::Error { peer, error: format!("refused a connection in state {}", main.session.state()) }).await;
                        }
                    }
                }
            }
        }
    }
}

/// Refuses a connection with a Cease NOTIFICATION (Connection Rejected, or
/// Collision Resolution when a session is already up).
async fn refuse(mut stream: TcpStream, state: State) {
    let subcode = if state == State::Established { 7 } else { 5 };
    let msg = Message::Notification(Notification::new(6, subcode, Vec::new()));
    if let Ok(bytes) = msg.to_bytes(&CodecContext::default()) {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&bytes)).await;
    }
}
