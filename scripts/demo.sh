#!/usr/bin/env bash
# The main job: builds tabby and shows what works so far (growing into the
# lab demo of the design brief). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cargo build --release --locked -p tabby
TABBY=target/release/tabby

echo "== $($TABBY version)"
