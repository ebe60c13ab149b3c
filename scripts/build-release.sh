#!/usr/bin/env bash
# Builds the shipped `tabby` binary and prints its path on the last line.
#
# The release binary is linked static-pie (glibc's static libc, still
# position-independent, so address randomisation stays): no dynamic loader,
# no shared libraries to find, map and relocate at every start. That start
# is paid on every CNI call (the runtime execs /opt/cni/bin/tabby for each
# ADD and DEL): static-pie starts in about two thirds of the time of the
# dynamic build (bench/cni.sh prints both). It also runs on any x86-64 or
# arm64 Linux without a glibc version to match, the way CNI plugins are
# usually shipped (copied onto the host by an init container).
#
# The flag goes through --target so that it applies to the binary only, not
# to build scripts and proc macros (which must stay dynamic); the binary is
# therefore at target/<host triple>/release/tabby.
#
# Usage: scripts/build-release.sh [extra cargo args...]   (e.g. -q)
set -euo pipefail
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked -p tabby --target "$triple" "$@" >&2
echo "$PWD/target/$triple/release/tabby"
