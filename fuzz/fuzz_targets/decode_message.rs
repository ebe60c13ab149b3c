//! Fuzzes the message decoder with both 2- and 4-octet AS contexts, and
//! checks that whatever decodes re-encodes and decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tabby_bgp::{CodecContext, Message, decode_message, frame_len};

fuzz_target!(|data: &[u8]| {
    // First byte picks the context; the rest is a message body behind a
    // valid marker, so the fuzzer spends its time past the header.
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let ctx = CodecContext {
        four_octet_as: sel & 1 != 0,
        extended_message: sel & 2 != 0,
        ebgp: sel & 4 != 0,
    };
    let mut msg = vec![0xff; 16];
    let len = (19 + body.len()).min(u16::MAX as usize) as u16;
    msg.extend_from_slice(&len.to_be_bytes());
    msg.push(sel >> 5); // message type 0..=7
    msg.extend_from_slice(&body[..body.len().min(u16::MAX as usize - 19)]);
    let _ = frame_len(&msg, &ctx);
    if let Ok(m) = decode_message(&msg, &ctx) {
        if let Ok(bytes) = m.to_bytes(&ctx) {
            let again = decode_message(&bytes, &ctx).expect("re-encoded message decodes");
            match (&m, &again) {
                // Attribute issues (discarded attributes) do not survive a
                // round trip; everything else must.
                (Message::Update(a), Message::Update(b)) => {
                    if a.issues.is_empty() {
                        assert_eq!(a.nlri, b.nlri);
                        assert_eq!(a.withdrawn, b.withdrawn);
                        assert_eq!(a.attributes, b.attributes);
                    }
                }
                _ => assert_eq!(m, again),
            }
        }
    }
    // Raw input as a whole message, too.
    let _ = decode_message(data, &ctx);
});
