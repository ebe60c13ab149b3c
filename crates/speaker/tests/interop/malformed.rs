//! Malformed UPDATEs from a raw TCP sender (ExaBGP cannot craft most of
//! these): tabby applies RFC 7606 (treat-as-withdraw, attribute-discard),
//! reports the attribute, keeps the session and unrelated routes, and does
//! not crash. Also: a NOTIFICATION from the sender is reported with its code.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::net::{A, B, Pair};
use crate::tabby::Tabby;

const PEER_AS: u32 = 65002;

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    let len = (19 + body.len()) as u16;
    m.extend_from_slice(&len.to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

fn open() -> Vec<u8> {
    let asn = (PEER_AS as u16).to_be_bytes();
    let caps = [
        2, 6, 1, 4, 0, 1, 0, 1, // multiprotocol IPv4 unicast
        2, 6, 65, 4, 0, 0, asn[0], asn[1], // 4-octet AS
    ];
    let mut b = vec![4, asn[0], asn[1], 0, 90, 10, 77, 0, 2, caps.len() as u8];
    b.extend_from_slice(&caps);
    message(1, &b)
}

fn origin() -> Vec<u8> {
    vec![0x40, 1, 1, 0]
}

fn as_path() -> Vec<u8> {
    let a = PEER_AS.to_be_bytes();
    vec![0x40, 2, 6, 2, 1, a[0], a[1], a[2], a[3]]
}

fn next_hop() -> Vec<u8> {
    vec![0x40, 3, 4, 10, 77, 0, 2]
}

fn med(v: u8) -> Vec<u8> {
    vec![0x80, 4, 4, 0, 0, 0, v]
}

fn update(attrs: &[Vec<u8>], third_octet: u8) -> Vec<u8> {
    let attrs: Vec<u8> = attrs.concat();
    let mut b = vec![0, 0];
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(&attrs);
    b.extend_from_slice(&[24, 10, 50, third_octet]);
    message(2, &b)
}

/// A raw BGP speaker connected from inside namespace `ns`.
struct RawPeer {
    stream: TcpStream,
    /// Message types tabby sent us, in order.
    received: Arc<Mutex<Vec<u8>>>,
}

impl RawPeer {
    fn connect(ns: &str, to: &str) -> RawPeer {
        let to = format!("{to}:179");
        let stream = tabby_dataplane::Netns::named(ns)
            .expect("open netns")
            .run(move || TcpStream::connect(&to))
            .expect("enter netns")
            .expect("connect to tabby");
        let received = Arc::new(Mutex::new(Vec::new()));
        let mut reader = stream.try_clone().expect("clone");
        let seen = received.clone();
        std::thread::spawn(move || {
            let mut head = [0u8; 19];
            while reader.read_exact(&mut head).is_ok() {
                let len = u16::from_be_bytes([head[16], head[17]]) as usize;
                let mut body = vec![0u8; len.saturating_sub(19)];
                if reader.read_exact(&mut body).is_err() {
                    break;
                }
                seen.lock().expect("lock").push(head[18]);
            }
        });
        let mut p = RawPeer { stream, received };
        p.send(&open());
        p.send(&message(4, &[]));
        p
    }

    fn send(&mut self, m: &[u8]) {
        self.stream.write_all(m).expect("send to tabby");
    }

    fn notifications_from_tabby(&self) -> usize {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter(|t| **t == 3)
            .count()
    }
}

fn has(tabby: &Tabby, prefix: &str) -> Option<tabby_speaker::control::RouteStatus> {
    tabby.routes().into_iter().find(|r| r.prefix == prefix)
}

/// Sends a well-formed route, then each malformed UPDATE; checks tabby's view.
#[test]
fn malformed_updates_follow_rfc7606() {
    let net = Pair::new("mal");
    let tabby = Tabby::start(
        &net.a,
        &format!(
            "asNumber: 65001\nrouterId: {A}\nlisten: [\"{A}:179\"]\npeers:\n  - address: {B}\n    asNumber: {PEER_AS}\n    passive: true\n"
        ),
    );
    let mut peer = RawPeer::connect(net.b.name(), A);
    tabby.wait_established(B, Duration::from_secs(20));
    let t = Duration::from_secs(10);

    // Unrelated, well-formed routes.
    peer.send(&update(&[origin(), as_path(), next_hop(), med(7)], 1));
    peer.send(&update(&[origin(), as_path(), next_hop()], 2));
    tabby.wait_routes("the good routes", t, |r| {
        r.iter().any(|r| r.prefix == "10.50.1.0/24") && r.iter().any(|r| r.prefix == "10.50.2.0/24")
    });

    // 1. Bad attribute length (MED of 3 octets) re-announcing 10.50.2.0/24:
    //    treat-as-withdraw removes it.
    peer.send(&update(
        &[origin(), as_path(), next_hop(), vec![0x80, 4, 3, 0, 0, 1]],
        2,
    ));
    tabby.wait_routes("treat-as-withdraw of 10.50.2.0/24", t, |r| {
        !r.iter().any(|r| r.prefix == "10.50.2.0/24")
    });
    let n = tabby.neighbor(B).expect("neighbour");
    let err = n.last_error.clone().unwrap_or_default();
    assert!(
        err.contains("treat-as-withdraw") && err.contains("MULTI_EXIT_DISC"),
        "{err}"
    );

    // 2. Missing mandatory attribute (no ORIGIN): the route is not used.
    peer.send(&update(&[as_path(), next_hop()], 3));
    // 3. Bad AS_PATH segment type (7).
    let a = PEER_AS.to_be_bytes();
    peer.send(&update(
        &[
            origin(),
            vec![0x40, 2, 6, 7, 1, a[0], a[1], a[2], a[3]],
            next_hop(),
        ],
        4,
    ));
    // 4. Duplicate attribute (MED twice): all but the first are discarded.
    peer.send(&update(
        &[origin(), as_path(), next_hop(), med(11), med(99)],
        5,
    ));
    let routes = tabby.wait_routes("the duplicate-MED route", t, |r| {
        r.iter().any(|r| r.prefix == "10.50.5.0/24")
    });
    let dup = routes
        .iter()
        .find(|r| r.prefix == "10.50.5.0/24")
        .expect("route");
    assert_eq!(dup.med, Some(11), "the first MED is kept: {dup:?}");
    assert!(
        has(&tabby, "10.50.3.0/24").is_none(),
        "route without ORIGIN was used"
    );
    assert!(
        has(&tabby, "10.50.4.0/24").is_none(),
        "route with a bad AS_PATH segment was used"
    );
    let log = tabby.log();
    assert!(
        log.contains("AS_PATH"),
        "the AS_PATH error is logged with the attribute:\n{log}"
    );
    assert!(
        log.contains("ORIGIN"),
        "the missing ORIGIN is logged:\n{log}"
    );

    // The session survived and the unrelated route is still there.
    let n = tabby.neighbor(B).expect("neighbour");
    assert_eq!(n.state, "Established", "{n:?}");
    assert_eq!(
        peer.notifications_from_tabby(),
        0,
        "tabby reset the session"
    );
    assert_eq!(has(&tabby, "10.50.1.0/24").and_then(|r| r.med), Some(7));

    // A NOTIFICATION from the peer (Cease / Administrative Shutdown with an
    // RFC 8203 message) is reported with its code.
    let text = b"maintenance";
    let mut body = vec![6, 2, text.len() as u8];
    body.extend_from_slice(text);
    peer.send(&message(3, &body));
    let mut last = None;
    let ok = tabby_testbed::wait_until(t, "the NOTIFICATION reported", || {
        last = tabby.neighbor(B).and_then(|n| n.last_error);
        last.as_deref()
            .is_some_and(|e| e.contains("received NOTIFICATION 6/2") && e.contains("maintenance"))
    });
    assert!(ok.is_ok(), "{last:?}");
    assert!(
        tabby.routes().is_empty(),
        "the peer's routes outlived its session"
    );
}
