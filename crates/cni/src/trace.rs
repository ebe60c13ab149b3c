//! Phase timing of one plugin invocation, for finding where an ADD spends
//! its time: with `TABBY_CNI_TRACE=1` in the environment, each call to
//! [`mark`] records when (microseconds since [`start`]) the phase of that
//! name ended, and [`report`] prints them on stderr (stdout is the
//! runtime's) in the order they ended. Phases run on several threads at
//! once (IPAM beside the veth creation), so end times, not durations, are
//! what add up. Without the variable a mark costs one relaxed atomic load.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

/// The environment variable that turns tracing on.
pub const TRACE_ENV: &str = "TABBY_CNI_TRACE";

/// 0: not decided yet, 1: off, 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);

/// The phases recorded so far: name and end time in microseconds.
type Phases = Vec<(&'static str, u128)>;

/// The start and the phases recorded so far.
static PHASES: Mutex<Option<(Instant, Phases)>> = Mutex::new(None);

fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let on = std::env::var_os(TRACE_ENV).is_some_and(|v| !v.is_empty() && v != "0");
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

/// Starts the clock (the first mark's phase is measured from here).
pub fn start() {
    if !enabled() {
        return;
    }
    if let Ok(mut p) = PHASES.lock() {
        *p = Some((Instant::now(), Vec::new()));
    }
}

/// Records that the phase called `name` ended now.
pub fn mark(name: &'static str) {
    if !enabled() {
        return;
    }
    let now = Instant::now();
    if let Ok(mut p) = PHASES.lock() {
        let (start, phases) = p.get_or_insert_with(|| (now, Vec::new()));
        phases.push((name, now.duration_since(*start).as_micros()));
    }
}

/// Prints the recorded phases on stderr, one line: `name@end` in
/// microseconds since the start.
pub fn report() {
    if !enabled() {
        return;
    }
    let Ok(p) = PHASES.lock() else { return };
    let Some((_, phases)) = p.as_ref() else {
        return;
    };
    let parts: Vec<String> = phases.iter().map(|(n, us)| format!("{n}@{us}")).collect();
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    eprintln!(
        "tabby cni trace (us since start): {} now={epoch}",
        parts.join(" ")
    );
}
