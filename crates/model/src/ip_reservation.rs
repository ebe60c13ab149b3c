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
    /// Reserved ranges (a single address is written as a /32 or /128).
    #[serde(default, rename = "reservedCIDRs")]
    pub reserved_cidrs: Vec<Cidr>,
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
