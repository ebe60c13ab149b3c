//! Codec properties: every valid packet round-trips; no input panics.

use proptest::prelude::*;
use tabby_bfd::{ControlPacket, Diagnostic, State, decode};

fn state() -> impl Strategy<Value = State> {
    (0u8..4).prop_map(State::from_bits)
}

prop_compose! {
    fn packet()(
        diag in 0u8..32,
        state in state(),
        poll in any::<bool>(),
        final_ in any::<bool>(),
        cpi in any::<bool>(),
        demand in any::<bool>(),
        detect_mult in 1u8..,
        my in 1u32..,
        your in any::<u32>(),
        tx in any::<u32>(),
        rx in any::<u32>(),
        echo in any::<u32>(),
    ) -> ControlPacket {
        // Init and Up must name the receiver.
        let your = if your == 0 && matches!(state, State::Init | State::Up) { 1 } else { your };
        ControlPacket {
            diagnostic: Diagnostic::from_bits(diag),
            state,
            poll,
            final_,
            control_plane_independent: cpi,
            demand,
            detect_mult,
            my_discriminator: my,
            your_discriminator: your,
            desired_min_tx: tx,
            required_min_rx: rx,
            required_min_echo_rx: echo,
        }
    }
}

proptest! {
    #[test]
    fn valid_packets_round_trip(p in packet()) {
        let bytes = p.encode();
        prop_assert_eq!(decode(&bytes), Ok(p));
        prop_assert_eq!(bytes.len(), 24);
    }

    #[test]
    fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(p) = decode(&bytes) {
            prop_assert_eq!(decode(&p.encode()), Ok(p));
        }
    }

    #[test]
    fn diagnostic_bits_round_trip(v in 0u8..32) {
        prop_assert_eq!(Diagnostic::from_bits(v).to_bits(), v);
    }
}
