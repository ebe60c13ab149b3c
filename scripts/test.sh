#!/usr/bin/env bash
# tabby's whole test suite: formatting, lints, unit/property/simulation tests,
# and the integration tests that run as root in network namespaces they make
# themselves, against real BIRD 1.6, BIRD 2, FRR, GoBGP, ExaBGP and etcd.
# Run as root on Debian 12. CI runs exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
echo "== fuzz targets build (stable toolchain; run them with cargo-fuzz, see TESTING.md)"
cargo build --manifest-path fuzz/Cargo.toml --locked
