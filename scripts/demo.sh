#!/usr/bin/env bash
# The main job: builds tabby and shows what works so far (growing into the
# lab demo of the design brief). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
# The shipped binary: static-pie (see scripts/build-release.sh).
TABBY=$(./scripts/build-release.sh)

# Each section below runs in a subshell of its own. These make its network
# namespaces (loopback up) and veths, and clean up on its exit: the
# processes inside the section's own namespaces are ended, then the
# namespaces and the section's temp dir are deleted.
DEMO_NS=()
demo_ns() { for ns in "$@"; do ip netns add "$ns"; ip -n "$ns" link set lo up; DEMO_NS+=("$ns"); done; }
demo_link() { # demo_link NS_A IF_A ADDR_A NS_B IF_B ADDR_B: a veth, addressed and up
  ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
  ip -n "$1" addr add "$3" dev "$2"; ip -n "$1" link set "$2" up
  ip -n "$4" addr add "$6" dev "$5"; ip -n "$4" link set "$5" up
}
demo_cleanup() {
  for ns in "${DEMO_NS[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  done
  sleep 0.5
  for ns in "${DEMO_NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "${D:-}"
}

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

# --- resources: calicoctl-style apply/get of the seeds' own manifests -----
echo "== resources: the seeds' Calico manifests applied unchanged (SQLite datastore in a temp dir)"
(
  RES_DIR="$(mktemp -d)"
  trap 'rm -rf "$RES_DIR"' EXIT
  export TABBY_DATASTORE="sqlite://$RES_DIR/tabby.db"
  S=crates/model/tests/data/seeds
  $TABBY apply -f "$S/003-default-ippool-list.yaml"   # kubectl's List of a crd.projectcalico.org/v1 IPPool
  $TABBY apply -f "$S/003-bgp-config.yaml"
  cat "$S"/003-node-*.yaml | sed 's/^apiVersion/---\napiVersion/' | $TABBY apply -f -
  cat "$S"/003-bgppeer-*.yaml | sed 's/^apiVersion/---\napiVersion/' | $TABBY apply -f -
  $TABBY get ippool -o wide
  $TABBY get bgpconfig
  $TABBY get nodes -o wide
  $TABBY get bgppeers -o wide
  echo "-- the seed's new /24 pool reuses the default pool's CIDR: rejected, nothing written"
  $TABBY apply -f "$S/003-new-ippool-24.yaml" || true
  $TABBY patch bgpconfig default -p '{"spec":{"nodeToNodeMeshEnabled":false}}'
  $TABBY patch ippool default-ipv4-ippool -p '{"spec":{"disabled":true}}'
  $TABBY delete ippool default-ipv4-ippool
  $TABBY apply -f "$S/003-new-ippool-24.yaml"
  $TABBY get ippools -o wide
  echo "-- seed 002: selectors on rr-id while the nodes carry as-id: applied, with a warning"
  $TABBY apply -f "$S/002-nodes.yaml"
  $TABBY apply -f "$S/002-bgppeers.yaml"
  $TABBY label node k8s-node3 rr-id=as64513
  $TABBY get bgppeer -o wide
)

# --- IPAM: blocks claimed by nodes, leaks found and fixed -------------------
echo "== ipam: allocation, show, check, a claim killed half way, release --from-report (SQLite in a temp dir)"
(
  IPAM_DIR="$(mktemp -d)"
  trap 'rm -rf "$IPAM_DIR"' EXIT
  export TABBY_DATASTORE="sqlite://$IPAM_DIR/tabby.db"
  $TABBY apply -f crates/model/tests/data/seeds/003-new-ippool-24.yaml
  $TABBY ipam assign --node k-w1 --handle k8s-pod-network.demo1 --ipv4 2
  $TABBY ipam assign --node k-w2 --handle k8s-pod-network.demo2
  $TABBY ipam show --show-blocks
  echo "-- a process killed between 'pending affinity' and 'block created'"
  TABBY_IPAM_TEST_PAUSE=after-pending-affinity $TABBY ipam exercise --node k-w3 --count 1 2>"$IPAM_DIR/victim.err" &
  VICTIM=$!
  for _ in $(seq 100); do grep -q "paused at" "$IPAM_DIR/victim.err" && break; sleep 0.1; done
  kill -KILL "$VICTIM"; wait "$VICTIM" 2>/dev/null || true
  awk '{print $1}' <($TABBY ipam assign --node k-w1 --handle k8s-pod-network.demo3) >"$IPAM_DIR/in-use"
  $TABBY ipam check --in-use "$IPAM_DIR/in-use" -o "$IPAM_DIR/report.json" || true
  $TABBY ipam release --from-report "$IPAM_DIR/report.json"
  $TABBY ipam check --in-use "$IPAM_DIR/in-use"
)

