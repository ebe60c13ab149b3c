#!/usr/bin/env bash
# BGP ingest benchmark (a benchmark, not a test). In one run, for each
# receiver (tabby bgpd, BIRD 2, BIRD 1.6, FRR bgpd, GoBGP): a sender
# namespace (bgp_blast, pre-encoded with tabby-bgp's encoder) sends N IPv4
# /24 prefixes, 10 per attribute set, over one eBGP session; we measure the
# time from the first UPDATE written to the receiver reporting all N
# prefixes, and the receiver's RSS then. Prints a table with the ratio to
# BIRD 2. Run as root; uses namespaces it makes and deletes.
#
#   bench/bgp-ingest.sh                 # 1,000,000 prefixes, all receivers
#   PREFIXES=200000 RECEIVERS="tabby bird2" bench/bgp-ingest.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIXES=${PREFIXES:-1000000}
PER_UPDATE=${PER_UPDATE:-10}
RECEIVERS=${RECEIVERS:-"tabby bird2 bird1 frr gobgp"}
TIMEOUT=${TIMEOUT:-300}

cargo build --release --locked -q -p tabby-speaker --bin tabby-bgpd --example bgp_blast
TABBY=$PWD/target/release/tabby-bgpd
BLAST=$PWD/target/release/examples/bgp_blast

