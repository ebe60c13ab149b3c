//! Fuzzes manifest reading: any bytes as a YAML/JSON manifest must give
//! resources or document errors, never a panic; accepted resources must
//! print to YAML that reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tabby_model::document::{parse_manifest, to_yaml};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(entries) = parse_manifest("fuzz.yaml", text) {
        let resources: Vec<_> = entries.into_iter().map(|e| e.resource).collect();
        let yaml = to_yaml(&resources);
        let back: Vec<_> = parse_manifest("round-trip.yaml", &yaml)
            .expect("printed resources read back")
            .into_iter()
            .map(|e| e.resource)
            .collect();
        assert_eq!(resources, back);
    }
});