# --- bgpd: tabby's own BGP speaker peering with BIRD 2 ---------------------
echo "== bgpd: tabby bgpd (AS 65001, fib: true) peering with BIRD 2 (AS 65002) in two namespaces"
(
  NA="tby-demo-bgp-a-$$"; NB="tby-demo-bgp-b-$$"; D=$(mktemp -d)
  trap demo_cleanup EXIT
  demo_ns "$NA" "$NB"
  demo_link "$NA" tby-demo0 10.251.0.1/24 "$NB" tby-demo1 10.251.0.2/24
  cat > "$D/bird.conf" <<'BIRD'
router id 10.251.0.2;
protocol device { }
protocol static { ipv4; route 10.252.2.0/24 blackhole; }
protocol bgp tabby {
  local 10.251.0.2 as 65002; neighbor 10.251.0.1 as 65001;
  hold time 9; connect delay time 1;
  ipv4 { import all; export filter { bgp_community.add((65002, 42)); accept; }; };
}
BIRD
  cat > "$D/bgpd.yaml" <<YAML
asNumber: 65001
routerId: 10.251.0.1
listen: ["10.251.0.1:179"]
fib: true
controlSocket: $D/bgpd.sock
originate: [10.252.1.0/24]
peers:
  - {address: 10.251.0.2, asNumber: 65002, holdTime: 9, connectRetryTime: 2}
YAML
  $TABBY bgpd --config "$D/bgpd.yaml" --check
  ip netns exec "$NB" /opt/bird2/usr/sbin/bird -f -c "$D/bird.conf" -s "$D/bird.ctl" &
  ip netns exec "$NA" "$TABBY" bgpd --config "$D/bgpd.yaml" &
  for _ in $(seq 100); do
    $TABBY bgp --socket "$D/bgpd.sock" -o json neighbors 2>/dev/null | grep -q '"Established"' \
      && ip -n "$NA" route show proto tabby | grep -q 10.252.2.0 && break
    sleep 0.2
  done
  echo "-- tabby bgp neighbors"; $TABBY bgp --socket "$D/bgpd.sock" neighbors
  echo "-- tabby bgp routes";    $TABBY bgp --socket "$D/bgpd.sock" routes
  echo "-- kernel routes tabby installed (ip -n A route show proto tabby)"; ip -n "$NA" route show proto tabby
  echo "-- BIRD's view of tabby's route"; /opt/bird2/usr/sbin/birdc -s "$D/bird.ctl" show route 10.252.1.0/24 all | sed -n '2,20p'
)

# --- BFD: a dead link noticed in a third of a second, not 90 s --------------
echo "== bfd: tabby bgpd (hold time 90 s, bfd 100 ms x 3) and BIRD 2 (bfd on); the link is cut and the route leaves the kernel"
(
  NA="tby-demo-bfd-a-$$"; NB="tby-demo-bfd-b-$$"; D=$(mktemp -d)
  trap demo_cleanup EXIT
  demo_ns "$NA" "$NB"
  demo_link "$NA" tby-demo2 10.253.0.1/24 "$NB" tby-demo3 10.253.0.2/24
  cat > "$D/bird.conf" <<'BIRD'
router id 10.253.0.2;
protocol device { }
protocol bfd { interface "*" { interval 100 ms; multiplier 3; }; }
protocol static { ipv4; route 10.254.2.0/24 blackhole; }
protocol bgp tabby {
  local 10.253.0.2 as 65002; neighbor 10.253.0.1 as 65001;
  hold time 90; connect delay time 1; bfd on;
  ipv4 { import all; export all; };
}
BIRD
  cat > "$D/bgpd.yaml" <<YAML
asNumber: 65001
routerId: 10.253.0.1
listen: ["10.253.0.1:179"]
fib: true
controlSocket: $D/bgpd.sock
peers:
  - {address: 10.253.0.2, asNumber: 65002, holdTime: 90, bfd: true, bfdIntervalMs: 100, bfdMultiplier: 3}
YAML
  ip netns exec "$NB" /opt/bird2/usr/sbin/bird -f -c "$D/bird.conf" -s "$D/bird.ctl" &
  ip netns exec "$NA" "$TABBY" bgpd --config "$D/bgpd.yaml" 2>"$D/bgpd.log" &
  for _ in $(seq 150); do
    ip -n "$NA" route show proto tabby | grep -q 10.254.2.0 && break
    sleep 0.2
  done
  sleep 2
  echo "-- BIRD's BFD view"; /opt/bird2/usr/sbin/birdc -s "$D/bird.ctl" show bfd sessions | sed -n '2,10p'
  echo "-- kernel route before the cut"; ip -n "$NA" route show proto tabby
  ip -n "$NB" link set tby-demo3 down
  t0=$(date +%s.%N)
  while ip -n "$NA" route show proto tabby | grep -q 10.254.2.0; do sleep 0.005; done
  t1=$(date +%s.%N)
  echo "-- link cut -> route gone from the kernel in $(awk "BEGIN { printf \"%.3f\", $t1 - $t0 }") s (the hold timer alone: up to 90 s)"
  echo "-- tabby bgp neighbors"; $TABBY bgp --socket "$D/bgpd.sock" neighbors
)

