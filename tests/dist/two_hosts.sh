#!/usr/bin/env bash
# Runs a program as 2 MPI ranks on two "hosts": network namespaces joined by a veth pair
# (10.99.R.1 and 10.99.R.2, private test addresses), MPI over TCP between them, one rank in each.
# mpirun starts in the first namespace and reaches the second through an rsh agent that is
# `ip netns exec`. The namespaces and the link are removed on exit. Needs root and iproute2;
# exits 77 (ctest: skipped) when namespaces cannot be made here.
# Usage: tests/dist/two_hosts.sh PROGRAM [ARGS...]     (ctest: DistTrainer.TwoHostsOverTcp)
set -uo pipefail
tag="ql$$"
a="${tag}a" b="${tag}b"
net="10.99.$(( $$ % 250 + 1 ))"
work="$(mktemp -d)"
cleanup() { ip netns del "$a" 2>/dev/null; ip netns del "$b" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
if ! ip netns add "$a" 2>/dev/null || ! ip netns add "$b" 2>/dev/null; then
  echo "two_hosts: cannot create network namespaces here (needs root and iproute2): skipped"
  exit 77
fi
ip link add "${tag}va" type veth peer name "${tag}vb" &&
  ip link set "${tag}va" netns "$a" && ip link set "${tag}vb" netns "$b" &&
  ip netns exec "$a" ip addr add "$net.1/24" dev "${tag}va" &&
  ip netns exec "$b" ip addr add "$net.2/24" dev "${tag}vb" &&
  ip netns exec "$a" ip link set lo up && ip netns exec "$b" ip link set lo up &&
  ip netns exec "$a" ip link set "${tag}va" up && ip netns exec "$b" ip link set "${tag}vb" up ||
  { echo "two_hosts: cannot set up the veth link: skipped"; exit 77; }
cat > "$work/agent.sh" <<AGENT
#!/bin/sh
# mpirun's rsh agent: "agent.sh HOST COMMAND..." runs COMMAND in HOST's namespace.
host="\$1"; shift
case "\$host" in
  $net.1) ns=$a ;;
  $net.2) ns=$b ;;
  *) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" sh -c "\$*"
AGENT
chmod +x "$work/agent.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
timeout 300 ip netns exec "$a" mpirun --host "$net.1,$net.2" -np 2 --mca plm_rsh_agent "$work/agent.sh" \
  --mca btl tcp,self --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24" \
  -x OMP_NUM_THREADS=1 -x ASAN_OPTIONS=detect_leaks=0 "$@"
