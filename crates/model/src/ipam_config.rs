//! `IPAMConfiguration`: cluster-wide IPAM settings (one resource, named
//! `default`). In `crd.projectcalico.org/v1` the kind is spelled `IPAMConfig`.

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::resource::Object;

/// The IPAM configuration resource.
pub type IpamConfiguration = Object<IpamConfigurationSpec>;

/// The only name an IPAMConfiguration may have.
pub const IPAM_CONFIGURATION_NAME: &str = "default";

/// `IPAMConfiguration.spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamConfigurationSpec {
    /// When true, a node never borrows addresses from another node's block.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Most blocks one node may claim; 0 means no limit.
    #[serde(default)]
    pub max_blocks_per_host: i32,
    /// When false, nodes do not claim new blocks on their own.
    #[serde(default = "default_true")]
    pub auto_allocate_blocks: bool,
}

fn default_true() -> bool {
    true
}

impl Default for IpamConfigurationSpec {
    fn default() -> Self {
        IpamConfigurationSpec {
            strict_affinity: false,
            max_blocks_per_host: 0,
            auto_allocate_blocks: true,
        }
    }
}

impl IpamConfigurationSpec {
    /// `maxBlocksPerHost` as a limit (`None` = unlimited).
    pub fn block_limit(&self) -> Option<u32> {
        u32::try_from(self.max_blocks_per_host)
            .ok()
            .filter(|n| *n > 0)
    }

    /// Checks the spec.
    pub fn check(&self, problems: &mut Problems) {
        if self.max_blocks_per_host < 0 {
            problems.push(
                "spec.maxBlocksPerHost",
                format!(
                    "must be 0 (no limit) or more, not {}",
                    self.max_blocks_per_host
                ),
            );
        }
    }
}
