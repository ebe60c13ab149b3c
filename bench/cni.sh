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
set -euo pipefail
cd "$(dirname "$0")/.."

PODS=${1:-60}
REF=/usr/lib/cni
[ -x "$REF/ptp" ] && [ -x "$REF/host-local" ] || { echo "need $REF/ptp and $REF/host-local (containernetworking-plugins)" >&2; exit 1; }

# --- one plugin's run, executed inside its node namespace -----------------
if [ "${1:-}" = "__inner" ]; then
  shift
  label=$1 plugin=$2 conf=$3 out=$4 prefix=$5 n=$6
  export CNI_IFNAME=eth0 CNI_PATH=$REF
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
cargo build --release --locked -p tabby
TABBY=$PWD/target/release/tabby

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

bench() { # bench LABEL PLUGIN CONF
  local label=$1 plugin=$2 conf=$3 node=$TAG-$1 prefix=$TAG-$1-pod
  mkns "$node"
  for i in $(seq 1 "$PODS"); do mkns "$prefix-$i"; done
  ip netns exec "$node" "$0" __inner "$label" "$plugin" "$conf" "$WORK/$label" "$prefix" "$PODS"
}

# --- the anchor: ptp + host-local -----------------------------------------
cat >"$WORK/ptp.conf" <<JSON
{"cniVersion": "1.0.0", "name": "bench", "type": "ptp", "ipMasq": false, "mtu": 1500,
 "ipam": {"type": "host-local", "subnet": "10.244.0.0/16", "dataDir": "$WORK/host-local",
          "routes": [{"dst": "0.0.0.0/0"}]}}
JSON

# --- tabby: SQLite datastore with one pool ----------------------------------
DS="sqlite://$WORK/tabby.db"
cat >"$WORK/tabby.conf" <<JSON
{"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tabby", "nodename": "bench-node",
 "datastore": "$DS", "mtu": 1500, "ipam": {"type": "tabby-ipam"}}
JSON

echo "== $PODS pods per plugin, ADD then DEL, one process per call"
bench ptp "$REF/ptp" "$WORK/ptp.conf"
cat >"$WORK/pool.yaml" <<YAML
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: bench-pool
spec:
  cidr: 10.245.0.0/16
  blockSize: 26
YAML
"$TABBY" --datastore "$DS" apply -f "$WORK/pool.yaml" >/dev/null
bench tabby "$TABBY" "$WORK/tabby.conf"

printf '\n%-26s %10s %10s %10s %10s\n' plugin "ADD p50" "ADD p90" "DEL p50" "DEL p90"
for l in ptp tabby; do
  [ -f "$WORK/$l.ADD" ] || continue
  name=$l; [ $l = ptp ] && name="ptp + host-local (ref)"
  printf '%-26s %8s ms %7s ms %7s ms %7s ms\n' "$name" \
    "$(quantile "$WORK/$l.ADD" 0.5)" "$(quantile "$WORK/$l.ADD" 0.9)" \
    "$(quantile "$WORK/$l.DEL" 0.5)" "$(quantile "$WORK/$l.DEL" 0.9)"
done
if [ -f "$WORK/tabby.ADD" ]; then
  ratio() { awk -v a="$(quantile "$WORK/tabby.$1" "$2")" -v b="$(quantile "$WORK/ptp.$1" "$2")" 'BEGIN {printf "%.2f", a/b}'; }
  echo
  echo "tabby/ptp ratio: ADD p50 $(ratio ADD 0.5)  ADD p90 $(ratio ADD 0.9)  DEL p50 $(ratio DEL 0.5)  DEL p90 $(ratio DEL 0.9)   (goal: ADD p50 < 0.33)"
fi
