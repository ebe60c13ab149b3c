//! The UDP driver between two tabby instances in two namespaces joined by a
//! veth pair, over IPv4 and IPv6 (root required).

use std::net::{IpAddr, UdpSocket};
use std::time::Duration;

use tabby_bfd::{ControlPacket, Diagnostic, SessionConfig, SessionSpec, State};
use tabby_testbed::{Netns, veth};

use crate::net::{NsBfd, in_ns};

const A4: &str = "10.81.0.1";
const B4: &str = "10.81.0.2";
const A6: &str = "fd00:81::1";
const B6: &str = "fd00:81::2";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// 300 ms x 3: fast, with room for a loaded CI machine.
fn timers() -> SessionConfig {
    SessionConfig::default()
}

fn spec(peer: &str, local: &str) -> SessionSpec {
    SessionSpec {
        peer: ip(peer),
        local: Some(ip(local)),
        config: timers(),
    }
}

fn pair() -> (Netns, Netns) {
    let a = Netns::new("bfda").expect("netns a");
    let b = Netns::new("bfdb").expect("netns b");
    veth(
        &a,
        "va",
        Some("10.81.0.1/24"),
        &b,
        "vb",
        Some("10.81.0.2/24"),
    )
    .expect("veth");
    a.ip(["addr", "add", "fd00:81::1/64", "dev", "va", "nodad"])
        .expect("v6 a");
    b.ip(["addr", "add", "fd00:81::2/64", "dev", "vb", "nodad"])
        .expect("v6 b");
    (a, b)
}

fn is_up(peer: &str) -> impl Fn(&tabby_bfd::PeerEvent) -> bool {
    let peer = ip(peer);
    move |e| e.peer == peer && e.to == State::Up
}

fn is_down(peer: &str) -> impl Fn(&tabby_bfd::PeerEvent) -> bool {
    let peer = ip(peer);
    move |e| e.peer == peer && e.to == State::Down
}

#[test]
fn two_tabby_drivers_come_up_detect_failure_and_recover_v4_and_v6() {
    let (ns_a, ns_b) = pair();
    let mut a = NsBfd::start(&ns_a);
    let mut b = NsBfd::start(&ns_b);
    a.add(spec(B4, A4));
    a.add(spec(B6, A6));
    b.add(spec(A4, B4));
    b.add(spec(A6, B6));
    let t = Duration::from_secs(10);
    a.wait_event(t, "A: IPv4 session Up", is_up(B4));
    a.wait_event(t, "A: IPv6 session Up", is_up(B6));
    b.wait_event(t, "B: IPv4 session Up", is_up(A4));
    b.wait_event(t, "B: IPv6 session Up", is_up(A6));
    let status = a.sessions();
    assert_eq!(status.len(), 2);
    assert!(
        status
            .iter()
            .all(|s| s.state == State::Up && s.remote_discriminator != 0)
    );

    // Removing B's IPv4 session tells A (AdminDown): A goes Down with
    // "neighbor signaled session down" rather than timing out.
    a.drain();
    b.remove(ip(A4));
    let (e, _) = a.wait_event(t, "A: IPv4 Down after B removed it", is_down(B4));
    assert_eq!(e.diagnostic, Diagnostic::NeighborSignaledDown);
    b.add(spec(A4, B4));
    a.wait_event(t, "A: IPv4 Up again", is_up(B4));
    b.wait_event(t, "B: IPv4 Up again", is_up(A4));

    // Cut the link: both sessions on A go Down because the detection time
    // (3 × 300 ms) passed without packets.
    std::thread::sleep(Duration::from_millis(500));
    a.drain();
    ns_b.ip(["link", "set", "vb", "down"]).expect("link down");
    let (e4, took4) = a.wait_event(t, "A: IPv4 Down after link cut", is_down(B4));
    let (e6, took6) = a.wait_event(t, "A: IPv6 Down after link cut", is_down(B6));
    assert_eq!(e4.diagnostic, Diagnostic::ControlDetectionTimeExpired);
    assert_eq!(e6.diagnostic, Diagnostic::ControlDetectionTimeExpired);
    println!(
        "link cut -> Down: IPv4 {took4:?}, IPv6 {took6:?} (detection time 900 ms from the last packet received)"
    );

    ns_b.ip(["link", "set", "vb", "up"]).expect("link up");
    // The kernel flushed B's IPv6 address with the link; put it back.
    ns_b.ip(["addr", "replace", "fd00:81::2/64", "dev", "vb", "nodad"])
        .expect("v6 b again");
    a.wait_event(t, "A: IPv4 Up after link back", is_up(B4));
    a.wait_event(t, "A: IPv6 Up after link back", is_up(B6));
}

#[test]
fn a_stopping_driver_tells_its_peers_admin_down() {
    let (ns_a, ns_b) = pair();
    let mut a = NsBfd::start(&ns_a);
    let mut b = NsBfd::start(&ns_b);
    a.add(spec(B4, A4));
    b.add(spec(A4, B4));
    let t = Duration::from_secs(10);
    a.wait_event(t, "A: Up", is_up(B4));
    b.drop_handle();
    let (e, _) = a.wait_event(t, "A: Down after B's driver stopped", is_down(B4));
    // Told, not timed out, and marked as the peer's own decision.
    assert_eq!(e.diagnostic, Diagnostic::NeighborSignaledDown);
    assert_eq!(e.peer_state, State::AdminDown);
}

fn raw_down_packet(my: u32) -> [u8; 24] {
    ControlPacket {
        diagnostic: Diagnostic::None,
        state: State::Down,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: my,
        your_discriminator: 0,
        desired_min_tx: 1_000_000,
        required_min_rx: 1_000_000,
        required_min_echo_rx: 0,
    }
    .encode()
}

#[test]
fn packets_without_ttl_255_are_discarded() {
    let (ns_a, ns_b) = pair();
    let mut a = NsBfd::start(&ns_a);
    a.add(spec(B4, A4));
    // From B's namespace, a valid Down packet with TTL 64: A must ignore it
    // (it would otherwise go Init).
    in_ns(&ns_b, || {
        let s = UdpSocket::bind("10.81.0.2:49999").expect("bind");
        s.set_ttl(64).expect("ttl");
        for _ in 0..5 {
            s.send_to(&raw_down_packet(42), "10.81.0.1:3784")
                .expect("send");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(a.events.try_recv().is_err(), "TTL 64 packet was accepted");
    assert_eq!(a.sessions()[0].state, State::Down);
    // The same packet with TTL 255 is accepted: A goes Init.
    in_ns(&ns_b, || {
        let s = UdpSocket::bind("10.81.0.2:49999").expect("bind");
        s.set_ttl(255).expect("ttl");
        s.send_to(&raw_down_packet(42), "10.81.0.1:3784")
            .expect("send");
    });
    let (e, _) = a.wait_event(Duration::from_secs(5), "A: Init", |e| e.to == State::Init);
    assert_eq!(e.peer, ip(B4));
    assert_eq!(a.sessions()[0].remote_discriminator, 42);
}
