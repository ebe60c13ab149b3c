#!/usr/bin/env bash
# Failover benchmark (a benchmark, not a test): the time from a link
# failure to the learned route leaving the kernel FIB, with BFD and with the
# hold timer alone (the anchor: Calico peers with no BFD and a 90 s hold
# time). In one run, for each mode, in fresh namespaces: BIRD 2 announces
# 10.90.0.0/24 over eBGP to `tabby bgpd` (fib: true); once the route is in
# the kernel, BIRD's side of the veth goes down and we poll the kernel
# every 5 ms until the route is gone. Prints both times and the ratio.
#
# The anchor runs with a shorter hold time (ANCHOR_HOLD, 9 s by default) to
# keep the run short; with Calico's 90 s it would take ten times as long, so
# the ratio printed is a lower bound (the 90 s projection is printed too).
# Run as root; uses namespaces it makes and deletes.
#
#   bench/bfd-failover.sh
#   BFD_INTERVAL_MS=50 BFD_MULT=3 ANCHOR_HOLD=30 bench/bfd-failover.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BFD_INTERVAL_MS=${BFD_INTERVAL_MS:-100}
BFD_MULT=${BFD_MULT:-3}
ANCHOR_HOLD=${ANCHOR_HOLD:-9}
RUNS=${RUNS:-3}

cargo build --release --locked -q -p tabby-speaker --bin tabby-bgpd
TABBY=$PWD/target/release/tabby-bgpd
BIRD=/opt/bird2/usr/sbin/bird

WORK=$(mktemp -d /tmp/tabby-bfd-failover.XXXXXX)
NT=tby-bfo-t-$$
NP=tby-bfo-p-$$
teardown() {
  for ns in "$NT" "$NP"; do
    # Only processes this script started live in these namespaces.
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
}
cleanup() { teardown; rm -rf "$WORK"; }
trap cleanup EXIT

T_ADDR=10.98.0.1
P_ADDR=10.98.0.2
PREFIX=10.90.0.0/24

now() { date +%s.%N; }

# run_once MODE -> prints seconds from link down to route gone
run_once() {
  local mode=$1 hold bfd_tabby bfd_bird
  if [ "$mode" = bfd ]; then
    hold=90
    bfd_tabby=", bfd: true, bfdIntervalMs: $BFD_INTERVAL_MS, bfdMultiplier: $BFD_MULT"
    bfd_bird="bfd on;"
  else
    hold=$ANCHOR_HOLD
    bfd_tabby=""
    bfd_bird=""
  fi
  teardown
  ip netns add "$NT"; ip netns add "$NP"
  ip -n "$NT" link set lo up; ip -n "$NP" link set lo up
  ip link add tby-bfo0 netns "$NT" type veth peer name tby-bfo1 netns "$NP"
  ip -n "$NT" addr add $T_ADDR/24 dev tby-bfo0; ip -n "$NT" link set tby-bfo0 up
  ip -n "$NP" addr add $P_ADDR/24 dev tby-bfo1; ip -n "$NP" link set tby-bfo1 up
  cat > "$WORK/bgpd.yaml" <<YAML
asNumber: 65001
routerId: $T_ADDR
fib: true
listen: ["$T_ADDR:179"]
controlSocket: $WORK/bgpd.sock
peers:
  - {address: $P_ADDR, asNumber: 65002, holdTime: $hold$bfd_tabby}
YAML
  cat > "$WORK/bird.conf" <<BIRD
router id $P_ADDR;
protocol device { }
protocol bfd { interface "*" { interval $BFD_INTERVAL_MS ms; multiplier $BFD_MULT; }; }
protocol static announced { ipv4; route $PREFIX blackhole; }
protocol bgp to_tabby {
  local $P_ADDR as 65002;
  neighbor $T_ADDR as 65001;
  hold time $hold;
  $bfd_bird
  ipv4 { import all; export all; };
}
BIRD
  ip netns exec "$NT" "$TABBY" --config "$WORK/bgpd.yaml" >"$WORK/tabby-$mode.log" 2>&1 &
  ip netns exec "$NP" "$BIRD" -f -c "$WORK/bird.conf" -s "$WORK/bird.ctl" >"$WORK/bird-$mode.log" 2>&1 &
  local deadline=$((SECONDS + 60))
  until ip -n "$NT" route show $PREFIX proto 201 | grep -q via; do
    [ $SECONDS -lt $deadline ] || { echo "route never installed ($mode)" >&2; cat "$WORK/tabby-$mode.log" >&2; exit 1; }
    sleep 0.1
  done
  sleep 2 # let BFD settle on its fast timers
  local t0 t1
  ip -n "$NP" link set tby-bfo1 down
  t0=$(now)
  deadline=$((SECONDS + hold + 60))
  while ip -n "$NT" route show $PREFIX proto 201 | grep -q via; do
    [ $SECONDS -lt $deadline ] || { echo "route never withdrawn ($mode)" >&2; exit 1; }
    sleep 0.005
  done
  t1=$(now)
  # The cause, from tabby's log: BFD (Cease 6/10) or the hold timer.
  local cause=other
  if grep -q "BFD down: closing the BGP session" "$WORK/tabby-$mode.log"; then cause=bfd
  elif grep -q "hold timer expired" "$WORK/tabby-$mode.log"; then cause=hold-timer
  fi
  echo "$(awk "BEGIN { print $t1 - $t0 }") $cause"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

declare -A times
for mode in bfd holdtimer; do
  : >"$WORK/$mode.times"
  for i in $(seq 1 "$RUNS"); do
    read -r secs cause < <(run_once "$mode")
    printf '%-10s run %d: %8.3f s (cause: %s)\n' "$mode" "$i" "$secs" "$cause"
    echo "$secs" >>"$WORK/$mode.times"
  done
  times[$mode]=$(median <"$WORK/$mode.times")
done
teardown

echo
echo "failure -> route withdrawn from the kernel, median of $RUNS runs"
printf '%-44s %10s\n' "mode" "seconds"
printf '%-44s %10.3f\n' "anchor: hold timer ${ANCHOR_HOLD} s, no BFD" "${times[holdtimer]}"
printf '%-44s %10.3f\n' "tabby: BFD ${BFD_INTERVAL_MS} ms x ${BFD_MULT} (hold time 90 s)" "${times[bfd]}"
awk -v a="${times[holdtimer]}" -v b="${times[bfd]}" -v h="$ANCHOR_HOLD" 'BEGIN {
  printf "ratio anchor / BFD: %.1fx\n", a / b
  printf "projected with Calico'"'"'s 90 s hold time: ~%.0f s, ratio ~%.0fx\n", a * 90 / h, a * 90 / h / b
}' 
