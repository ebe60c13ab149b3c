//! CNI specification versions: which ones tabby speaks, how a configuration
//! names them (`cniVersion`, and the 1.1 `cniVersions` list), and the
//! differences between their result formats that the rest of the crate asks
//! about.

use std::fmt;
use std::str::FromStr;

/// A version of the CNI specification this plugin implements.
///
/// 0.1.0 and 0.2.0 used a different result shape (`ip4`/`ip6` objects) that
/// no runtime in use still asks for; they are refused with error code 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CniVersion {
    /// 0.3.0: rich result type, plugin chaining.
    V0_3_0,
    /// 0.3.1: as 0.3.0 (typo fixes).
    V0_3_1,
    /// 0.4.0: adds CHECK and `prevResult` on DEL.
    V0_4_0,
    /// 1.0.0: drops `version` from `ips` entries.
    V1_0_0,
    /// 1.1.0: adds STATUS, GC, `cniVersions`, interface MTU, route attributes.
    V1_1_0,
}

impl CniVersion {
    /// Every version this plugin supports, oldest first (the VERSION reply).
    pub const SUPPORTED: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The newest version this plugin supports.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// The version as the specification writes it (`"1.0.0"`).
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// True if `ips` entries carry a `"version": "4"|"6"` field (before 1.0).
    pub fn ips_have_version(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// True if the CHECK command exists (0.4.0 and later).
    pub fn has_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// True if STATUS and GC exist, and interfaces may carry `mtu` (1.1.0).
    pub fn has_status_gc(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `cniVersion` string that is not one of [`CniVersion::SUPPORTED`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported CNI version {0:?} (supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)")]
pub struct UnsupportedVersion(pub String);

impl FromStr for CniVersion {
    type Err = UnsupportedVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CniVersion::SUPPORTED
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnsupportedVersion(s.to_owned()))
    }
}

/// Picks the version to speak for a configuration that lists `cniVersions`
/// (spec 1.1): the highest one both sides support, if any.
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<CniVersion> {
    offered
        .into_iter()
        .filter_map(|s| s.parse::<CniVersion>().ok())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_version_and_refuses_others() {
        for v in CniVersion::SUPPORTED {
            assert_eq!(v.as_str().parse::<CniVersion>(), Ok(v));
        }
        for bad in ["0.1.0", "0.2.0", "1.2.0", "", "1.0", "v1.0.0"] {
            assert!(bad.parse::<CniVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn negotiation_takes_the_highest_common_version() {
        assert_eq!(
            negotiate(["1.0.0", "1.1.0", "9.9.9"]),
            Some(CniVersion::V1_1_0)
        );
        assert_eq!(negotiate(["0.2.0", "0.4.0"]), Some(CniVersion::V0_4_0));
        assert_eq!(negotiate(["0.2.0"]), None);
    }

    #[test]
    fn format_differences_follow_the_spec() {
        assert!(CniVersion::V0_4_0.ips_have_version());
        assert!(!CniVersion::V1_0_0.ips_have_version());
        assert!(!CniVersion::V0_3_1.has_check());
        assert!(CniVersion::V0_4_0.has_check());
        assert!(CniVersion::V1_1_0.has_status_gc());
        assert!(!CniVersion::V1_0_0.has_status_gc());
    }
}
