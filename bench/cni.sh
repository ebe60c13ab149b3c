#!/usr/bin/env bash
# CNI ADD/DEL latency: tabby vs the reference `ptp` + `host-local` plugins
# (Debian's containernetworking-plugins, /usr/lib/cni), in one run.
#
# Usage (as root):  bench/cni.sh [PODS]        (default 60 pods per plugin)
#
# Everything happens inside namespaces this script makes and deletes: one
# "node" namespace (the plugins run inside it, as a runtime on that node
# would run them) and one namespace per pod. Each ADD and DEL is one
# process start of the plugin, timed from fork to exit with bash's
# EPOCHREALTIME, exactly as a runtime pays for it. Prints median and p90 of
# ADD and DEL for each and the ratios tabby/ptp.
#
# Three plugins side by side, call by call: pod i is added by ptp, by tabby
# direct and by tabby via the service, in an order that rotates with i (and
# the same for DEL), so that whatever else the machine does at a moment
# falls on all three alike.
# - "ptp + host-local": the anchor;
# - "tabby (direct)": the plugin process does all the work itself
#   (TABBY_CNI_SOCKET=off);
# - "tabby (service)": `tabby cni serve` runs inside the node namespace
#   (started before the first ADD, as the node agent would be), and each
#   plugin process forwards its request to it over a Unix socket. Every ADD
#   and DEL is still one process start of the plugin, timed the same way;
#   the service keeps the datastore open between requests, nothing else is
#   prepared in advance.
# The two tabby runs have datastores and pools of their own, ptp its own
# subnet; all three have their own pod namespaces and container ids (the
# host veth is named from the container id).
set -euo pipefail
cd "$(dirname "$0")/.."

PODS=${1:-60}
REF=/usr/lib/cni
LABELS=(ptp direct service)
[ -x "$REF/ptp" ] && [ -x "$REF/host-local" ] || { echo "need $REF/ptp and $REF/host-local (containernetworking-plugins)" >&2; exit 1; }

# --- the timed calls, executed inside the node namespace --------------------
if [ "${1:-}" = "__inner" ]; then
  shift
  work=$1 prefix=$2 n=$3 tabby=$4
  export CNI_IFNAME=eth0 CNI_PATH=$REF
  # The node's CNI service, in this (the node's) namespace.
  "$tabby" cni serve --socket "$work/cni.sock" 2>"$work/service.log" &
  service_pid=$!
  trap 'kill $service_pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 250); do [ -S "$work/cni.sock" ] && break; sleep 0.02; done
  [ -S "$work/cni.sock" ] || { echo "tabby cni serve did not start: $(cat "$work/service.log")" >&2; exit 1; }
  run() { # run LABEL CMD I -> appends microseconds to $work/LABEL.CMD
    local label=$1 cmd=$2 i=$3 plugin socket t0 t1 rc=0
    case $label in
      ptp) plugin=$REF/ptp socket=off ;;
      direct) plugin=$tabby socket=off ;;
      service) plugin=$tabby socket=$work/cni.sock ;;
    esac
    t0=$EPOCHREALTIME
    TABBY_CNI_SOCKET=$socket CNI_COMMAND=$cmd CNI_CONTAINERID="$label$i" \
      CNI_NETNS="/var/run/netns/$prefix-$label-$i" "$plugin" <"$work/$label.conf" >"$work/last" 2>"$work/err" || rc=$?
    t1=$EPOCHREALTIME
    if [ $rc -ne 0 ]; then
      echo "$label $cmd $label$i failed ($rc): $(cat "$work/last" "$work/err")" >&2; exit 1
    fi
    echo $(( ${t1/./} - ${t0/./} )) >>"$work/$label.$cmd"
  }
  for cmd in ADD DEL; do
    for i in $(seq 1 "$n"); do
      for k in 0 1 2; do run "${LABELS[$(( (i + k) % 3 ))]}" "$cmd" "$i"; done
    done
  done
  exit 0
fi

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

# --- the anchor: ptp + host-local -----------------------------------------
cat >"$WORK/ptp.conf" <<JSON
{"cniVersion": "1.0.0", "name": "bench", "type": "ptp", "ipMasq": false, "mtu": 1500,
 "ipam": {"type": "host-local", "subnet": "10.244.0.0/16", "dataDir": "$WORK/host-local",
          "routes": [{"dst": "0.0.0.0/0"}]}}
JSON

# --- tabby: a SQLite datastore with a pool of its own per run --------------
tabby_store() { # tabby_store LABEL CIDR: a fresh datastore and its configuration
  local ds="sqlite://$WORK/$1.db"
  cat >"$WORK/$1.conf" <<JSON
{"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tabby", "nodename": "bench-node",
 "datastore": "$ds", "mtu": 1500, "ipam": {"type": "tabby-ipam"}}
JSON
  "$TABBY" --datastore "$ds" apply -f - >/dev/null <<YAML
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: bench-pool
spec:
  cidr: $2
  blockSize: 26
YAML
}
tabby_store direct 10.245.0.0/16
tabby_store service 10.246.0.0/16

node=$TAG-node prefix=$TAG-pod
mkns "$node"
for l in "${LABELS[@]}"; do
  for i in $(seq 1 "$PODS"); do mkns "$prefix-$l-$i"; done
done
echo "== $PODS pods per plugin, ADD then DEL, one process per call, the three plugins interleaved"
ip netns exec "$node" "$0" __inner "$WORK" "$prefix" "$PODS" "$TABBY"

printf '\n%-26s %10s %10s %10s %10s\n' plugin "ADD p50" "ADD p90" "DEL p50" "DEL p90"
for l in "${LABELS[@]}"; do
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
  printf 'tabby (%s)/ptp ratio: ADD p50 %s  ADD p90 %s  DEL p50 %s  DEL p90 %s   (goal: ADD p50 < 0.33)\n' "$l" \
    "$(ratio $l ADD 0.5)" "$(ratio $l ADD 0.9)" "$(ratio $l DEL 0.5)" "$(ratio $l DEL 0.9)"
done