WORK=$(mktemp -d /tmp/tabby-bgp-ingest.XXXXXX)
TX=tby-ingest-tx-$$
RX=tby-ingest-rx-$$
RXPID=""
cleanup() {
  [ -n "${BLASTPID:-}" ] && kill "$BLASTPID" 2>/dev/null || true
  [ -n "$RXPID" ] && kill "$RXPID" 2>/dev/null || true
  for ns in "$TX" "$RX"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

RX_ADDR=10.99.0.1
TX_ADDR=10.99.0.2

setup_net() {
  ip netns add "$TX"; ip netns add "$RX"
  ip -n "$TX" link set lo up; ip -n "$RX" link set lo up
  ip link add tby-ing0 netns "$RX" type veth peer name tby-ing1 netns "$TX"
  ip -n "$RX" addr add $RX_ADDR/24 dev tby-ing0; ip -n "$RX" link set tby-ing0 up
  ip -n "$TX" addr add $TX_ADDR/24 dev tby-ing1; ip -n "$TX" link set tby-ing1 up
}

teardown_net() {
  for ns in "$TX" "$RX"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  RXPID=""
}

# start_<receiver>: starts the daemon in $RX (PID in RXPID);
# count_<receiver>: prints how many prefixes it holds now.
start_tabby() {
  cat > "$WORK/tabby.yaml" <<EOF
asNumber: 65001
routerId: $RX_ADDR
listen: ["$RX_ADDR:179"]
controlSocket: $WORK/tabby.sock
peers:
  - {address: $TX_ADDR, asNumber: 65002, passive: true, holdTime: 240}
EOF
  TABBY_LOG=warn ip netns exec "$RX" "$TABBY" --config "$WORK/tabby.yaml" 2>"$WORK/tabby.log" &
  RXPID=$!
  for _ in $(seq 100); do [ -S "$WORK/tabby.sock" ] && break; sleep 0.05; done
}
count_tabby() {
  printf '{"command":"neighbors"}\n' | socat -t 5 - UNIX-CONNECT:"$WORK/tabby.sock" 2>/dev/null \
    | grep -o '"prefixesAccepted":[0-9]*' | head -1 | cut -d: -f2
}

bird_conf() { # $1 = 1 or 2
  local ch_open="" ch_close=""
  [ "$1" = 2 ] && { ch_open="ipv4 {"; ch_close="};"; }
  cat > "$WORK/bird$1.conf" <<EOF
router id $RX_ADDR;
protocol device { }
protocol bgp sender {
  local $RX_ADDR as 65001;
  neighbor $TX_ADDR as 65002;
  passive on;
  hold time 240;
  $ch_open import all; export none; $ch_close
}
EOF
}
start_bird2() {
  bird_conf 2
  ip netns exec "$RX" /opt/bird2/usr/sbin/bird -f -c "$WORK/bird2.conf" -s "$WORK/bird2.ctl" 2>"$WORK/bird2.log" &
  RXPID=$!
  for _ in $(seq 100); do [ -S "$WORK/bird2.ctl" ] && break; sleep 0.05; done
}
count_bird2() {
  /opt/bird2/usr/sbin/birdc -s "$WORK/bird2.ctl" show route count 2>/dev/null \
    | grep -o '^[0-9]* of [0-9]* routes' | head -1 | cut -d' ' -f1
}
start_bird1() {
  bird_conf 1
  ip netns exec "$RX" bird -f -c "$WORK/bird1.conf" -s "$WORK/bird1.ctl" 2>"$WORK/bird1.log" &
  RXPID=$!
  for _ in $(seq 100); do [ -S "$WORK/bird1.ctl" ] && break; sleep 0.05; done
}
count_bird1() {
  birdc -s "$WORK/bird1.ctl" show route count 2>/dev/null \
    | grep -o '^[0-9]* of [0-9]* routes' | head -1 | cut -d' ' -f1
}
start_frr() {
  cat > "$WORK/frr.conf" <<EOF
router bgp 65001
 bgp router-id $RX_ADDR
 no bgp ebgp-requires-policy
 neighbor $TX_ADDR remote-as 65002
 neighbor $TX_ADDR passive
 neighbor $TX_ADDR timers 80 240
exit
EOF
  ip netns exec "$RX" /usr/lib/frr/bgpd -Z -S -n -f "$WORK/frr.conf" -i "$WORK/bgpd.pid" \
    --vty_socket "$WORK" -P 0 -l $RX_ADDR --log file:"$WORK/frr.log" &
  RXPID=$!
  for _ in $(seq 100); do [ -S "$WORK/bgpd.vty" ] && break; sleep 0.05; done
}
count_frr() {
  ip netns exec "$RX" vtysh --vty_socket "$WORK" -d bgpd -c "show bgp ipv4 unicast summary json" 2>/dev/null \
    | grep -o '"pfxRcd":[0-9]*' | head -1 | cut -d: -f2
}
start_gobgp() {
  cat > "$WORK/gobgpd.toml" <<EOF
[global.config]
  as = 65001
  router-id = "$RX_ADDR"
  local-address-list = ["$RX_ADDR"]
[[neighbors]]
  [neighbors.config]
    neighbor-address = "$TX_ADDR"
    peer-as = 65002
  [neighbors.timers.config]
    hold-time = 240
  [neighbors.transport.config]
    passive-mode = true
EOF
  ip netns exec "$RX" gobgpd -f "$WORK/gobgpd.toml" --api-hosts 127.0.0.1:50051 --pprof-disable -l warn >"$WORK/gobgp.log" 2>&1 &
  RXPID=$!
  for _ in $(seq 100); do ip netns exec "$RX" gobgp global >/dev/null 2>&1 && break; sleep 0.1; done
}
count_gobgp() {
  ip netns exec "$RX" gobgp global rib summary 2>/dev/null | grep -o 'Destination: [0-9]*' | cut -d' ' -f2
}

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

declare -A TIME RSS
for r in $RECEIVERS; do
  setup_net
  "start_$r"
  ip netns exec "$TX" "$BLAST" --connect $RX_ADDR:179 --local-as 65002 --peer-as 65001 \
    --router-id $TX_ADDR --next-hop $TX_ADDR --prefixes "$PREFIXES" --per-update "$PER_UPDATE" \
    >"$WORK/blast.out" 2>"$WORK/blast.err" &
  BLASTPID=$!
  for _ in $(seq 600); do grep -q '^START' "$WORK/blast.out" && break; sleep 0.05; done
  start=$(awk '/^START/ {print $2}' "$WORK/blast.out")
  if [ -z "$start" ]; then
    echo "$r: session did not come up ($(cat "$WORK/blast.err"))" >&2
    TIME[$r]=NA; RSS[$r]=NA
  else
    done_ns=""
    deadline=$(( $(date +%s) + TIMEOUT ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
      n=$("count_$r" || true)
      if [ "${n:-0}" -ge "$PREFIXES" ]; then done_ns=$(date +%s%N); break; fi
      # Every receiver is asked at the same pace (BIRD answers between
      # ingest steps; 50 ms resolution); FRR and GoBGP slow down visibly when
      # asked that often mid-ingest and take many seconds, so once a second.
      case $r in frr|gobgp) sleep 1 ;; *) sleep 0.05 ;; esac
    done
    if [ -z "$done_ns" ]; then
      TIME[$r]=timeout; RSS[$r]=$(( $(rss_kb "$RXPID") / 1024 ))
    else
      TIME[$r]=$(awk -v a="$start" -v b="$done_ns" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
      pid=$RXPID
      [ "$r" = frr ] && pid=$(cat "$WORK/bgpd.pid" 2>/dev/null || echo "$RXPID")
      RSS[$r]=$(( $(rss_kb "$pid") / 1024 ))
    fi
  fi
  echo "$r: ${TIME[$r]} s, ${RSS[$r]} MB RSS" >&2
  kill "$BLASTPID" 2>/dev/null || true; wait "$BLASTPID" 2>/dev/null || true; BLASTPID=""
  teardown_net
  wait 2>/dev/null || true
done

echo
echo "BGP ingest: $PREFIXES IPv4 /24 prefixes, $PER_UPDATE per attribute set, one eBGP session ($(date -u +%F))"
printf '%-8s %10s %10s %14s %12s\n' receiver "time (s)" "RSS (MB)" "bytes/route" "time vs bird2"
for r in $RECEIVERS; do
  t=${TIME[$r]}; m=${RSS[$r]}
  per=NA; ratio=NA
  [[ "$m" =~ ^[0-9]+$ ]] && per=$(( m * 1024 * 1024 / PREFIXES ))
  if [[ "$t" =~ ^[0-9.]+$ ]] && [[ "${TIME[bird2]:-}" =~ ^[0-9.]+$ ]]; then
    ratio=$(awk -v a="$t" -v b="${TIME[bird2]}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "NA" }')
  fi
  printf '%-8s %10s %10s %14s %12s\n' "$r" "$t" "$m" "$per" "$ratio"
done
