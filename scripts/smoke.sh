#!/usr/bin/env bash
# `make smoke`: the production set-up without Docker. PostgreSQL (password over TCP) and Redis (password, AOF,
# noeviction), the image's entrypoint commands (docker/entrypoint.sh: migrate, gunicorn with DJANGO_DEBUG=0,
# workers), the Nessus emulator; scans are submitted through the REST API. scripts/smoke_driver.py does the work;
# this script builds the network for "workers on several machines" and always takes it down again.
#
# Network (when `ip netns` is permitted; addresses from 198.18.0.0/15 only, chosen here):
#   root namespace: PostgreSQL, Redis, gunicorn
#   <w1>, <w2>: one worker each, linked to the root namespace by its own veth pair (its "core link")
#   <sa>, <sb>: one scanner zone each (an emulator), linked only to <w1> / <w2>; no forwarding anywhere,
#               so each worker reaches Redis, PostgreSQL and its own zone's scanner, and nothing else.
# Without netns (not root, no permission, or SMOKE_NETNS=off) that part is SKIPPED, loudly; the rest still runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

bash scripts/ensure-redis.sh
bash scripts/ensure-postgres.sh bindir >/dev/null

tag=$$
NS_W1="spw1-$tag" NS_W2="spw2-$tag" NS_SA="spsa-$tag" NS_SB="spsb-$tag"
made_ns=() made_links=()

cleanup_net() {
  local l ns
  for l in "${made_links[@]}"; do ip link del "$l" 2>/dev/null || true; done
  for ns in "${made_ns[@]}"; do
    # Nothing may outlive the smoke test inside a namespace (a worker or emulator left behind by a crash).
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
}
trap cleanup_net EXIT
trap 'exit 130' INT TERM

netns_ok=""
why=""
if [ "${SMOKE_NETNS:-auto}" = "off" ]; then
  why="SMOKE_NETNS=off"
elif [ "$(id -u)" != "0" ]; then
  why="not root"
elif ! command -v ip >/dev/null 2>&1; then
  why="no ip command (iproute2)"
elif ! ip netns add "spprobe-$tag" 2>/tmp/smoke-netns-$tag.err; then
  why="ip netns add failed: $(cat /tmp/smoke-netns-$tag.err)"
else
  ip netns del "spprobe-$tag"
  netns_ok=1
fi
rm -f "/tmp/smoke-netns-$tag.err"

# link NAME_HOST NS_A ADDR_A NS_B ADDR_B: a veth pair; an empty NS means the root namespace.
link() {
  local name=$1 ns_a=$2 addr_a=$3 ns_b=$4 addr_b=$5 peer="${1}p"
  ip link add "$name" type veth peer name "$peer"
  made_links+=("$name")
  if [ -n "$ns_a" ]; then ip link set "$name" netns "$ns_a"; fi
  ip link set "$peer" netns "$ns_b"
  ${ns_a:+ip netns exec "$ns_a"} ip addr add "$addr_a/30" dev "$name"
  ${ns_a:+ip netns exec "$ns_a"} ip link set "$name" up
  ip netns exec "$ns_b" ip addr add "$addr_b/30" dev "$peer"
  ip netns exec "$ns_b" ip link set "$peer" up
}

if [ -n "$netns_ok" ]; then
  for ns in "$NS_W1" "$NS_W2" "$NS_SA" "$NS_SB"; do
    ip netns add "$ns"
    made_ns+=("$ns")
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" sysctl -q -w net.ipv4.ip_forward=0
  done
  # A /23 whose core /24 no address of the root namespace uses yet (another make smoke running at the same
  # time, on this shared machine, keeps its own): core links in 198.18.<2n>.0/24, zone links in <2n+1>.
  core="" used=$(ip -4 -o addr show)
  for i in $(seq 0 127); do
    n=$(( (tag + i) % 128 ))
    if [[ "$used" != *"inet 198.18.$(( 2 * n ))."* ]]; then core=$(( 2 * n )); break; fi
  done
  [ -n "$core" ] || { echo "!! no free /23 left in 198.18.0.0/16 for the smoke test's links" >&2; exit 1; }
  zone=$(( core + 1 ))
  export SMOKE_CORE1="198.18.$core.1" SMOKE_W1="198.18.$core.2"
  export SMOKE_CORE2="198.18.$core.5" SMOKE_W2="198.18.$core.6"
  export SMOKE_W1_ZONE="198.18.$zone.1" SMOKE_SA="198.18.$zone.2"
  export SMOKE_W2_ZONE="198.18.$zone.5" SMOKE_SB="198.18.$zone.6"
  link "spc1-$tag" "" "$SMOKE_CORE1" "$NS_W1" "$SMOKE_W1"           # worker 1's core link (cut mid-scan)
  link "spc2-$tag" "" "$SMOKE_CORE2" "$NS_W2" "$SMOKE_W2"           # worker 2's core link
  link "spz1-$tag" "$NS_W1" "$SMOKE_W1_ZONE" "$NS_SA" "$SMOKE_SA"   # worker 1 <-> scanner zone a
  link "spz2-$tag" "$NS_W2" "$SMOKE_W2_ZONE" "$NS_SB" "$SMOKE_SB"   # worker 2 <-> scanner zone b
  export SMOKE_NS_W1="$NS_W1" SMOKE_NS_W2="$NS_W2" SMOKE_NS_SA="$NS_SA" SMOKE_NS_SB="$NS_SB"
  export SMOKE_CUT_LINK="spc1-$tag"
  echo ">> network namespaces $NS_W1 $NS_W2 (workers), $NS_SA $NS_SB (scanner zones), links in 198.18.$core.0/23"
  PG_LISTEN="127.0.0.1,$SMOKE_CORE1,$SMOKE_CORE2"
else
  echo "!! SKIPPED: workers on several machines (network namespaces): $why. Run make smoke as root to cover it." >&2
  export SMOKE_NETNS_SKIPPED="$why"
  PG_LISTEN="127.0.0.1"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/scanpool-smoke-XXXXXX")
trap 'cleanup_net; rm -rf "$work"' EXIT
( umask 077; $PY -c 'import secrets; print(secrets.token_urlsafe(24))' > "$work/postgres_password" )
export SMOKE_WORK="$work" PG_LISTEN PG_PASSWORD_FILE="$work/postgres_password"
# A cluster of its own even when SCANPOOL_TEST_DATABASE_URL is set: the smoke test needs TCP with a password.
env -u SCANPOOL_TEST_DATABASE_URL bash scripts/ensure-postgres.sh run $PY scripts/smoke_driver.py
