//! Interop tests: tabby against BIRD 1.6, BIRD 2, FRR, GoBGP and ExaBGP,
//! each in network namespaces the test makes (root required). One test
//! binary with modules, so it compiles once.

mod active_pair;
mod bfd;
mod fib;
mod graceful_restart;
mod harness_selftest;
mod malformed;
mod matrix;
mod net;
mod nexthop;
mod peers;
mod recursive;
mod reflection;
mod route;
mod tabby;
