//! Real `tabby agent`s with an IPIP pool, end to end, in a VM with
//! Debian's kernel (this machine's kernel has no IPIP).
//!
//! The guest is a shell script run by the VM's busybox: two node
//! namespaces on two subnets joined by a router namespace that has no pod
//! routes, one SQLite datastore file, `tabby apply` of a pool with
//! `ipipMode: CrossSubnet`, the real `tabby agent` in each node (mesh
//! across the router), a pod on each through the real CNI plugin. The
//! agents must allocate tunnel addresses, bring `tunl0` up and install
//! each other's block `via <node> dev tunl0 onlink`; the pods must ping
//! each other (only IPIP can carry it: the router does not know the pod
//! blocks) with tunl0's counters moving; `tabby ipam check` must be clean.
//! Each step prints `tabby-guest: check NAME ok`; the host asserts them.

use std::process::Command;
use std::time::Duration;

use tabby_testbed::vm::{Kernel, Vm};

const TABBY: &str = env!("CARGO_BIN_EXE_tabby");

const CHECKS: &[&str] = &[
    "agents-running",
    "tunnel-addresses",
    "tunl0-up",
    "routes-via-tunl0",
    "pod-ping-over-ipip",
    "tunl0-counters",
    "ipam-check",
];

const GUEST: &str = r#"
T=/usr/local/bin/tabby
# busybox sh runs its own applets first: iproute2 (netns) by path.
IP=/usr/sbin/ip
DS=sqlite:///tmp/tabby.db
ok() { echo "tabby-guest: check $1 ok"; }
fail() {
  echo "tabby-guest: FAILED $1"
  for n in n1 n2; do
    echo "--- $n routes"; "$IP" -n $n route; echo "--- $n links"; "$IP" -n $n -d link
    echo "--- $n log"; tail -n 40 /tmp/$n.log
  done
  exit 1
}
wait_for() { # wait_for SECONDS COMMAND...: until the command succeeds
  s=$1; shift
  i=0
  while [ $i -lt $(($s * 5)) ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; i=$((i + 1)); done
  return 1
}
for ns in r n1 n2 p1 p2; do "$IP" netns add $ns; "$IP" -n $ns link set lo up; done
"$IP" link add eth0 netns n1 type veth peer name e1 netns r
"$IP" link add eth0 netns n2 type veth peer name e2 netns r
"$IP" -n r addr add 172.16.7.254/24 dev e1; "$IP" -n r link set e1 up
"$IP" -n r addr add 172.16.8.254/24 dev e2; "$IP" -n r link set e2 up
"$IP" -n n1 addr add 172.16.7.1/24 dev eth0; "$IP" -n n1 link set eth0 up
"$IP" -n n2 addr add 172.16.8.2/24 dev eth0; "$IP" -n n2 link set eth0 up
"$IP" -n n1 route add default via 172.16.7.254
"$IP" -n n2 route add default via 172.16.8.254
"$IP" netns exec r sysctl -w net.ipv4.ip_forward=1 >/dev/null
printf 'apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: pods}\nspec: {cidr: 10.95.0.0/16, ipipMode: CrossSubnet}\n' \
  | $T --datastore $DS apply -f - || fail apply
for i in 1 2; do
  ip="172.16.7.1"; [ $i = 2 ] && ip="172.16.8.2"
  "$IP" netns exec n$i $T --datastore $DS --log info agent --nodename n$i --ip $ip/24 \
    --control-socket /tmp/n$i.sock --state-dir /tmp/n$i --cni-socket off --no-nat --poll-ms 200 \
    >/dev/null 2>/tmp/n$i.log &
done
sleep 1
for i in 1 2; do
  CONF='{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"tabby","datastore":"sqlite:///tmp/tabby.db","nodename":"n'$i'","ipam":{"type":"tabby-ipam"}}'
  echo "$CONF" | "$IP" netns exec n$i env CNI_COMMAND=ADD CNI_CONTAINERID=pod$i CNI_NETNS=/var/run/netns/p$i \
    CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin TABBY_CNI_SOCKET=/nonexistent $T > /tmp/p$i.json || fail "cni add $i"
done
P2=$(sed -e 's/.*"address":"\([0-9.]*\)\/32".*/\1/' /tmp/p2.json)
echo "tabby-guest: pod 2 is $P2"
[ -n "$("$IP" netns pids n1)" ] && [ -n "$("$IP" netns pids n2)" ] || fail agents-running
ok agents-running
has_tunnel_addr() { $T --datastore $DS get node "$1" -o yaml | grep -q ipv4IPIPTunnelAddr; }
wait_for 120 has_tunnel_addr n1 && wait_for 120 has_tunnel_addr n2 || fail tunnel-addresses
$T --datastore $DS get nodes -o yaml | grep -E '^ *name:|ipv4IPIPTunnelAddr' | sed 's/^/tabby-guest: /'
ok tunnel-addresses
tunl_up() { "$IP" -n "$1" addr show tunl0 | grep -q 'inet 10\.95\.'; }
wait_for 60 tunl_up n1 && wait_for 60 tunl_up n2 || fail tunl0-up
ok tunl0-up
via_tunl0() { "$IP" -n "$1" route show proto 201 | grep -q "via $2 dev tunl0 onlink"; }
wait_for 180 via_tunl0 n1 172.16.8.2 && wait_for 180 via_tunl0 n2 172.16.7.1 || fail routes-via-tunl0
"$IP" -n n1 route show proto 201 | sed 's/^/tabby-guest: n1 route: /'
ok routes-via-tunl0
TX0=$(cat /proc/net/dev >/dev/null; "$IP" netns exec n1 cat /sys/class/net/tunl0/statistics/tx_packets)
RX0=$("$IP" netns exec n2 cat /sys/class/net/tunl0/statistics/rx_packets)
"$IP" netns exec p1 ping -c 3 -W 2 "$P2" | sed 's/^/tabby-guest: /'
"$IP" netns exec p1 ping -c 1 -W 2 "$P2" >/dev/null || fail pod-ping-over-ipip
ok pod-ping-over-ipip
TX1=$("$IP" netns exec n1 cat /sys/class/net/tunl0/statistics/tx_packets)
RX1=$("$IP" netns exec n2 cat /sys/class/net/tunl0/statistics/rx_packets)
echo "tabby-guest: tunl0 n1 tx $TX0 -> $TX1, n2 rx $RX0 -> $RX1"
[ $((TX1 - TX0)) -ge 4 ] && [ $((RX1 - RX0)) -ge 4 ] || fail tunl0-counters
ok tunl0-counters
$T --datastore $DS ipam check > /tmp/check.txt 2>&1
sed 's/^/tabby-guest: /' /tmp/check.txt
grep -q 'Found 0 problems.' /tmp/check.txt || fail ipam-check
ok ipam-check
echo "tabby-guest: all passed"
"#;

#[test]
fn agents_route_an_ipip_cross_subnet_pool_through_tunl0_in_a_vm() {
    let kernel = Kernel::installed().expect("guest kernel (scripts/install-deps.sh unpacks it)");
    let dir = tempfile::tempdir().expect("tempdir");
    // The debug binary carries ~200 MB of debug info; the guest holds its
    // files in RAM.
    let tabby = dir.path().join("tabby");
    let stripped = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(TABBY)
        .arg(&tabby)
        .status()
        .expect("objcopy (binutils)");
    assert!(stripped.success(), "objcopy --strip-debug failed");
    let script = dir.path().join("guest.sh");
    std::fs::write(&script, GUEST).expect("write the guest script");
    let ip = tabby_testbed::vm::host_ip().expect("iproute2 ip");
    let run = Vm::new(kernel)
        .module("ipip")
        .module("veth")
        .program(&tabby, "/usr/local/bin/tabby")
        .program(ip, "/usr/sbin/ip")
        .file(&script, "/guest.sh")
        .command(["sh", "/guest.sh"])
        .memory_mib(1024)
        .timeout(Duration::from_secs(600))
        .run()
        .unwrap_or_else(|e| panic!("the VM did not run the guest: {e}"));
    println!(
        "vm: accel {} ({}), guest done at {:.2?}",
        run.accel, run.accel_reason, run.total_time
    );
    run.assert_checks_passed(CHECKS.iter().copied());
    assert!(
        run.output
            .lines()
            .any(|l| l.contains("via 172.16.8.2 dev tunl0 onlink")),
        "{}",
        run.output
    );
}
