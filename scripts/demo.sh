#!/usr/bin/env bash
# The main job: builds tabby and shows what works so far (growing into the
# lab demo of the design brief). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cargo build --release --locked -p tabby
TABBY=target/release/tabby

echo "== $($TABBY version)"

# --- dataplane: kernel routes tabby owns, in a namespace made here --------
echo "== dataplane: routes with proto tabby, reconcile leaves other protocols alone"
(
  DP_NS="tby-demo-dp-$$"
  ip netns add "$DP_NS"
  trap 'ip netns del "$DP_NS" 2>/dev/null || true' EXIT
  ip -n "$DP_NS" link add eth0 type veth peer name peer0
  ip -n "$DP_NS" link set eth0 up
  ip -n "$DP_NS" addr add 10.250.0.1/24 dev eth0
  ip -n "$DP_NS" route add 10.99.0.0/24 via 10.250.0.2 proto static
  printf '%s\n' \
    'blackhole 10.244.1.0/26            # our local block' \
    '10.244.2.0/26 via 10.250.0.2       # a peer block' \
    '10.244.3.0/26 nexthop via 10.250.0.2 weight 1 nexthop via 10.250.0.3 weight 3' \
    '10.99.0.0/24 via 10.250.0.9        # held by proto static: reported, not touched' \
    | $TABBY dataplane --netns "$DP_NS" reconcile -
  $TABBY dataplane --netns "$DP_NS" routes --all
  echo "-- ip route (iproute2's view):"
  ip -n "$DP_NS" route show
)
echo "== dataplane: 100,000 routes, ip -batch vs tabby (one round; see BENCHMARKS.md)"
TABBY_BENCH_ROUNDS=1 ./bench/routes.sh 2>&1 | grep -E '^(program|round|median)'
