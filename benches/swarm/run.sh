#!/usr/bin/env bash
# One swarm of real shoal processes, each host in its own network namespace,
# joined by a bridge, with per-host upload and download caps (tc tbf), an
# opentracker in a namespace of its own, one seeder and N leechers. Prints a
# per-peer table and, last, exactly:
#   swarm: client=shoal N=<n> T=<s>s T*=<s>s ratio=<r>
# T: first leecher start -> last leecher verified done. T* (fluid lower bound)
# = max(F/u_s, F/min d_i, N*F/(u_s + sum u_i)).
#
#   bash benches/swarm/run.sh --leechers N --size BYTES --seed-up RATE \
#        --up RATE[,RATE...] --down RATE [--client shoal] [--free-riders K] \
#        [--timeout SECONDS] [--keep DIR]
#
# RATE is tc's syntax (8mbit, 500kbit); BYTES takes k/M/G (powers of 1024).
# Needs root, iproute2 (ip netns, tc) and opentracker. Everything it creates
# (namespaces named shsw<pid>-*, files) is removed at exit, on Ctrl-C and on
# failure; the run is bounded by --timeout. The hosts use 10.213.0.0/16,
# which exists only inside these namespaces. No latency is added: this
# kernel has no netem, so links differ only in rate.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
N=6 SIZE=8M SEED_UP=16mbit UP=8mbit DOWN=100mbit CLIENT=shoal FREE=0 TIMEOUT=300 KEEP=
while [ $# -gt 0 ]; do
  case "$1" in
    --leechers) N=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --seed-up) SEED_UP=$2; shift 2 ;;
    --up) UP=$2; shift 2 ;;
    --down) DOWN=$2; shift 2 ;;
    --client) CLIENT=$2; shift 2 ;;
    --free-riders) FREE=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "swarm: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$CLIENT" = shoal ] || { echo "swarm: only --client shoal is implemented so far" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "swarm: needs root (network namespaces)" >&2; exit 1; }
for p in ip tc opentracker python3; do
  command -v "$p" >/dev/null || { echo "swarm: $p is missing (bash .ci/deps installs it)" >&2; exit 1; }
done

bytes() { # 8M -> 8388608
  python3 -c "import re,sys
m=re.fullmatch(r'(\d+)([kKmMgG]?)(i?B)?',sys.argv[1]) or sys.exit('bad size '+sys.argv[1])
print(int(m[1])*{'':1,'k':1<<10,'m':1<<20,'g':1<<30}[m[2].lower()])" "$1"
}
bits_per_s() { # 8mbit -> 8000000 (tc: k/m/g are powers of 1000)
  python3 -c "import re,sys
m=re.fullmatch(r'(\d+(?:\.\d+)?)([kmg]?)(bit|bps)',sys.argv[1].lower()) or sys.exit('bad rate '+sys.argv[1])
v=float(m[1])*{'':1,'k':1e3,'m':1e6,'g':1e9}[m[2]]
print(int(v*8 if m[3]=='bps' else v))" "$1"
}
F=$(bytes "$SIZE")
IFS=, read -r -a UPS <<<"$UP"

