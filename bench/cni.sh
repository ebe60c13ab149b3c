#!/usr/bin/env bash
# CNI ADD/DEL latency: tabby vs the reference `ptp` + `host-local` plugins
# (Debian's containernetworking-plugins, /usr/lib/cni), in one run.
#
# Usage (as root):  bench/cni.sh [PODS]        (default 60 pods per plugin)
#
# Everything happens inside namespaces this script makes and deletes: one
# "node" namespace per plugin (the plugin runs inside it, as a runtime on
# that node would run it) and one namespace per pod. Each ADD and DEL is one
# process start of the plugin, timed from fork to exit with bash's
# EPOCHREALTIME, exactly as a runtime pays for it. Prints median and p90 of
# ADD and DEL for both and the ratios tabby/ptp.
#
# tabby runs twice, each time on a fresh datastore and fresh namespaces:
# - "tabby (direct)": the plugin does all the work itself (no service);
# - "tabby (service)": `tabby cni serve` runs inside the node namespace
#   (started before the first ADD, as the node agent would be), and each
#   plugin process forwards its request to it over a Unix socket. Every ADD
#   and DEL is still one process start of the plugin, timed the same way;
#   the service keeps the datastore open between requests, nothing else is
#   prepared in advance.
set -euo pipefail
cd "$(dirname "$0")/.."

PODS=${1:-60}
REF=/usr/lib/cni
[ -x "$REF/ptp" ] && [ -x "$REF/host-local" ] || { echo "need $REF/ptp and $REF/host-local (containernetworking-plugins)" >&2; exit 1; }

# --- one plugin's run, executed inside its node namespace -----------------
if [ "${1:-}" = "__inner" ]; then
  shift
  label=$1 plugin=$2 conf=$3 out=$4 prefix=$5 n=$6 socket=$7
  export CNI_IFNAME=eth0 CNI_PATH=$REF TABBY_CNI_SOCKET=$socket
  if [ "$socket" != off ]; then
    # The node's CNI service, in this (the node's) namespace.
    "$plugin" cni serve --socket "$socket" 2>"$out.service.log" &
    service_pid=$!
    trap 'kill $service_pid 2>/dev/null || true' EXIT
    for _ in $(seq 1 250); do [ -S "$socket" ] && break; sleep 0.02; done
    [ -S "$socket" ] || { echo "tabby cni serve did not start: $(cat "$out.service.log")" >&2; exit 1; }
  fi
  run() { # run CMD ID NETNS -> appends microseconds to $out.CMD
    local cmd=$1 id=$2 ns=$3 t0 t1 rc=0
    t0=$EPOCHREALTIME
    CNI_COMMAND=$cmd CNI_CONTAINERID=$id CNI_NETNS=$ns "$plugin" <"$conf" >"$out.last" 2>"$out.err" || rc=$?
    t1=$EPOCHREALTIME
    if [ $rc -ne 0 ]; then
      echo "$label $cmd $id failed ($rc): $(cat "$out.last" "$out.err")" >&2; exit 1
    fi
    echo $(( ${t1/./} - ${t0/./} )) >>"$out.$cmd"
  }
  for i in $(seq 1 "$n"); do run ADD "bench$i" "/var/run/netns/$prefix-$i"; done
  for i in $(seq 1 "$n"); do run DEL "bench$i" "/var/run/netns/$prefix-$i"; done
  exit 0
fi

echo "== building tabby (release)"
TABBY=$(./scripts/build-release.sh)   # the shipped, static-pie binary

WORK=$(mktemp -d /tmp/tabby-bench-cni.XXXXXX)
TAG=tby-bcni-$$
NAMESPACES=()
cleanup() {
  for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

mkns() { ip netns add "$1"; NAMESPACES+=("$1"); ip -n "$1" link set lo up; }

# quantile FILE Q -> the value at quantile Q (nearest rank), in ms
quantile() {
  sort -n "$1" | awk -v q="$2" '{v[NR]=$1} END {i=int(q*NR+0.999999); if (i<1) i=1; printf "%.2f", v[i]/1000}'
}

bench() { # bench LABEL PLUGIN CONF [SOCKET]
  local label=$1 plugin=$2 conf=$3 node=$TAG-$1 prefix=$TAG-$1-pod socket=${4:-off}
  mkns "$node"
  for i in $(seq 1 "$PODS"); do mkns "$prefix-$i"; done
  ip netns exec "$node" "$0" __inner "$label" "$plugin" "$conf" "$WORK/$label" "$prefix" "$PODS" "$socket"
}

# --- the anchor: ptp + host-local -----------------------------------------
cat >"$WORK/ptp.conf" <<JSON
{"cniVersion": "1.0.0", "name": "bench", "type": "ptp", "ipMasq": false, "mtu": 1500,
 "ipam": {"type": "host-local", "subnet": "10.244.0.0/16", "dataDir": "$WORK/host-local",
          "routes": [{"dst": "0.0.0.0/0"}]}}
JSON

# --- tabby: a SQLite datastore with one pool per run ----------------------
tabby_store() { # tabby_store LABEL: a fresh datastore and its configuration
  local ds="sqlite://$WORK/$1.db"
  cat >"$WORK/$1.conf" <<JSON
{"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tabby", "nodename": "bench-node",
 "datastore": "$ds", "mtu": 1500, "ipam": {"type": "tabby-ipam"}}
JSON
  cat >"$WORK/pool.yaml" <<YAML
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: bench-pool
spec:
  cidr: 10.245.0.0/16
  blockSize: 26
YAML
  "$TABBY" --datastore "$ds" apply -f "$WORK/pool.yaml" >/dev/null
}

echo "== $PODS pods per plugin, ADD then DEL, one process per call"
bench ptp "$REF/ptp" "$WORK/ptp.conf"
tabby_store direct
bench direct "$TABBY" "$WORK/direct.conf"
tabby_store service
echo "== tabby (service): tabby cni serve started inside the node namespace before the first ADD"
bench service "$TABBY" "$WORK/service.conf" "$WORK/cni.sock"

printf '\n%-26s %10s %10s %10s %10s\n' plugin "ADD p50" "ADD p90" "DEL p50" "DEL p90"
for l in ptp direct service; do
  [ -f "$WORK/$l.ADD" ] || continue
  case $l in
    ptp) name="ptp + host-local (ref)" ;;
    *) name="tabby ($l)" ;;
  esac
  printf '%-26s %8s ms %7s ms %7s ms %7s ms\n' "$name" \
    "$(quantile "$WORK/$l.ADD" 0.5)" "$(quantile "$WORK/$l.ADD" 0.9)" \
    "$(quantile "$WORK/$l.DEL" 0.5)" "$(quantile "$WORK/$l.DEL" 0.9)"
done
ratio() { awk -v a="$(quantile "$WORK/$1.$2" "$3")" -v b="$(quantile "$WORK/ptp.$2" "$3")" 'BEGIN {printf "%.2f", a/b}'; }
echo
for l in direct service; do
  [ -f "$WORK/$l.ADD" ] || continue
  printf 'tabby (%s)/ptp ratio: ADD p50 %s  ADD p90 %s  DEL p50 %s  DEL p90 %s   (goal: ADD p50 < 0.33)\n' "$l" \
    "$(ratio $l ADD 0.5)" "$(ratio $l ADD 0.9)" "$(ratio $l DEL 0.5)" "$(ratio $l DEL 0.9)"
done
