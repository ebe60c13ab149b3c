//! The rtnetlink socket: one `NETLINK_ROUTE` socket bound to the network
//! namespace it was opened in, with the three exchanges the rest of the crate
//! builds on: a single request with its ack, a dump, and a pipelined batch
//! (many requests per `sendmsg`, only errors and one barrier acknowledged).
//!
//! Message bodies are encoded and decoded with `netlink-packet-route`; the
//! 16-byte netlink header and the error/ack framing are handled here so that
//! errors carry the kernel's extended-ack text and map to the exact request
//! (by sequence number) that caused them.

use std::os::fd::AsFd;

use netlink_packet_core::Emitable;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::{Error, KernelError, Result};

pub(crate) const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
pub(crate) const NLM_F_ACK: u16 = 0x4;
/// Asks the kernel to send the requester the notification of the change
/// (Linux 6.3 and later for `RTM_NEWLINK`; older kernels ignore it).
const NLM_F_ECHO: u16 = 0x8;
const NLM_F_DUMP_INTR: u16 = 0x10;
pub(crate) const NLM_F_REPLACE: u16 = 0x100;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Requests per `sendmsg` in a batch. Each batch chunk's error acks must fit
/// in the receive buffer even if every request in it fails.
const BATCH_CHUNK: usize = 1024;
/// Receive buffer asked for (forced, as root) so that error acks of a whole
/// chunk and large dumps are never dropped.
const RCVBUF: usize = 8 << 20;
/// Send buffer: a chunk is sent in one datagram, which must fit.
const SNDBUF: usize = 4 << 20;
const DUMP_RETRIES: usize = 5;

/// A netlink route socket in one network namespace.
///
/// Opened with [`Netlink::open`] (the caller's namespace) or
/// [`Netlink::open_in`](crate::Netns) (any namespace, entered on a thread
/// of its own). Every operation is a blocking exchange on this socket;
/// async callers run it on a blocking thread. Requests are answered in
/// order, so one `Netlink` is used by one thread at a time (`&mut self`).
pub struct Netlink {
    socket: Socket,
    seq: u32,
    rx: Vec<u8>,
    tx: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("seq", &self.seq).finish()
    }
}

/// One request of a batch: message type, flags and an encoded body.
pub(crate) struct Request<'a> {
    pub kind: u16,
    pub flags: u16,
    pub body: &'a dyn Emitable,
}

/// A decoded netlink message (header fields and payload) from the kernel.
pub(crate) struct Incoming<'a> {
    pub(crate) kind: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    pub(crate) payload: &'a [u8],
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Splits a datagram into netlink messages; stops at the first malformed one.
pub(crate) fn split(buf: &[u8]) -> Result<Vec<Incoming<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= NLMSG_HDRLEN {
        let len = u32_at(buf, at) as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return Err(Error::Decode(format!(
                "netlink message length {len} at offset {at} of a {}-byte datagram",
                buf.len()
            )));
        }
        out.push(Incoming {
            kind: u16_at(buf, at + 4),
            flags: u16_at(buf, at + 6),
            seq: u32_at(buf, at + 8),
            payload: &buf[at + NLMSG_HDRLEN..at + len],
        });
        at += align4(len);
    }
    Ok(out)
}

/// Decodes an `NLMSG_ERROR` payload: `Ok(())` for an ack, the error otherwise.
fn decode_error(flags: u16, payload: &[u8]) -> Result<Result<(), KernelError>> {
    if payload.len() < 4 {
        return Err(Error::Decode("truncated NLMSG_ERROR".into()));
    }
    let code = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
    if code == 0 {
        return Ok(Ok(()));
    }
    let mut err = KernelError::from_errno(code.saturating_neg());
    if flags & NLM_F_ACK_TLVS != 0 && payload.len() >= 4 + NLMSG_HDRLEN {
        // The original request follows: its header only when capped,
        // the whole message otherwise. TLVs come after it.
        let orig_len = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            align4(u32_at(payload, 4) as usize)
        };
        if let Some(tlvs) = payload.get(4 + orig_len..) {
            err.message = extack_message(tlvs);
        }
    }
    Ok(Err(err))
}

/// Decodes an `NLMSG_DONE` payload: the dump's error, if it failed.
fn decode_done(flags: u16, payload: &[u8]) -> Option<KernelError> {
    if payload.len() < 4 {
        return None;
    }
    let code = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
    if code >= 0 {
        return None;
    }
    let mut err = KernelError::from_errno(code.saturating_neg());
    if flags & NLM_F_ACK_TLVS != 0 {
        err.message = extack_message(&payload[4..]);
    }
    Some(err)
}

