//! The CNI error result: the well-known error codes of the specification and
//! the `{"cniVersion", "code", "msg", "details"}` object a plugin prints on
//! standard output when it fails.
//!
//! Every failure in this crate ends as a [`CniError`]: the code tells the
//! runtime what kind of failure it is (retry, give up, clean up or not), the
//! message is short, and `details` names the field, environment variable or
//! kernel object at fault.

use std::fmt;

use serde::Serialize;

use crate::version::CniVersion;

/// A CNI error code: the well-known codes of the specification, and tabby's
/// own (100 and above).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 1: the configuration asks for a CNI version this plugin does not speak.
    IncompatibleVersion,
    /// 2: a field of the network configuration is not supported; the details
    /// name the key and its value.
    UnsupportedField,
    /// 3: the container is unknown or does not exist (its network namespace
    /// is gone); the runtime need not clean up.
    UnknownContainer,
    /// 4: a required environment variable is missing or invalid; the details
    /// name it.
    InvalidEnvironment,
    /// 5: an I/O failure (reading stdin, the datastore file, netlink).
    Io,
    /// 6: the input could not be decoded (stdin is not JSON).
    Decode,
    /// 7: the network configuration is invalid; the details name the field.
    InvalidConfig,
    /// 11: a transient condition (datastore busy, no free block yet): retry.
    TryAgainLater,
    /// 50: STATUS: the plugin cannot serve ADD requests now.
    PluginNotAvailable,
    /// 51: STATUS: the plugin cannot serve ADD, and existing containers may
    /// have limited connectivity.
    PluginNotAvailableLimitedConnectivity,
    /// 100: CHECK found the container's networking different from the
    /// previous result (an interface, address or route is missing or wrong).
    CheckFailed,
    /// 101: no address could be allocated (the pools are exhausted or none
    /// matches this node).
    AddressesExhausted,
    /// 102: the datastore or kernel refused an operation for a reason that
    /// is neither transient nor the caller's input.
    Internal,
}

impl ErrorCode {
    /// The numeric code of the specification.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::Io => 5,
            ErrorCode::Decode => 6,
            ErrorCode::InvalidConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::PluginNotAvailable => 50,
            ErrorCode::PluginNotAvailableLimitedConnectivity => 51,
            ErrorCode::CheckFailed => 100,
            ErrorCode::AddressesExhausted => 101,
            ErrorCode::Internal => 102,
        }
    }

    /// The short message printed in `msg`.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::IncompatibleVersion => "incompatible CNI version",
            ErrorCode::UnsupportedField => "unsupported field in network configuration",
            ErrorCode::UnknownContainer => "container unknown or does not exist",
            ErrorCode::InvalidEnvironment => "invalid or missing environment variable",
            ErrorCode::Io => "I/O failure",
            ErrorCode::Decode => "failed to decode content",
            ErrorCode::InvalidConfig => "invalid network configuration",
            ErrorCode::TryAgainLater => "try again later",
            ErrorCode::PluginNotAvailable => "plugin not available",
            ErrorCode::PluginNotAvailableLimitedConnectivity => {
                "plugin not available; existing containers may have limited connectivity"
            }
            ErrorCode::CheckFailed => "container networking does not match the previous result",
            ErrorCode::AddressesExhausted => "no address available",
            ErrorCode::Internal => "internal failure",
        }
    }
}

/// A failure reported to the runtime as a CNI error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CniError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// Which field, variable or object is at fault, and why.
    pub details: String,
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (code {}): {}",
            self.code.message(),
            self.code.code(),
            self.details
        )
    }
}

impl CniError {
    /// An error of kind `code` with `details`.
    pub fn new(code: ErrorCode, details: impl Into<String>) -> CniError {
        CniError {
            code,
            details: details.into(),
        }
    }

    /// Error 7 naming the configuration field at `path`.
    pub fn config(path: &str, why: impl fmt::Display) -> CniError {
        CniError::new(ErrorCode::InvalidConfig, format!("{path}: {why}"))
    }

    /// Error 4 naming the environment variable `var`.
    pub fn env(var: &str, why: impl fmt::Display) -> CniError {
        CniError::new(ErrorCode::InvalidEnvironment, format!("{var}: {why}"))
    }

    /// The JSON object printed on stdout, in the format of `version`.
    pub fn to_json(&self, version: CniVersion) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            details: &'a str,
        }
        let wire = Wire {
            cni_version: version.as_str(),
            code: self.code.code(),
            msg: self.code.message(),
            details: &self.details,
        };
        // Serializing a struct of strings and an integer cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_specs() {
        let expected = [
            (ErrorCode::IncompatibleVersion, 1),
            (ErrorCode::UnsupportedField, 2),
            (ErrorCode::UnknownContainer, 3),
            (ErrorCode::InvalidEnvironment, 4),
            (ErrorCode::Io, 5),
            (ErrorCode::Decode, 6),
            (ErrorCode::InvalidConfig, 7),
            (ErrorCode::TryAgainLater, 11),
            (ErrorCode::PluginNotAvailable, 50),
            (ErrorCode::PluginNotAvailableLimitedConnectivity, 51),
        ];
        for (c, n) in expected {
            assert_eq!(c.code(), n, "{c:?}");
        }
    }

    #[test]
    fn json_has_every_field() {
        let e = CniError::env("CNI_NETNS", "missing");
        let v: serde_json::Value =
            serde_json::from_str(&e.to_json(CniVersion::V1_0_0)).expect("json");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 4);
        assert_eq!(v["msg"], "invalid or missing environment variable");
        assert_eq!(v["details"], "CNI_NETNS: missing");
    }
}
