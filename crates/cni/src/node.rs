//! The node backend: IPAM from the datastore, the pod's veth, addresses and
//! routes through the dataplane, and the workload endpoint record.

use crate::config::{Attachment, NetConf};
use crate::error::{CniError, ErrorCode};
use crate::plugin::{AttachRequest, Backend, Role};
use crate::result::CniResult;

/// The backend that does the real work on this node.
#[derive(Debug)]
pub struct NodeBackend {
    role: Role,
}

impl NodeBackend {
    /// Connects to the datastore the configuration names.
    pub fn open(_conf: &NetConf, role: Role) -> Result<NodeBackend, CniError> {
        Ok(NodeBackend { role })
    }

    fn unavailable(&self) -> CniError {
        CniError::new(
            ErrorCode::PluginNotAvailable,
            format!("{:?}: the datastore backend is not wired in yet", self.role),
        )
    }
}

impl Backend for NodeBackend {
    fn add(&mut self, _req: &AttachRequest) -> Result<CniResult, CniError> {
        Err(self.unavailable())
    }
    fn del(&mut self, _req: &AttachRequest) -> Result<(), CniError> {
        Err(self.unavailable())
    }
    fn check(&mut self, _req: &AttachRequest, _prev: &CniResult) -> Result<(), CniError> {
        Err(self.unavailable())
    }
    fn status(&mut self, _conf: &NetConf) -> Result<(), CniError> {
        Err(self.unavailable())
    }
    fn gc(&mut self, _conf: &NetConf, _valid: &[Attachment]) -> Result<(), CniError> {
        Err(self.unavailable())
    }
}