tag=shsw$$
work=$(mktemp -d /tmp/$tag.XXXX)
chmod 755 "$work"
pids=()
spaces=()
cleanup() {
  # Every process in our namespaces (a leecher's shoal runs under a
  # subshell whose own PID is all that $! gave), then the ones we started.
  for s in "${spaces[@]}"; do
    ip netns pids "$s" 2>/dev/null | xargs -r kill 2>/dev/null || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for s in "${spaces[@]}"; do
    ip netns pids "$s" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for s in "${spaces[@]}"; do ip netns del "$s" 2>/dev/null || true; done
  if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp -r "$work"/. "$KEEP"/; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# SHOAL_BIN: a binary to use (the tests pass their own); else the release
# build, rebuilt when the sources are newer.
bin=${SHOAL_BIN:-$root/target/release/shoal}
if [ -z "${SHOAL_BIN:-}" ] && { [ ! -x "$bin" ] || [ -n "$(find "$root/src" -newer "$bin" -name '*.rs' | head -1)" ]; }; then
  (cd "$root" && cargo build --release --quiet)
fi

br=$tag-br
ip netns add "$br"; spaces+=("$br")
ip -n "$br" link add br0 type bridge
ip -n "$br" link set br0 up
n_host=0
# host NAME UP DOWN: a namespace on the bridge, eth0 = 10.213.0.<n>, its
# address left in $ip_of (not printed: a subshell would lose the bookkeeping).
host() {
  local name=$tag-$1 up=$2 down=$3
  n_host=$((n_host + 1))
  ip netns add "$name"; spaces+=("$name")
  ip link add "v$n_host$tag" netns "$name" type veth peer name "b$n_host" netns "$br"
  ip -n "$name" link set "v$n_host$tag" name eth0
  ip -n "$name" addr add "10.213.0.$n_host/16" dev eth0
  ip -n "$name" link set eth0 up
  ip -n "$name" link set lo up
  ip -n "$br" link set "b$n_host" master br0
  ip -n "$br" link set "b$n_host" up
  # Egress of eth0 is the host's upload; egress of its bridge port, its download.
  ip netns exec "$name" tc qdisc add dev eth0 root tbf rate "$up" burst 64kb latency 200ms
  ip netns exec "$br" tc qdisc add dev "b$n_host" root tbf rate "$down" burst 64kb latency 200ms
  ip_of="10.213.0.$n_host"
}

host tracker 1gbit 1gbit; tracker_ip=$ip_of
host seed "$SEED_UP" "$DOWN"
declare -a lips
for i in $(seq 1 "$N"); do
  u=${UPS[$(( (i - 1) % ${#UPS[@]} ))]}
  [ "$i" -le "$FREE" ] && u=8kbit
  host "l$i" "$u" "$DOWN"; lips[$i]=$ip_of
done

# Data and torrent.
mkdir -p "$work/src"
head -c "$F" /dev/urandom >"$work/src/data.bin"
"$bin" create "$work/src/data.bin" -o "$work/t.torrent" -t "http://$tracker_ip:6969/announce" --force >/dev/null
hash=$("$bin" info "$work/t.torrent" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["info_hash"])')
echo "$hash" >"$work/whitelist"
chmod 644 "$work/whitelist"
printf 'listen.tcp_udp %s:6969\naccess.whitelist %s\n' "$tracker_ip" "$work/whitelist" >"$work/ot.conf"
ip netns exec "$tag-tracker" opentracker -f "$work/ot.conf" >"$work/tracker.log" 2>&1 &
pids+=($!)
sleep 0.5

common=(--no-dht --no-lsd --no-pex --json)
ip netns exec "$tag-seed" "$bin" seed "$work/t.torrent" --from "$work/src" --port 6881 "${common[@]}" \
  >"$work/seed.json" 2>"$work/seed.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q '"seeding"' "$work/seed.json" 2>/dev/null && break; sleep 0.1; done

now() { date +%s.%N; }
t0=$(now)
for i in $(seq 1 "$N"); do
  extra=()
  [ "$i" -le "$FREE" ] && extra=(--upload-limit 1)
  (
    s=$(now)
    ip netns exec "$tag-l$i" "$bin" download "$work/t.torrent" -o "$work/l$i" --port 6881 \
      "${common[@]}" "${extra[@]}" >"$work/l$i.json" 2>"$work/l$i.err"
    rc=$?
    echo "$s $(now) $rc" >"$work/l$i.time"
  ) &
  pids+=($!)
done

deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
  done_n=$(find "$work" -maxdepth 1 -name "l*.time" | wc -l)
  [ "$done_n" -ge "$N" ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "swarm: timed out after ${TIMEOUT}s with $done_n of $N leechers done" >&2
    exit 1
  fi
  sleep 0.2
done

fail=0
printf '%-6s %-12s %9s %9s %12s %12s\n' peer address start_s done_s down_bytes up_bytes
last=0
for i in $(seq 1 "$N"); do
  read -r s e rc <"$work/l$i.time"
  if [ "$rc" != 0 ] || ! cmp -s "$work/src/data.bin" "$work/l$i/data.bin"; then
    echo "swarm: leecher $i failed (exit $rc)" >&2
    tail -5 "$work/l$i.err" >&2 || true
    fail=1
  fi
  read -r down up < <(python3 -c 'import json,sys
d=[json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
done=[x for x in d if x.get("event")=="done"]
print(done[-1]["downloaded"], done[-1]["uploaded"]) if done else print(0, 0)' "$work/l$i.json")
  printf '%-6s %-12s %9.2f %9.2f %12s %12s\n' "l$i" "${lips[$i]}" \
    "$(python3 -c "print($s - $t0)")" "$(python3 -c "print($e - $t0)")" "$down" "$up"
  last=$(python3 -c "print(max($last, $e))")
done
[ "$fail" = 0 ] || exit 1

python3 - "$F" "$N" "$SEED_UP" "$DOWN" "$UP" "$FREE" "$t0" "$last" <<'EOF'
import re, sys
F, N = int(sys.argv[1]), int(sys.argv[2])
def bps(r):
    m = re.fullmatch(r'(\d+(?:\.\d+)?)([kmg]?)(bit|bps)', r.lower())
    v = float(m[1]) * {'': 1, 'k': 1e3, 'm': 1e6, 'g': 1e9}[m[2]]
    return (v * 8 if m[3] == 'bps' else v) / 8  # bytes/s
us, d = bps(sys.argv[3]), bps(sys.argv[4])
ups = sys.argv[5].split(',')
free = int(sys.argv[6])
ui = [bps(ups[(i - 1) % len(ups)]) if i > free else 1000.0 for i in range(1, N + 1)]
T = float(sys.argv[8]) - float(sys.argv[7])
Tstar = max(F / us, F / d, N * F / (us + sum(ui)))
cs = N * F / us
print(f"client-server time N*F/u_s = {cs:.2f}s")
print(f"swarm: client=shoal N={N} T={T:.2f}s T*={Tstar:.2f}s ratio={T / Tstar:.2f}")
EOF