# --- graceful restart: tabby bgpd restarted under a 20/s ping, nothing lost --
echo "== graceful restart: tabby bgpd (gracefulRestart: {restartTime: 120}) and BIRD 2 (graceful restart on); SIGTERM + start again while pods ping at 20/s"
(
  NA="tby-demo-gr-a-$$"; NB="tby-demo-gr-b-$$"; D=$(mktemp -d)
  trap demo_cleanup EXIT
  demo_ns "$NA" "$NB"
  demo_link "$NA" tby-demo4 10.249.0.1/24 "$NB" tby-demo5 10.249.0.2/24
  # The "pods": one address on each side's loopback, reachable only via BGP.
  ip -n "$NA" link set lo up; ip -n "$NA" addr add 10.248.1.1/32 dev lo
  ip -n "$NB" link set lo up; ip -n "$NB" addr add 10.248.2.1/32 dev lo
  cat > "$D/bird.conf" <<'BIRD'
router id 10.249.0.2;
protocol device { }
protocol static { ipv4; route 10.248.2.0/24 unreachable; }
protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }
protocol bgp tabby {
  local 10.249.0.2 as 65002; neighbor 10.249.0.1 as 65001;
  hold time 9; connect delay time 1; graceful restart on; graceful restart time 120;
  ipv4 { import all; export where source = RTS_STATIC; };
}
BIRD
  cat > "$D/bgpd.yaml" <<YAML
asNumber: 65001
routerId: 10.249.0.1
listen: ["10.249.0.1:179"]
fib: true
controlSocket: $D/bgpd.sock
originate: [10.248.1.0/24]
gracefulRestart: {restartTime: 120}
peers:
  - {address: 10.249.0.2, asNumber: 65002, holdTime: 9, connectRetryTime: 1}
YAML
  ip netns exec "$NB" /opt/bird2/usr/sbin/bird -f -c "$D/bird.conf" -s "$D/bird.ctl" &
  ip netns exec "$NA" env TABBY_LOG=info "$TABBY" bgpd --config "$D/bgpd.yaml" 2>"$D/bgpd1.log" &
  BGPD=$!
  for _ in $(seq 150); do
    ip -n "$NA" route show proto tabby | grep -q 10.248.2.0 && ip -n "$NB" route show | grep -q 10.248.1.0 && break
    sleep 0.2
  done
  echo "-- tabby bgp neighbors"; $TABBY bgp --socket "$D/bgpd.sock" neighbors
  ip netns exec "$NA" ping -n -q -i 0.05 -W 1 -I 10.248.1.1 10.248.2.1 >"$D/ping.txt" 2>&1 &
  PING=$!
  sleep 1
  kill -TERM "$BGPD"; wait "$BGPD" || true
  echo "-- tabby bgpd stopped (SIGTERM); BIRD keeps its route:"
  /opt/bird2/usr/sbin/birdc -s "$D/bird.ctl" show route 10.248.1.0/24 | sed -n '2,5p'
  echo "-- tabby's kernel route is still there:"; ip -n "$NA" route show proto tabby
  ip netns exec "$NA" env TABBY_LOG=info "$TABBY" bgpd --config "$D/bgpd.yaml" 2>"$D/bgpd2.log" &
  for _ in $(seq 150); do
    grep -q "route selection done" "$D/bgpd2.log" && break
    sleep 0.2
  done
  sleep 1
  kill -INT "$PING"; wait "$PING" || true
  echo "-- started again: $(sed 's/\x1b\[[0-9;]*m//g' "$D/bgpd2.log" | grep -o 'adopting the kernel routes.*' | head -1)"
  echo "-- tabby bgp neighbors"; $TABBY bgp --socket "$D/bgpd.sock" neighbors
  echo "-- ping across the restart: $(grep 'packets transmitted' "$D/ping.txt")"
)

