#!/usr/bin/env bash
# IPAM throughput and `ipam check` time, against SQLite and a real etcd
# (Debian's etcd-server, started here on free loopback ports), in one run:
#
#  1. one process per allocation, as a CNI runtime pays for it: the
#     reference `host-local` IPAM plugin (anchor) vs `tabby ipam assign`;
#  2. allocations/s inside one process for one node (`tabby ipam exercise`);
#  3. allocations/s of 8 processes at once (4 nodes, 2 processes each);
#  4. the time of `tabby ipam check` over CHECK_N allocations.
#
# Usage (as root):  bench/ipam.sh [EXEC_N] [ALLOC_N] [CHECK_N]
#                   defaults 300, 3000, 100000
set -euo pipefail
cd "$(dirname "$0")/.."

EXEC_N=${1:-300}
ALLOC_N=${2:-3000}
CHECK_N=${3:-100000}
REF=/usr/lib/cni

echo "== building tabby (release)"
BIN=$(./scripts/build-release.sh -q)   # the shipped, static-pie binary

tmp=$(mktemp -d)
EPID=""
cleanup() {
  if [ -n "$EPID" ]; then kill "$EPID" 2>/dev/null || true; wait "$EPID" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CP=$(free_port); PP=$(free_port)
etcd --name bench --data-dir "$tmp/etcd" \
  --listen-client-urls "http://127.0.0.1:$CP" --advertise-client-urls "http://127.0.0.1:$CP" \
  --listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
  --initial-cluster "bench=http://127.0.0.1:$PP" --quota-backend-bytes 8589934592 \
  >"$tmp/etcd.log" 2>&1 &
EPID=$!
for _ in $(seq 100); do
  ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$CP" endpoint health >/dev/null 2>&1 && break
  sleep 0.1
done

cat >"$tmp/pool.yaml" <<'EOF'
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: bench
spec:
  cidr: 10.128.0.0/12
  blockSize: 26
EOF

now_us() { echo "${EPOCHREALTIME/./}"; }
rate() { python3 -c "import sys; n,us=int(sys.argv[1]),int(sys.argv[2]); print(f'{n/(us/1e6):.0f}')" "$1" "$2"; }

declare -A URL
URL[sqlite]="sqlite://$tmp/bench.db"
URL[etcd]="etcd://127.0.0.1:$CP"
for b in sqlite etcd; do
  "$BIN" --datastore "${URL[$b]}" apply -f "$tmp/pool.yaml" >/dev/null
done

echo
echo "== 1. one process per allocation ($EXEC_N allocations each)"
conf="$tmp/host-local.json"
cat >"$conf" <<EOF
{"cniVersion":"1.0.0","name":"bench","ipam":{"type":"host-local","subnet":"10.200.0.0/16","dataDir":"$tmp/host-local"}}
EOF
t0=$(now_us)
for i in $(seq 1 "$EXEC_N"); do
  CNI_COMMAND=ADD CNI_CONTAINERID="c$i" CNI_NETNS=/var/run/netns/none CNI_IFNAME=eth0 CNI_PATH=$REF \
    "$REF/host-local" <"$conf" >/dev/null
done
t1=$(now_us)
HL=$(rate "$EXEC_N" $((t1 - t0)))
echo "host-local (anchor):            $HL allocations/s"
declare -A EXEC
for b in sqlite etcd; do
  t0=$(now_us)
  for i in $(seq 1 "$EXEC_N"); do
    "$BIN" --datastore "${URL[$b]}" ipam assign --node exec-node --handle "k8s-pod-network.exec$i" >/dev/null
  done
  t1=$(now_us)
  EXEC[$b]=$(rate "$EXEC_N" $((t1 - t0)))
  printf "tabby ipam assign, %-7s      %s allocations/s  (tabby/host-local = %s)\n" "$b:" "${EXEC[$b]}" \
    "$(python3 -c "print(f'{${EXEC[$b]}/$HL:.2f}')")"
done

echo
echo "== 2. one node, in one process ($ALLOC_N allocations)"
for b in sqlite etcd; do
  out=$("$BIN" --datastore "${URL[$b]}" ipam exercise --node single --count "$ALLOC_N" --tag single)
  printf "%-7s %s allocations/s\n" "$b:" "$(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['allocationsPerSecond']))" "$out")"
done

echo
echo "== 3. 8 processes at once (4 nodes x 2), $((ALLOC_N / 8)) allocations each"
for b in sqlite etcd; do
  pids=()
  t0=$(now_us)
  for p in $(seq 0 7); do
    "$BIN" --datastore "${URL[$b]}" ipam exercise --node "multi-$((p % 4))" \
      --count $((ALLOC_N / 8)) --tag "multi$p" >"$tmp/multi-$b-$p.json" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  t1=$(now_us)
  printf "%-7s %s allocations/s in total\n" "$b:" "$(rate $(((ALLOC_N / 8) * 8)) $((t1 - t0)))"
done

echo
echo "== 4. ipam check over $CHECK_N allocations"
for b in sqlite etcd; do
  have=$("$BIN" --datastore "${URL[$b]}" ipam check --skip-leaks | sed -n 's/.* handles, \([0-9]*\) allocated.*/\1/p')
  need=$((CHECK_N - have))
  if [ "$need" -gt 0 ]; then
    pids=()
    for p in $(seq 0 7); do
      "$BIN" --datastore "${URL[$b]}" ipam exercise --node "fill-$p" \
        --count $(((need + 7) / 8)) --tag "fill$p" >/dev/null &
      pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
  fi
  t0=$(now_us)
  out=$("$BIN" --datastore "${URL[$b]}" ipam check --skip-leaks)
  t1=$(now_us)
  allocs=$(echo "$out" | sed -n 's/.* handles, \([0-9]*\) allocated.*/\1/p')
  printf "%-7s %s allocations checked in %.2f s (%s)\n" "$b:" "$allocs" \
    "$(python3 -c "print($((t1 - t0))/1e6)")" "$(echo "$out" | tail -1)"
done
