//! The node agent: from resources to BGP peers, exports and kernel routes; status API; metrics.
