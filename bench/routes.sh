#!/usr/bin/env bash
# Time to program 100,000 IPv4 routes: `ip -batch` (anchor) vs tabby's
# batched netlink API, side by side in one run, each in a fresh namespace.
# Run as root. Env: TABBY_BENCH_ROUTES (default 100000), TABBY_BENCH_ROUNDS (5).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p tabby-dataplane --bench routes
