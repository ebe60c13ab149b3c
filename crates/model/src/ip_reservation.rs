//! `IPReservation`: addresses IPAM must never hand out automatically.

use serde::{Deserialize, Serialize};

use crate::address::Cidr;
use crate::error::Problems;
use crate::resource::Object;

/// The IP reservation resource.
pub type IpReservation = Object<IpReservationSpec>;

/// `IPReservation.spec`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpReservationSpec {
    /// Reserved ranges; a bare address (`192.168.2.3`) reads as a /32 or /128.
    #[serde(default, rename = "reservedCIDRs", deserialize_with = "cidrs_or_ips")]
    pub reserved_cidrs: Vec<Cidr>,
}

fn cidrs_or_ips<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    items
        .iter()
        .map(|s| {
            if s.contains('/') {
                s.parse::<Cidr>()
            } else {
                s.trim()
                    .parse::<std::net::IpAddr>()
                    .map(|ip| Cidr::from(ipnet::IpNet::from(ip)))
                    .map_err(|_| format!("invalid CIDR or IP address \"{s}\""))
            }
        })
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

impl IpReservationSpec {
    /// True when `ip` falls in a reserved range.
    pub fn reserves(&self, ip: std::net::IpAddr) -> bool {
        self.reserved_cidrs
            .iter()
            .any(|c| c.network().contains(&ip))
    }

    /// Checks the spec.
    pub fn check(&self, problems: &mut Problems) {
        for (i, c) in self.reserved_cidrs.iter().enumerate() {
            if !c.is_masked() {
                problems.push(
                    format!("spec.reservedCIDRs[{i}]"),
                    format!("{c} has host bits set: write {}", c.network()),
                );
            }
        }
    }
}
