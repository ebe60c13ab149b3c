//! `bgp_blast`: the sender of the BGP ingest benchmark (`bench/bgp-ingest.sh`).
//!
//! Pre-encodes N IPv4 /24 prefixes, K per attribute set (one UPDATE per set,
//! distinct MED per set), with `tabby-bgp`'s encoder, connects to the
//! receiver, brings the session up with `tabby-bgp`'s FSM, then writes all
//! UPDATEs as fast as the socket takes them and keeps the session alive
//! until killed. Prints `ESTABLISHED <unix-ns>` and `SENT <unix-ns>` lines.
//!
//! ```text
//! bgp_blast --connect 10.1.0.1:179 --local-as 65002 --peer-as 65001 \
//!           --router-id 10.1.0.2 --next-hop 10.1.0.2 --prefixes 1000000 --per-update 10
//! ```
//!
//! The prefixes start at 32.0.0.0 (1M /24s need more room than 10/8); they
//! are only NLRI in a session between two namespaces, never destinations.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tabby_bgp::{
    AsPath, CodecContext, Direction, Event, Input, Ipv4Prefix, Origin, PathAttributes, Prefix,
    Session, SessionConfig, State, UpdateBuilder,
};

struct Args {
    connect: SocketAddr,
    local_as: u32,
    peer_as: u32,
    router_id: Ipv4Addr,
    next_hop: Ipv4Addr,
    prefixes: u32,
    per_update: u32,
}

fn parse_args() -> Result<Args, String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| -> Result<String, String> {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .cloned()
            .ok_or_else(|| format!("missing {name}"))
    };
    let num = |name: &str, default: u32| -> Result<u32, String> {
        match get(name) {
            Ok(v) => v.parse().map_err(|_| format!("{name}: not a number")),
            Err(_) => Ok(default),
        }
    };
    Ok(Args {
        connect: get("--connect")?
            .parse()
            .map_err(|_| "--connect: want ADDR:PORT")?,
        local_as: num("--local-as", 65002)?,
        peer_as: num("--peer-as", 65001)?,
        router_id: get("--router-id")?
            .parse()
            .map_err(|_| "--router-id: want an IPv4 address")?,
        next_hop: get("--next-hop")?
            .parse()
            .map_err(|_| "--next-hop: want an IPv4 address")?,
        prefixes: num("--prefixes", 1_000_000)?,
        per_update: num("--per-update", 10)?.max(1),
    })
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

fn encode(a: &Args, codec: CodecContext) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let base = u32::from(Ipv4Addr::new(32, 0, 0, 0));
    let mut i = 0;
    let mut set = 0u32;
    while i < a.prefixes {
        let attrs = Arc::new(PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::from_sequence([a.local_as])),
            next_hop: Some(a.next_hop),
            med: Some(set),
            ..PathAttributes::default()
        });
        let mut b = UpdateBuilder::new(codec);
        for _ in 0..a.per_update.min(a.prefixes - i) {
            let addr = Ipv4Addr::from(base + (i << 8));
            let p = Ipv4Prefix::new(addr, 24).map_err(|e| e.to_string())?;
            b.announce(&attrs, Prefix::V4(p));
            i += 1;
        }
        for m in b.build().map_err(|e| e.to_string())? {
            out.extend_from_slice(&m);
        }
        set += 1;
    }
    Ok(out)
}

fn run() -> Result<(), String> {
    let a = parse_args()?;
    let mut config = SessionConfig::new(a.local_as, a.router_id, a.peer_as);
    config.hold_time = 240;
    let t0 = Instant::now();
    let mut stream =
        TcpStream::connect(a.connect).map_err(|e| format!("connect {}: {e}", a.connect))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut s = Session::new(config);
    s.handle_input(Instant::now(), Input::ManualStart);
    while s.poll_event().is_some() {}
    s.handle_input(Instant::now(), Input::TcpConnected(Direction::Outgoing));
    let mut buf = vec![0u8; 65536];
    let mut payload: Option<Vec<u8>> = None;
    loop {
        while let Some(bytes) = s.poll_transmit() {
            stream
                .write_all(&bytes)
                .map_err(|e| format!("write: {e}"))?;
        }
        while let Some(ev) = s.poll_event() {
            match ev {
                Event::Established(n) => {
                    println!("ESTABLISHED {}", unix_ns());
                    let p = encode(&a, n.codec)?;
                    eprintln!(
                        "bgp_blast: {} prefixes in {} bytes of UPDATEs (encoded in {:?} after connect)",
                        a.prefixes,
                        p.len(),
                        t0.elapsed()
                    );
                    payload = Some(p);
                }
                Event::Down(r) => return Err(format!("session down: {r}")),
                _ => {}
            }
        }
        if let Some(p) = payload.take() {
            let start = unix_ns();
            println!("START {start}");
            stream.write_all(&p).map_err(|e| format!("write: {e}"))?;
            println!("SENT {}", unix_ns());
            std::io::stdout().flush().map_err(|e| e.to_string())?;
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err("receiver closed the connection".into()),
            Ok(n) => s.handle_input(Instant::now(), Input::Data(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        s.handle_timeout(Instant::now());
        if s.state() == State::Idle {
            return Err("session went idle".into());
        }
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bgp_blast: {e}");
        std::process::exit(1);
    }
}
