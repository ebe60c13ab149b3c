//! Two tabby speakers that both connect actively (no `passive`): when one
//! is killed and restarted, the survivor is in its IdleHold back-off and
//! must accept the restarted speaker's connection (passive establishment)
//! instead of refusing it, or the two refuse each other in turn forever.

use std::time::Duration;

use crate::net::{A, B, Pair};
use crate::tabby::Tabby;

/// A generous bound: the fix makes this take a second or two; the bug
/// made it never happen.
const T: Duration = Duration::from_secs(90);

fn config(me: &str, peer: &str, originate: &str) -> String {
    format!(
        "asNumber: 65001\nrouterId: {me}\nlisten: [\"{me}:179\"]\noriginate: [{originate}]\npeers:\n  - {{address: {peer}, asNumber: 65001}}\n"
    )
}

/// Kills `dead` by PID (SIGKILL: no NOTIFICATION, the survivor sees the
/// TCP connection drop and starts its IdleHold back-off), restarts it, and
/// waits for both ends to be Established again.
fn kill_and_restart(
    survivor: &Tabby,
    dead: Tabby,
    ns: &tabby_testbed::Netns,
    cfg: &str,
    survivor_addr: &str,
    dead_addr: &str,
) -> Tabby {
    dead.signal("KILL");
    drop(dead);
    let gone = tabby_testbed::wait_until(T, "the survivor notices", || {
        survivor
            .neighbor(dead_addr)
            .is_some_and(|n| n.state != "Established")
    });
    assert!(gone.is_ok(), "{:?}", survivor.neighbor(dead_addr));
    let back = Tabby::start(ns, cfg);
    survivor.wait_established(dead_addr, T);
    back.wait_established(survivor_addr, T);
    back
}

#[test]
fn two_active_speakers_come_back_after_one_is_killed() {
    let pair = Pair::new("act");
    let (cfg_a, cfg_b) = (config(A, B, "10.62.1.0/24"), config(B, A, "10.62.2.0/24"));
    let mut a = Tabby::start(&pair.a, &cfg_a);
    let mut b = Tabby::start(&pair.b, &cfg_b);
    a.wait_established(B, T);
    b.wait_established(A, T);
    b = kill_and_restart(&a, b, &pair.b, &cfg_b, A, B);
    b.wait_routes("a's prefix learned again", T, |rs| {
        rs.iter().any(|r| r.prefix == "10.62.1.0/24" && r.best)
    });
    a = kill_and_restart(&b, a, &pair.a, &cfg_a, B, A);
    a.wait_routes("b's prefix learned again", T, |rs| {
        rs.iter().any(|r| r.prefix == "10.62.2.0/24" && r.best)
    });
    // Neither side is left refusing: both still up a moment later.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        a.neighbor(B).map(|n| n.state),
        Some("Established".to_owned())
    );
    assert_eq!(
        b.neighbor(A).map(|n| n.state),
        Some("Established".to_owned())
    );
}
