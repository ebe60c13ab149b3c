//! Fuzzes the selector parser: any text parses or fails with a column
//! inside the text; a parsed selector prints to text that parses back to
//! the same expression.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tabby_model::selector::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(e) => {
            let printed = e.to_string();
            // Values holding both quote characters cannot be printed; skip them.
            if let Ok(back) = parse(&printed) {
                assert_eq!(back, e, "{printed}");
            }
        }
        Err(err) => assert!(err.column >= 1 && err.column <= text.chars().count() + 1),
    }
});