# --- bgpd: next hop behind a router, and two active speakers after a kill ---
echo "== bgpd: two tabby bgpd (iBGP, both active) over a plain router A - R - B: next hop installed via R (recursive), B killed and restarted"
(
  NA="tby-demo-rc-a-$$"; NR="tby-demo-rc-r-$$"; NB="tby-demo-rc-b-$$"; D=$(mktemp -d)
  trap demo_cleanup EXIT
  demo_ns "$NA" "$NR" "$NB"
  demo_link "$NA" tby-rc0 10.253.1.2/24 "$NR" tby-rc1 10.253.1.1/24
  demo_link "$NR" tby-rc2 10.253.2.1/24 "$NB" tby-rc3 10.253.2.2/24
  ip netns exec "$NR" sysctl -q -w net.ipv4.ip_forward=1
  ip -n "$NR" route add 10.254.1.0/24 via 10.253.1.2; ip -n "$NR" route add 10.254.2.0/24 via 10.253.2.2
  ip -n "$NA" route add 10.253.2.0/24 via 10.253.1.1; ip -n "$NB" route add 10.253.1.0/24 via 10.253.2.1
  ip -n "$NA" addr add 10.254.1.1/32 dev lo; ip -n "$NB" addr add 10.254.2.1/32 dev lo
  conf() { # conf NAME ME PEER PREFIX
    printf 'asNumber: 65001\nrouterId: %s\nlisten: ["%s:179"]\nfib: true\ncontrolSocket: %s\noriginate: [%s]\npeers:\n  - {address: %s, asNumber: 65001, holdTime: 9, connectRetryTime: 2}\n' \
      "$2" "$2" "$D/$1.sock" "$4" "$3" > "$D/$1.yaml"
  }
  conf a 10.253.1.2 10.253.2.2 10.254.1.0/24; conf b 10.253.2.2 10.253.1.2 10.254.2.0/24
  ip netns exec "$NA" "$TABBY" bgpd --config "$D/a.yaml" 2>"$D/a.log" &
  ip netns exec "$NB" "$TABBY" bgpd --config "$D/b.yaml" 2>"$D/b.log" & BPID=$!
  wait_route() {
    for _ in $(seq 300); do ip -n "$NA" route show proto tabby | grep -q 10.254.2.0 && return 0; sleep 0.2; done
    return 1
  }
  wait_route || { echo "-- not installed; logs:"; tail -5 "$D/a.log" "$D/b.log"; }
  echo "-- A's kernel route to B's prefix (next hop 10.253.2.2 is behind R)"; ip -n "$NA" route show proto tabby
  echo "-- ping from A's loopback to B's"; ip netns exec "$NA" ping -c 2 -i 0.2 -W 1 -q -I 10.254.1.1 10.254.2.1 | tail -2 || echo "ping FAILED"
  echo "-- B killed (SIGKILL, PID $BPID) and started again; both connect actively"
  kill -KILL "$BPID"; wait "$BPID" 2>/dev/null || true
  ip netns exec "$NB" "$TABBY" bgpd --config "$D/b.yaml" &
  SECONDS=0
  for _ in $(seq 300); do
    $TABBY bgp --socket "$D/b.sock" -o json neighbors 2>/dev/null | grep -q '"Established"' \
      && $TABBY bgp --socket "$D/a.sock" -o json neighbors 2>/dev/null | grep -q '"Established"' && break
    sleep 0.2
  done
  echo "-- back after ${SECONDS} s"; $TABBY bgp --socket "$D/a.sock" neighbors
)

# --- tabby-bgp core: the sans-IO codec + RIB on a full-table-sized stream ---
echo "== bgp core: 1,000,000 IPv4 /24s (10 per attribute set) decoded and applied to the RIB in one process (see BENCHMARKS.md)"
cargo run --release --locked -q -p tabby-bgp --example ingest -- 1000000