/// The `NLMSGERR_ATTR_MSG` text among extended-ack TLVs.
fn extack_message(tlvs: &[u8]) -> Option<String> {
    let mut at = 0;
    while at + 4 <= tlvs.len() {
        let len = u16_at(tlvs, at) as usize;
        let kind = u16_at(tlvs, at + 2) & 0x3fff;
        if len < 4 || at + len > tlvs.len() {
            break;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[at + 4..at + len];
            let text = text.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        at += align4(len);
    }
    None
}

impl Netlink {
    /// Opens a route socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(Error::Socket)?;
        socket.bind_auto().map_err(Error::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(Error::Socket)?;
        socket.set_ext_ack(true).map_err(Error::Socket)?;
        socket.set_cap_ack(true).map_err(Error::Socket)?;
        // Kernel-side filtering of dumps by table and protocol.
        socket
            .set_netlink_get_strict_chk(true)
            .map_err(Error::Socket)?;
        // Larger buffers: forced when we may (root), else as large as allowed.
        use nix::sys::socket::{setsockopt, sockopt};
        if setsockopt(&socket.as_fd(), sockopt::RcvBufForce, &RCVBUF).is_err() {
            let _ = setsockopt(&socket.as_fd(), sockopt::RcvBuf, &RCVBUF);
        }
        if setsockopt(&socket.as_fd(), sockopt::SndBufForce, &SNDBUF).is_err() {
            let _ = setsockopt(&socket.as_fd(), sockopt::SndBuf, &SNDBUF);
        }
        Ok(Netlink {
            socket,
            seq: 0,
            rx: Vec::with_capacity(1 << 20),
            tx: Vec::with_capacity(128 << 10),
        })
    }

    /// Sets the socket's receive buffer (bytes; forced when running as
    /// root). The default, 8 MiB, holds the error answers of a whole batch
    /// chunk; a smaller one makes the kernel drop answers under load, which
    /// [`Netlink::apply_routes`] then reports as unknown outcomes.
    pub fn set_receive_buffer(&mut self, bytes: usize) -> Result<()> {
        use nix::sys::socket::{setsockopt, sockopt};
        setsockopt(&self.socket.as_fd(), sockopt::RcvBufForce, &bytes)
            .or_else(|_| setsockopt(&self.socket.as_fd(), sockopt::RcvBuf, &bytes))
            .map_err(|e| Error::Socket(e.into()))
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn push(tx: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, body: &dyn Emitable) {
        let body_len = body.buffer_len();
        let len = NLMSG_HDRLEN + body_len;
        let start = tx.len();
        tx.resize(start + align4(len), 0);
        let h = &mut tx[start..];
        h[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
        h[4..6].copy_from_slice(&kind.to_ne_bytes());
        h[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        h[8..12].copy_from_slice(&seq.to_ne_bytes());
        h[12..16].copy_from_slice(&0u32.to_ne_bytes());
        body.emit(&mut h[NLMSG_HDRLEN..len]);
    }

    fn send_tx(&mut self) -> Result<()> {
        let n = self.socket.send(&self.tx, 0).map_err(Error::Socket)?;
        if n != self.tx.len() {
            return Err(Error::Socket(std::io::Error::other(format!(
                "short netlink send: {n} of {} bytes",
                self.tx.len()
            ))));
        }
        Ok(())
    }

    fn recv(&mut self) -> std::io::Result<()> {
        self.rx.clear();
        self.socket.recv(&mut self.rx, 0).map(|_| ())
    }

    /// Sends one request with `NLM_F_ACK` and waits for its answer.
    pub(crate) fn request(
        &mut self,
        kind: u16,
        flags: u16,
        body: &dyn Emitable,
    ) -> Result<Result<(), KernelError>> {
        Ok(self.exchange(kind, flags, body, None)?.map(|_| ()))
    }

    /// Like [`Netlink::request`], with `NLM_F_ECHO`: also returns the last
    /// message of type `echo` the kernel sent back for this request before
    /// its answer (the new object as the kernel reports it), if the kernel
    /// echoes such requests. Saves the look-up round trip after a create.
    pub(crate) fn request_echo(
        &mut self,
        kind: u16,
        flags: u16,
        body: &dyn Emitable,
        echo: u16,
    ) -> Result<Result<Option<Vec<u8>>, KernelError>> {
        self.exchange(kind, flags | NLM_F_ECHO, body, Some(echo))
    }

    /// Sends one request with `NLM_F_ACK`, keeps the last message of type
    /// `echo` (if any) that precedes the answer, and returns it with the
    /// answer.
    fn exchange(
        &mut self,
        kind: u16,
        flags: u16,
        body: &dyn Emitable,
        echo: Option<u16>,
    ) -> Result<Result<Option<Vec<u8>>, KernelError>> {
        let seq = self.next_seq();
        self.tx.clear();
        Self::push(&mut self.tx, kind, flags | NLM_F_ACK, seq, body);
        self.send_tx()?;
        let mut echoed = None;
        loop {
            self.recv().map_err(Error::Socket)?;
            for m in split(&self.rx)? {
                if m.seq != seq {
                    continue;
                }
                if m.kind == NLMSG_ERROR {
                    return Ok(decode_error(m.flags, m.payload)?.map(|()| echoed));
                }
                if Some(m.kind) == echo {
                    echoed = Some(m.payload.to_vec());
                }
            }
        }
    }

    /// Sends a non-dump `RTM_GET*` request and returns the one message the
    /// kernel answers with (its payload), or the kernel's error.
    pub(crate) fn get(
        &mut self,
        kind: u16,
        body: &dyn Emitable,
    ) -> Result<Result<Vec<u8>, KernelError>> {
        let seq = self.next_seq();
        self.tx.clear();
        Self::push(&mut self.tx, kind, 0, seq, body);
        self.send_tx()?;
        loop {
            self.recv().map_err(Error::Socket)?;
            for m in split(&self.rx)? {
                if m.seq != seq {
                    continue;
                }
                if m.kind == NLMSG_ERROR {
                    return Ok(match decode_error(m.flags, m.payload)? {
                        Ok(()) => Err(KernelError {
                            errno: libc::ENODATA,
                            message: Some("the kernel acknowledged but sent no answer".into()),
                        }),
                        Err(e) => Err(e),
                    });
                }
                return Ok(Ok(m.payload.to_vec()));
            }
        }
    }

    /// Sends one request and fails with [`Error::Kernel`] naming `operation`.
    pub(crate) fn request_ok(
        &mut self,
        kind: u16,
        flags: u16,
        body: &dyn Emitable,
        operation: impl FnOnce() -> String,
    ) -> Result<()> {
        self.request(kind, flags, body)?
            .map_err(|source| Error::Kernel {
                operation: operation(),
                source,
            })
    }

    /// Runs a dump and hands each message payload to `each`. A dump the
    /// kernel marks as interrupted (the table changed under it) is retried.
    pub(crate) fn dump(
        &mut self,
        kind: u16,
        body: &dyn Emitable,
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        for _ in 0..DUMP_RETRIES {
            payloads.clear();
            let seq = self.next_seq();
            self.tx.clear();
            Self::push(&mut self.tx, kind, NLM_F_DUMP, seq, body);
            self.send_tx()?;
            let mut interrupted = false;
            'dump: loop {
                self.recv().map_err(Error::Socket)?;
                for m in split(&self.rx)? {
                    if m.seq != seq {
                        continue;
                    }
                    if m.flags & NLM_F_DUMP_INTR != 0 {
                        interrupted = true;
                    }
                    match m.kind {
                        NLMSG_DONE => {
                            // A dump that fails once started reports its
                            // error here, not in an NLMSG_ERROR.
                            if let Some(source) = decode_done(m.flags, m.payload) {
                                return Err(Error::Kernel {
                                    operation: format!("dump (message type {kind})"),
                                    source,
                                });
                            }
                            break 'dump;
                        }
                        NLMSG_ERROR => {
                            if let Err(source) = decode_error(m.flags, m.payload)? {
                                return Err(Error::Kernel {
                                    operation: format!("dump (message type {kind})"),
                                    source,
                                });
                            }
                            break 'dump;
                        }
                        _ if m.flags & NLM_F_MULTI != 0 || m.kind >= 16 => {
                            payloads.push(m.payload.to_vec());
                        }
                        _ => {}
                    }
                }
            }
            if !interrupted {
                break;
            }
            tracing::debug!(
                kind,
                "netlink dump interrupted by a concurrent change; retrying"
            );
        }
        for p in &payloads {
            each(p)?;
        }
        Ok(())
    }

    /// Sends `requests` pipelined, [`BATCH_CHUNK`] per datagram, each chunk
    /// closed by an acknowledged `NLMSG_NOOP` barrier. Successful requests
    /// cost no ack; each failure comes back with its sequence number and is
    /// returned with the index of the request in `requests`.
    ///
    /// If the receive buffer ever overflowed (`ENOBUFS`), the outcome of the
    /// requests of that chunk whose error could have been dropped is unknown:
    /// they are reported with errno `ENOBUFS`.
    pub(crate) fn batch(&mut self, requests: &[Request<'_>]) -> Result<Vec<(usize, KernelError)>> {
        let mut failures = Vec::new();
        for (chunk_no, chunk) in requests.chunks(BATCH_CHUNK).enumerate() {
            let base_index = chunk_no * BATCH_CHUNK;
            self.tx.clear();
            let first_seq = self.seq.wrapping_add(1);
            for r in chunk {
                let seq = self.next_seq();
                Self::push(&mut self.tx, r.kind, r.flags & !NLM_F_ACK, seq, r.body);
            }
            let barrier = self.next_seq();
            Self::push(&mut self.tx, NLMSG_NOOP, NLM_F_ACK, barrier, &Empty);
            self.send_tx()?;
            let mut seen = vec![false; chunk.len()];
            let mut overrun = false;
            let mut wait_for = barrier;
            // After an overrun the receive queue is drained without blocking
            // before a fresh barrier is sent: a barrier sent into a full
            // queue would be dropped too.
            let mut draining = false;
            loop {
                let flags = if draining { libc::MSG_DONTWAIT } else { 0 };
                self.rx.clear();
                match self.socket.recv(&mut self.rx, flags) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        overrun = true;
                        draining = true;
                        continue;
                    }
                    Err(e) if draining && e.kind() == std::io::ErrorKind::WouldBlock => {
                        draining = false;
                        wait_for = self.next_seq();
                        self.tx.clear();
                        Self::push(&mut self.tx, NLMSG_NOOP, NLM_F_ACK, wait_for, &Empty);
                        self.send_tx()?;
                        continue;
                    }
                    Err(e) => return Err(Error::Socket(e)),
                }
                let mut done = false;
                for m in split(&self.rx)? {
                    if m.kind != NLMSG_ERROR {
                        continue;
                    }
                    if m.seq == wait_for && !draining {
                        done = true;
                        continue;
                    }
                    let offset = m.seq.wrapping_sub(first_seq) as usize;
                    if offset < chunk.len() {
                        if let Err(e) = decode_error(m.flags, m.payload)? {
                            seen[offset] = true;
                            failures.push((base_index + offset, e));
                        }
                    }
                }
                if done {
                    break;
                }
            }
            if overrun {
                for (offset, seen) in seen.iter().enumerate() {
                    if !seen {
                        failures.push((
                            base_index + offset,
                            KernelError {
                                errno: libc::ENOBUFS,
                                message: Some(
                                    "outcome unknown: the kernel's answer was dropped".into(),
                                ),
                            },
                        ));
                    }
                }
            }
        }
        failures.sort_by_key(|(i, _)| *i);
        Ok(failures)
    }
}

/// An empty message body (for `NLMSG_NOOP`).
struct Empty;

impl Emitable for Empty {
    fn buffer_len(&self) -> usize {
        0
    }
    fn emit(&self, _buffer: &mut [u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<Netlink>();
    }

    #[test]
    fn error_payload_with_extack_message() {
        // code -22, capped original header, then NLMSGERR_ATTR_MSG "bad gw\0".
        let mut p = Vec::new();
        p.extend_from_slice(&(-22i32).to_ne_bytes());
        p.extend_from_slice(&[0u8; 16]);
        let text = b"bad gw\0";
        p.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        p.extend_from_slice(&1u16.to_ne_bytes());
        p.extend_from_slice(text);
        p.resize(align4(p.len()), 0);
        let e = decode_error(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p)
            .expect("decodes")
            .expect_err("an error");
        assert_eq!(e.errno, 22);
        assert_eq!(e.message.as_deref(), Some("bad gw"));
        assert!(
            decode_error(0, &0i32.to_ne_bytes())
                .expect("decodes")
                .is_ok()
        );
        assert!(
            decode_error(0, &[1, 2]).is_err(),
            "truncated payload rejected"
        );
    }

    #[test]
    fn done_payload_carries_dump_errors() {
        assert!(decode_done(0, &0i32.to_ne_bytes()).is_none());
        assert!(decode_done(0, &[]).is_none());
        let mut p = (-22i32).to_ne_bytes().to_vec();
        let text = b"Invalid header\0";
        p.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        p.extend_from_slice(&1u16.to_ne_bytes());
        p.extend_from_slice(text);
        let e = decode_done(NLM_F_ACK_TLVS, &p).expect("an error");
        assert_eq!(
            (e.errno, e.message.as_deref()),
            (22, Some("Invalid header"))
        );
    }

    #[test]
    fn split_rejects_bad_lengths() {
        let mut b = vec![0u8; 20];
        b[0..4].copy_from_slice(&40u32.to_ne_bytes());
        assert!(split(&b).is_err());
        b[0..4].copy_from_slice(&20u32.to_ne_bytes());
        assert_eq!(split(&b).expect("one message").len(), 1);
    }
}
