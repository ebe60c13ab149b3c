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
  # the lab: a client fetching from a web server in a pod (python3 serves)
  curl python3
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
  # the guest userland of the VM tests (crates/testbed vm)
  busybox-static
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

# The VM tests (crates/testbed `vm`) boot Debian's own kernel under qemu,
# because the host kernel may lack what a test needs (no CONFIG_NET_IPIP
# here). Both are unpacked under /opt/tabby-vm rather than installed:
# - the kernel package that linux-image-amd64 currently depends on
#   (boot/vmlinuz-*, boot/config-*, lib/modules/*; nothing is booted on the
#   host);
# - qemu-system-x86 with its firmware (qemu-system-common/-data, seabios),
#   because installing it would remove a newer qemu-utils some images carry.
#   Its shared libraries are installed normally.
VM=/opt/tabby-vm
if ! ls "$VM"/boot/vmlinuz-* >/dev/null 2>&1; then
  kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download "$kpkg" >/dev/null 2>&1)
  $SUDO dpkg -x "$tmp"/linux-image-*.deb "$VM"
  rm -rf "$tmp"
fi
for opt in CONFIG_NET_IPIP CONFIG_VXLAN CONFIG_VETH; do
  grep -q "^$opt=[my]" "$VM"/boot/config-* || { echo "install-deps: guest kernel lacks $opt" >&2; exit 1; }
done
QEMU_PKGS=(qemu-system-x86 qemu-system-common qemu-system-data seabios)
mapfile -t QEMU_LIBS < <(apt-cache depends qemu-system-x86 | awk '/^  Depends: lib/{print $2}')
$SUDO apt-get install -y -qq --no-install-recommends "${QEMU_LIBS[@]}" >/dev/null
if [ ! -x "$VM"/qemu/usr/bin/qemu-system-x86_64 ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download "${QEMU_PKGS[@]}" >/dev/null 2>&1)
  for deb in "$tmp"/*.deb; do $SUDO dpkg -x "$deb" "$VM"/qemu; done
  rm -rf "$tmp"
fi

# `ip route` shows our routes as `proto tabby`.
$SUDO mkdir -p /etc/iproute2/rt_protos.d
echo "201 tabby" | $SUDO tee /etc/iproute2/rt_protos.d/tabby.conf >/dev/null

echo "install-deps: ok ($(bird --version 2>&1 | head -1); bird2 $(/opt/bird2/usr/sbin/bird --version 2>&1 | head -1); $(gobgpd --version 2>&1 | head -1); etcd $(etcd --version 2>&1 | head -1); guest kernel $(ls "$VM"/boot | sed -n 's/^vmlinuz-//p'); $("$VM"/qemu/usr/bin/qemu-system-x86_64 --version | head -1))"