# --- CNI: the tabby binary as a runtime runs it, in namespaces made here ---
echo "== cni: two pods on one node via the tabby CNI plugin, then DEL"
(
  NODE="tby-demo-cni-node-$$" PA="tby-demo-cni-a-$$" PB="tby-demo-cni-b-$$"
  DIR=$(mktemp -d)
  trap 'for n in "$PA" "$PB" "$NODE"; do ip netns del "$n" 2>/dev/null || true; done; rm -rf "$DIR"' EXIT
  for n in "$NODE" "$PA" "$PB"; do ip netns add "$n"; ip -n "$n" link set lo up; done
  ip netns exec "$NODE" sysctl -qw net.ipv4.ip_forward=1
  DS="sqlite://$DIR/tabby.db"
  printf 'apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: demo-pool}\nspec: {cidr: 10.244.0.0/16, blockSize: 26}\n' \
    | $TABBY --datastore "$DS" apply -f -
  CONF="{\"cniVersion\":\"1.0.0\",\"name\":\"k8s-pod-network\",\"type\":\"tabby\",\"datastore\":\"$DS\",\"nodename\":\"demo-node\",\"ipam\":{\"type\":\"tabby-ipam\"}}"
  cni() { # cni CMD ID POD
    echo "$CONF" | ip netns exec "$NODE" env CNI_COMMAND="$1" CNI_CONTAINERID="$2" \
      CNI_NETNS="/var/run/netns/$3" CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin "$TABBY"
  }
  cni ADD demo-a "$PA"; echo
  B=$(cni ADD demo-b "$PB" | sed -E 's/.*"address":"([0-9.]+)\/32".*/\1/')
  echo "-- node routes:"; ip -n "$NODE" route show proto 201
  echo "-- pod a routes:"; ip -n "$PA" route show
  echo "-- pod a pings pod b ($B):"; ip netns exec "$PA" ping -c 2 -i 0.2 -W 1 "$B" | tail -2
  cni DEL demo-a "$PA"; cni DEL demo-b "$PB"
  echo "-- after DEL: $(ip -n "$NODE" -o link | grep -c ': tby' || true) pod veths left on the node"
  echo '{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"tabby","mtu":5}' | \
    CNI_COMMAND=ADD CNI_CONTAINERID=x CNI_IFNAME=eth0 CNI_NETNS=/var/run/netns/$PA "$TABBY" || true
  echo
)

# --- agent: three nodes, one datastore, the mesh, cross-node pod traffic ---
echo "== agent: three nodes (namespaces on one bridge) each running tabby agent; pods on each ping across nodes"
(
  P="tby-demo-ag-$$"; SW="$P-sw"; NODES=("$P-n1" "$P-n2" "$P-n3"); PODS=("$P-p1" "$P-p2" "$P-p3")
  DIR=$(mktemp -d); PIDS=()
  cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.5
    for n in "${PODS[@]}" "${NODES[@]}" "$SW"; do ip netns del "$n" 2>/dev/null || true; done
    rm -rf "$DIR"
  }
  trap cleanup EXIT
  DS="sqlite://$DIR/tabby.db"
  ip netns add "$SW"; ip -n "$SW" link add br0 type bridge; ip -n "$SW" link set br0 up
  printf 'apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.246.0.0/16, natOutgoing: true}\n' \
    | $TABBY --datastore "$DS" apply -f -
  for i in 1 2 3; do
    N=${NODES[$((i-1))]}; ip netns add "$N"; ip -n "$N" link set lo up
    ip link add eth0 netns "$N" type veth peer name "p$i" netns "$SW"
    ip -n "$SW" link set "p$i" master br0 up
    ip -n "$N" addr add "10.245.0.$i/24" dev eth0; ip -n "$N" link set eth0 up
    ip netns exec "$N" "$TABBY" --datastore "$DS" agent --nodename "node$i" --ip "10.245.0.$i/24" \
      --control-socket "$DIR/node$i.sock" --state-dir "$DIR/node$i" --cni-socket "$DIR/node$i-cni.sock" \
      --mtu-file "$DIR/node$i.mtu" 2>"$DIR/node$i.log" &
    PIDS+=($!)
  done
  for _ in $(seq 1 100); do
    [ -S "$DIR/node1-cni.sock" ] && [ -S "$DIR/node2-cni.sock" ] && [ -S "$DIR/node3-cni.sock" ] && break
    sleep 0.1
  done
  echo "-- pods added through each node's agent (its CNI service; the trace says forwarded@)"
  ADDRS=()
  for i in 1 2 3; do
    N=${NODES[$((i-1))]} POD=${PODS[$((i-1))]}; ip netns add "$POD"
    CONF="{\"cniVersion\":\"1.0.0\",\"name\":\"k8s-pod-network\",\"type\":\"tabby\",\"datastore\":\"$DS\",\"nodename\":\"node$i\",\"mtuFile\":\"$DIR/node$i.mtu\",\"ipam\":{\"type\":\"tabby-ipam\"}}"
    ADDRS+=("$(echo "$CONF" | ip netns exec "$N" env CNI_COMMAND=ADD CNI_CONTAINERID="pod$i" \
      CNI_NETNS="/var/run/netns/$POD" CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin \
      TABBY_CNI_SOCKET="$DIR/node$i-cni.sock" TABBY_CNI_TRACE=1 "$TABBY" \
      | sed -E 's/.*"address":"([0-9.]+)\/32".*/\1/')")
  done
  for _ in $(seq 1 100); do
    [ "$($TABBY node status --socket "$DIR/node1.sock" -o json 2>/dev/null | grep -c '"Established"')" = 2 ] \
      && ip -n "${NODES[0]}" route show proto tabby | grep -c via | grep -q 2 && break
    sleep 0.2
  done
  echo "-- tabby node status (node1)"; $TABBY node status --socket "$DIR/node1.sock" --state-dir "$DIR/node1"
  echo "-- node1's kernel routes (proto tabby): its block blackholed, the others' via their node"
  ip -n "${NODES[0]}" route show proto tabby
  echo "-- pod on node1 pings the pods on node2 (${ADDRS[1]}) and node3 (${ADDRS[2]})"
  ip netns exec "${PODS[0]}" ping -c 2 -i 0.2 -W 1 "${ADDRS[1]}" | tail -2
  ip netns exec "${PODS[0]}" ping -c 2 -i 0.2 -W 1 "${ADDRS[2]}" | tail -2
  echo "-- the Node resources the agents registered"; $TABBY --datastore "$DS" get nodes -o wide
)

