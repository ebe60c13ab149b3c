//! BGP AS numbers as Calico accepts them: a plain number (`64512`, also as a
//! string `"64512"`) or asdot notation (`"1.10"` = 1 * 65536 + 10).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 4-octet AS number (RFC 6793).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsNumber(pub u32);

impl AsNumber {
    /// Calico's default AS number.
    pub const DEFAULT: AsNumber = AsNumber(64512);

    fn check(v: u64, text: &str) -> Result<AsNumber, String> {
        if v == 0 {
            return Err(format!(
                "invalid AS number \"{text}\": AS 0 is reserved (RFC 7607)"
            ));
        }
        u32::try_from(v)
            .map(AsNumber)
            .map_err(|_| format!("invalid AS number \"{text}\": must be 1..=4294967295"))
    }
}

impl FromStr for AsNumber {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Some((hi, lo)) = t.split_once('.') {
            let part = |p: &str| p.parse::<u16>().ok();
            return match (part(hi), part(lo)) {
                (Some(h), Some(l)) => AsNumber::check((u64::from(h) << 16) | u64::from(l), s),
                _ => Err(format!(
                    "invalid AS number \"{s}\": asdot notation is two numbers 0..=65535 joined by a dot"
                )),
            };
        }
        let v: u64 = t.parse().map_err(|_| {
            format!("invalid AS number \"{s}\": expected a number like 64512 or asdot like 1.10")
        })?;
        AsNumber::check(v, s)
    }
}

impl fmt::Display for AsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for AsNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for AsNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AsVisitor;
        impl Visitor<'_> for AsVisitor {
            type Value = AsNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an AS number (64512) or asdot string (\"1.10\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<AsNumber, E> {
                AsNumber::check(v, &v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<AsNumber, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("invalid AS number {v}: must be positive")))
                    .and_then(|u| self.visit_u64(u))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<AsNumber, E> {
                // YAML reads an unquoted `1.10` as a float; asdot must be quoted.
                Err(E::custom(format!(
                    "invalid AS number {v}: write asdot notation as a quoted string, e.g. \"1.10\""
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AsNumber, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(AsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_asdot() {
        assert_eq!("64512".parse::<AsNumber>(), Ok(AsNumber(64512)));
        assert_eq!("1.10".parse::<AsNumber>(), Ok(AsNumber(65546)));
        assert_eq!("4294967295".parse::<AsNumber>(), Ok(AsNumber(u32::MAX)));
        assert!("4294967296".parse::<AsNumber>().is_err());
        assert!(
            "0".parse::<AsNumber>()
                .expect_err("must fail")
                .contains("reserved")
        );
        assert!(
            "1.70000"
                .parse::<AsNumber>()
                .expect_err("must fail")
                .contains("asdot")
        );
        assert!("as65000".parse::<AsNumber>().is_err());
    }
}
