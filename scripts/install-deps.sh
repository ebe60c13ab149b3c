#!/usr/bin/env bash
# Installs every system package tabby's build, tests, benchmarks and demo use.
# Idempotent; run as root on Debian 12 (bookworm). CI calls it from .ci/run.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

PKGS=(
  # build
  protobuf-compiler libprotobuf-dev pkg-config
  # C++ compiler for libfuzzer-sys (the fuzz/ crate)
  g++
  # namespaces, routes, NAT, captures
  iproute2 nftables iputils-ping procps psmisc tcpdump socat
  # real BGP peers for interop tests and the lab
  bird frr gobgpd exabgp
  # runtime libraries of BIRD 2, which is unpacked rather than installed
  libssh-gcrypt-4 libreadline8
  # distributed datastore backend
  etcd-server etcd-client
  # reference CNI plugins (ptp, host-local) for comparison benchmarks
  containernetworking-plugins
  # benchmarks
  hyperfine
)

$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null

# Packages install daemons that start by default; tabby's tests start their
# own instances in namespaces, so stop the system ones (ignore failures: no
# systemd in containers).
for svc in bird bird6 frr gobgpd exabgp etcd; do
  $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
done

# BIRD 2 conflicts with BIRD 1.6 (package `bird`), so unpack its .deb into
# /opt/bird2 instead of installing it. Binaries: /opt/bird2/usr/sbin/{bird,birdc}.
if [ ! -x /opt/bird2/usr/sbin/bird ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download bird2 >/dev/null)
  $SUDO dpkg -x "$tmp"/bird2_*.deb /opt/bird2
  rm -rf "$tmp"
fi

# `ip route` shows our routes as `proto tabby`.
$SUDO mkdir -p /etc/iproute2/rt_protos.d
echo "201 tabby" | $SUDO tee /etc/iproute2/rt_protos.d/tabby.conf >/dev/null

echo "install-deps: ok ($(bird --version 2>&1 | head -1); bird2 $(/opt/bird2/usr/sbin/bird --version 2>&1 | head -1); $(gobgpd --version 2>&1 | head -1); etcd $(etcd --version 2>&1 | head -1))"