# --- VXLAN CrossSubnet: three agents on two subnets ------------------------
echo "== vxlan: three agents on two subnets (a router between, no pod routes on it); pool vxlanMode CrossSubnet: native inside a subnet, vxlan.calico across"
(
  P="tby-demo-vx-$$"; SW="$P-sw"; R="$P-r"; NODES=("$P-n1" "$P-n2" "$P-n3"); PODS=("$P-p1" "$P-p2" "$P-p3")
  D=$(mktemp -d); DS="sqlite://$D/tabby.db"
  trap demo_cleanup EXIT
  demo_ns "$SW" "$R" "${NODES[@]}" "${PODS[@]}"
  ip -n "$SW" link add br0 type bridge; ip -n "$SW" link set br0 up
  ip link add eth0 netns "$R" type veth peer name p0 netns "$SW"
  ip -n "$R" addr add 10.242.1.254/24 dev eth0; ip -n "$R" link set eth0 up; ip -n "$SW" link set p0 master br0 up
  demo_link "$R" eth1 10.242.2.254/24 "${NODES[2]}" eth0 10.242.2.3/24
  ip netns exec "$R" sysctl -q -w net.ipv4.ip_forward=1
  NODE_IPS=(10.242.1.1 10.242.1.2 10.242.2.3)
  for i in 1 2; do
    ip link add eth0 netns "${NODES[$((i-1))]}" type veth peer name "p$i" netns "$SW"
    ip -n "$SW" link set "p$i" master br0 up
    ip -n "${NODES[$((i-1))]}" addr add "${NODE_IPS[$((i-1))]}/24" dev eth0; ip -n "${NODES[$((i-1))]}" link set eth0 up
  done
  for i in 1 2 3; do
    GW=10.242.1.254; [ "$i" = 3 ] && GW=10.242.2.254
    ip -n "${NODES[$((i-1))]}" route add default via "$GW"
  done
  printf 'apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: vx}\nspec: {cidr: 10.243.0.0/16, vxlanMode: CrossSubnet}\n' \
    | $TABBY --datastore "$DS" apply -f -
  for i in 1 2 3; do
    ip netns exec "${NODES[$((i-1))]}" "$TABBY" --datastore "$DS" --log info agent --nodename "vx$i" \
      --ip "${NODE_IPS[$((i-1))]}/24" --control-socket "$D/vx$i.sock" --state-dir "$D/vx$i" \
      --cni-socket "$D/vx$i-cni.sock" --mtu-file "$D/vx$i.mtu" 2>"$D/vx$i.log" &
  done
  # Each agent writes the pod MTU it detects (the underlay eth0's 1500
  # minus VXLAN's 50) to its MTU file (Calico's /var/lib/calico/mtu by
  # default); the plugin reads it, the configuration has no "mtu".
  for _ in $(seq 1 100); do
    [ -s "$D/vx1.mtu" ] && [ -s "$D/vx2.mtu" ] && [ -s "$D/vx3.mtu" ] && break
    sleep 0.1
  done
  ADDRS=()
  for i in 1 2 3; do
    CONF="{\"cniVersion\":\"1.0.0\",\"name\":\"k8s-pod-network\",\"type\":\"tabby\",\"datastore\":\"$DS\",\"nodename\":\"vx$i\",\"mtuFile\":\"$D/vx$i.mtu\",\"ipam\":{\"type\":\"tabby-ipam\"}}"
    ADDRS+=("$(echo "$CONF" | ip netns exec "${NODES[$((i-1))]}" env CNI_COMMAND=ADD CNI_CONTAINERID="vxpod$i" \
      CNI_NETNS="/var/run/netns/${PODS[$((i-1))]}" CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin TABBY_CNI_SOCKET=/nonexistent \
      "$TABBY" | sed -E 's/.*"address":"([0-9.]+)\/32".*/\1/')")
  done
  for _ in $(seq 1 150); do
    [ "$(ip -n "${NODES[0]}" route show proto tabby | grep -c -E 'vxlan.calico|onlink')" = 2 ] && break
    sleep 0.2
  done
  echo "-- the Nodes' VTEPs (tunnel address from the pool, handle vxlan-tunnel-addr-<node>; MAC)"
  $TABBY --datastore "$DS" get nodes -o yaml | grep -E '^ *name: vx|ipv4VXLANTunnelAddr|vxlanTunnelMACAddr'
  echo "-- vx1's routes to the other blocks: vx2 (same subnet) native, vx3 (across the router) via vxlan.calico"
  ip -n "${NODES[0]}" route show proto tabby | grep -E 'via'
  ip -n "${NODES[0]}" -d link show vxlan.calico | grep -o 'vxlan id [0-9]* .*dstport [0-9]*'
  tx() { ip -n "${NODES[0]}" -s -j link show vxlan.calico | sed -E 's/.*"tx":\{"bytes":[0-9]+,"packets":([0-9]+).*/\1/'; }
  T0=$(tx)
  echo "-- pod on vx1 pings the pod on vx2 (${ADDRS[1]}), native: vxlan.calico tx stays"
  ip netns exec "${PODS[0]}" ping -c 2 -i 0.2 -W 1 "${ADDRS[1]}" | tail -2; T1=$(tx)
  echo "   vxlan.calico tx packets: $T0 -> $T1"
  echo "-- pod on vx1 pings the pod on vx3 (${ADDRS[2]}), encapsulated: vxlan.calico tx moves"
  ip netns exec "${PODS[0]}" ping -c 2 -i 0.2 -W 1 "${ADDRS[2]}" | tail -2
  echo "   vxlan.calico tx packets: $T1 -> $(tx)"
  $TABBY --datastore "$DS" ipam check | tail -1
  echo "-- the detected MTU (no \"mtu\" in the CNI configuration): vx1's MTU file, vxlan.calico, the pod's veth (both ends)"
  grep -m1 -h 'pod MTU [0-9]* (' "$D/vx1.log" | sed -E 's/^.*(pod MTU [0-9]+ \([^)]*\)).*$/   agent log: \1/'
  echo "   $D/vx1.mtu: $(cat "$D/vx1.mtu")"
  ip -n "${NODES[0]}" -o link show vxlan.calico | grep -o 'vxlan.calico: .* mtu [0-9]*' | sed -E 's/:.* mtu/ mtu/; s/^/   /'
  ip -n "${PODS[0]}" -o link show eth0 | grep -o 'mtu [0-9]*' | sed 's/^/   pod eth0 /'
  ip -n "${NODES[0]}" -o link show | grep -o 'tby[0-9a-f]*@[^:]*: .* mtu [0-9]*' | sed -E 's/@[^:]*:.* mtu/ mtu/; s/^/   host end /'
  echo "-- tabby node status on vx1: the sessions, then the tunnels and the pod MTU"
  $TABBY node status --socket "$D/vx1.sock" --state-dir "$D/vx1"
  echo "-- tabby doctor on vx1 (its MTU check expects what the agent detects)"
  ip netns exec "${NODES[0]}" "$TABBY" --datastore "$DS" doctor --nodename vx1 --socket "$D/vx1.sock" \
    && echo "exit 0" || echo "exit $?"
)

