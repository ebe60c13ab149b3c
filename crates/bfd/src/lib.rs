//! Sans-IO BFD (RFC 5880/5881) and its UDP driver.
