//! Durations written the way Calico (Go) writes them: `120s`, `1m30s`,
//! `500ms`, `2h`. The text is kept so a resource reads back as written.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Go-style duration such as `maxRestartTime: 120s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoDuration {
    text: String,
    value: Duration,
}

impl GoDuration {
    /// The parsed length of time.
    pub fn duration(&self) -> Duration {
        self.value
    }
}

impl FromStr for GoDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("invalid duration \"{s}\": expected a number and unit, e.g. 120s, 1m30s, 500ms")
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(bad());
        }
        if t == "0" {
            return Ok(GoDuration {
                text: s.to_string(),
                value: Duration::ZERO,
            });
        }
        let mut total = 0f64;
        let mut rest = t;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            if num_len == 0 {
                return Err(bad());
            }
            let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            total += n * scale;
            rest = &rest[unit_len..];
        }
        if !total.is_finite() || total > 1e12 {
            return Err(bad());
        }
        Ok(GoDuration {
            text: s.to_string(),
            value: Duration::from_secs_f64(total),
        })
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let d: GoDuration = "1m30s".parse().expect("parses");
        assert_eq!(d.duration(), Duration::from_secs(90));
        let d: GoDuration = "500ms".parse().expect("parses");
        assert_eq!(d.duration(), Duration::from_millis(500));
        assert!("10".parse::<GoDuration>().is_err());
        assert!("5 minutes".parse::<GoDuration>().is_err());
    }
}