# --- doctor: what is wrong on a node and what to change --------------------
echo "== doctor: a node whose BGPPeer has the wrong AS for its ToR (tabby bgpd, AS 65001); doctor names the peer and the fix, then passes once it is applied"
(
  NN="tby-demo-dr-n-$$"; NT="tby-demo-dr-t-$$"; NP="tby-demo-dr-p-$$"; D=$(mktemp -d)
  trap demo_cleanup EXIT
  demo_ns "$NN" "$NT" "$NP"
  demo_link "$NN" tby-dr0 10.248.0.1/24 "$NT" tby-dr1 10.248.0.2/24
  DS="sqlite://$D/tabby.db"
  printf 'asNumber: 65001\nrouterId: 10.248.0.2\nlisten: ["10.248.0.2:179"]\ncontrolSocket: %s\npeers:\n  - {address: 10.248.0.1, asNumber: 64512, connectRetryTime: 1}\n' \
    "$D/tor.sock" >"$D/tor.yaml"
  ip netns exec "$NT" "$TABBY" bgpd --config "$D/tor.yaml" 2>/dev/null &
  $TABBY --datastore "$DS" apply -f - <<'YAML'
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.247.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 10.248.0.2, asNumber: 65002}
YAML
  ip netns exec "$NN" "$TABBY" --datastore "$DS" agent --nodename node1 --ip 10.248.0.1/24 \
    --control-socket "$D/node1.sock" --state-dir "$D/node1" --cni-socket off --mtu-file "$D/node1.mtu" \
    2>"$D/node1.log" &
  POD=$(echo "{\"cniVersion\":\"1.0.0\",\"name\":\"k8s-pod-network\",\"type\":\"tabby\",\"datastore\":\"$DS\",\"nodename\":\"node1\",\"mtu\":1500,\"ipam\":{\"type\":\"tabby-ipam\"}}" \
    | ip netns exec "$NN" env CNI_COMMAND=ADD CNI_CONTAINERID=pod1 CNI_NETNS="/var/run/netns/$NP" \
      CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin TABBY_CNI_SOCKET=off "$TABBY" \
    | sed -E 's/.*"address":"([0-9.]+)\/32".*/\1/')
  for _ in $(seq 1 100); do
    $TABBY node status --socket "$D/node1.sock" 2>/dev/null | grep -q 'Bad Peer AS' \
      && ip -n "$NN" route show proto tabby | grep -q blackhole && break
    sleep 0.2
  done
  # node1's doctor, then its exit status.
  node1_doctor() {
    ip netns exec "$NN" "$TABBY" --datastore "$DS" doctor --nodename node1 --socket "$D/node1.sock" "$@" \
      && echo "exit 0" || echo "exit $?"
  }
  echo "-- tabby doctor (exit status 1: problems found)"
  node1_doctor
  echo "-- the fix doctor gave: tabby patch bgppeer tor -p '{\"spec\":{\"asNumber\":65001}}'"
  $TABBY --datastore "$DS" patch bgppeer tor -p '{"spec":{"asNumber":65001}}'
  for _ in $(seq 1 100); do
    $TABBY node status --socket "$D/node1.sock" 2>/dev/null | grep -q Established && break
    sleep 0.2
  done
  echo "-- tabby doctor (exit status 0)"
  node1_doctor
  echo "-- tabby doctor --route $POD (the pod's own node)"
  node1_doctor --route "$POD"
  echo "-- the ToR learned the pod block:"; $TABBY bgp --socket "$D/tor.sock" routes
)

