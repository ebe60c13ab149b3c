//! Interop tests: tabby against BIRD 1.6, BIRD 2, FRR, GoBGP and ExaBGP,
//! each in network namespaces the test makes (root required). One test
//! binary with modules, so it compiles once.

mod harness_selftest;
mod matrix;
mod net;
mod peers;
mod route;
mod tabby;
