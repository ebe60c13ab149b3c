//! Fuzzes the BFD Control packet decoder, checks that whatever decodes
//! re-encodes to the same packet, and feeds it to a session.
#![no_main]

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use tabby_bfd::{Session, SessionConfig, decode};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = decode(data) else {
        return;
    };
    assert_eq!(decode(&p.encode()), Ok(p));
    let now = Instant::now();
    let Some(local) = NonZeroU32::new(p.your_discriminator.max(1)) else {
        return;
    };
    let Ok(mut s) = Session::new(now, SessionConfig::default(), local, 0) else {
        return;
    };
    let _ = s.handle_packet(now, &p);
    while s.poll_transmit(now).is_some() {}
    s.handle_timeout(now + Duration::from_secs(3600));
    while s.poll_transmit(now).is_some() {}
});