# --- lab: the leaf-spine scenario of seed 003, up / verify / down ---------
echo "== lab: leaf-spine (seed 003): FRR spine + 3 leaves in OSPF, 4 nodes each in its own AS peering with its leaf, pods via CNI; verify, then down"
(
  LAB="demo-ls-$$"
  trap '$TABBY lab down "$LAB" >/dev/null 2>&1 || true' EXIT
  $TABBY lab up examples/leaf-spine/topology.yaml --name "$LAB" | tail -3
  $TABBY lab verify "$LAB" --timeout 90
  $TABBY lab status "$LAB" | head -3
  echo "-- k-master's agent restarted while the client pings its web pod: graceful restart off (anchor), then on (the default)"
  $TABBY lab restart-agent "$LAB" k-master --ping-from client --ping-to k-master/web --compare-graceful-restart | tail -4
  $TABBY lab down "$LAB"
  trap - EXIT
  echo "-- namespaces of $LAB left: $(ip netns list | grep -c "^$LAB-" || true)"
)

# --- IPIP: this kernel has none, so in a VM with Debian's kernel ------------
echo "== ipip: pods on two nodes ping over tunl0 (proto tabby routes via the peer node onlink) inside a qemu VM with Debian's kernel; no network device leaves the VM"
cargo test -q --locked -p tabby-dataplane --test tunnels_vm 2>&1 \
  | grep -E '^vm:|tabby-guest: (check ipip|ipip ping|underlay n2 eth0: .*IP 10\.97)|^test result'
echo "== ipip in the agent: three nodes on two subnets, a pool with ipipMode CrossSubnet, programmed by the agent's own code (tunl0, the speaker's FIB rules) in the VM: native inside the subnet, tunl0 across"
cargo test -q --locked -p tabby-agent --test ipip_vm 2>&1 \
  | grep -E '^vm:|tabby-guest: (check|tunl0 n1|n1 routes)|guest\| 10\.98\.|^test result'
