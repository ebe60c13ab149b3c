//! Fuzzes a session in OpenSent fed an arbitrary byte stream in arbitrary
//! chunks: the FSM must never panic, whatever the peer sends.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tabby_bgp::fsm::{Direction, Input, Session, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::new(65001, Ipv4Addr::new(10, 0, 0, 1), 65002));
    s.handle_input(now, Input::ManualStart);
    s.handle_input(now, Input::TcpConnected(Direction::Outgoing));
    // A valid OPEN and KEEPALIVE first so the stream reaches Established.
    let open: [u8; 29] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0, 29, 1, 4, 0xfd, 0xea, 0, 90, 10, 0, 0, 2, 0,
    ];
    let keepalive: [u8; 19] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0, 19, 4,
    ];
    s.handle_input(now, Input::Data(&open));
    s.handle_input(now, Input::Data(&keepalive));
    let mut rest = data;
    let mut t = now;
    while let Some((&n, tail)) = rest.split_first() {
        let take = usize::from(n).min(tail.len());
        s.handle_input(t, Input::Data(&tail[..take]));
        rest = &tail[take..];
        t += Duration::from_secs(1);
        s.handle_timeout(t);
        while s.poll_transmit().is_some() {}
        while s.poll_event().is_some() {}
    }
});
