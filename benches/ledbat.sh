#!/usr/bin/env bash
# LEDBAT on a user's uplink: a host seeds to one leecher through a
# router whose uplink is 4 Mbit/s with a 200 ms queue (tc tbf on the
# router, as in a home modem: the host's own link is fast, so nothing on
# the host holds TCP back), first alone, then while
# iperf3 pushes a TCP flow through the same uplink, with ping measuring the
# round trip through that queue all along. Once with --transport utp and
# once with --transport tcp, in one run. Prints, per transport and phase,
# the ping RTT (median, p90) and rates; last, one line per transport:
#   ledbat: transport=<t> idle_rtt=<ms> seed_rtt=<ms> both_rtt=<ms> tcp_share=<%> seed_alone=<kbit/s> seed_with_tcp=<kbit/s>
#
#   bash benches/ledbat.sh [--rate 4mbit] [--queue 200ms] [--phase SECONDS] [--keep DIR]
#
# Three namespaces (shlb<pid>-up, -rt, -down) joined by veth pairs,
# addresses in 10.215.0.0/16 that exist only there; everything is removed at exit, on
# Ctrl-C and on failure. Needs root, iproute2, iperf3, ping, python3 and a
# release build (built if missing or older than the sources).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
RATE=4mbit QUEUE=200ms PHASE=30 KEEP=
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) RATE=$2; shift 2 ;;
    --queue) QUEUE=$2; shift 2 ;;
    --phase) PHASE=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "ledbat: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "ledbat: needs root (network namespaces)" >&2; exit 1; }
for p in ip tc iperf3 ping python3; do
  command -v "$p" >/dev/null || { echo "ledbat: $p is missing (apt-get install iproute2 iperf3 iputils-ping)" >&2; exit 1; }
done
bin=${SHOAL_BIN:-$root/target/release/shoal}
if [ -z "${SHOAL_BIN:-}" ] && { [ ! -x "$bin" ] || [ -n "$(find "$root/src" "$root/vendor" -newer "$bin" -name '*.rs' | head -1)" ]; }; then
  (cd "$root" && cargo build --release --quiet)
fi

tag=shlb$$
up=$tag-up rt=$tag-rt down=$tag-down
work=$(mktemp -d /tmp/$tag.XXXX)
cleanup() {
  for s in "$up" "$rt" "$down"; do
    ip netns pids "$s" 2>/dev/null | xargs -r kill 2>/dev/null || true
  done
  sleep 0.3
  for s in "$up" "$rt" "$down"; do
    ip netns pids "$s" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$s" 2>/dev/null || true
  done
  if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp "$work"/*.log "$work"/*.txt "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for s in "$up" "$rt" "$down"; do ip netns add "$s"; done
ip link add "u$tag" netns "$up" type veth peer name "a$tag" netns "$rt"
ip link add "d$tag" netns "$down" type veth peer name "b$tag" netns "$rt"
ip -n "$up" link set "u$tag" name eth0
ip -n "$down" link set "d$tag" name eth0
ip -n "$rt" link set "a$tag" name lan
ip -n "$rt" link set "b$tag" name wan
ip -n "$up" addr add 10.215.1.2/24 dev eth0
ip -n "$rt" addr add 10.215.1.1/24 dev lan
ip -n "$rt" addr add 10.215.2.1/24 dev wan
ip -n "$down" addr add 10.215.2.2/24 dev eth0
for s in "$up" "$down"; do ip -n "$s" link set eth0 up; ip -n "$s" link set lo up; done
for i in lan wan lo; do ip -n "$rt" link set "$i" up; done
ip netns exec "$rt" sysctl -qw net.ipv4.ip_forward=1
ip -n "$up" route add default via 10.215.1.1
ip -n "$down" route add default via 10.215.2.1
# The uplink: RATE, and a queue that holds QUEUE worth of packets before
# dropping (what a home router's buffer does), on the router's way out.
ip netns exec "$rt" tc qdisc add dev wan root tbf rate "$RATE" burst 16kb latency "$QUEUE"

# Data for a seeder that never runs out within a run.
bytes_per_s=$(python3 -c "import re,sys
m=re.fullmatch(r'(\d+(?:\.\d+)?)([kmg]?)bit',sys.argv[1].lower())
print(int(float(m[1])*{'':1,'k':1e3,'m':1e6,'g':1e9}[m[2]]/8))" "$RATE")
size=$(( bytes_per_s * (4 * PHASE + 30) ))
mkdir -p "$work/src"
head -c "$size" /dev/urandom > "$work/src/data.bin"
"$bin" create "$work/src/data.bin" -o "$work/t.torrent" --force >/dev/null

# ping_stats FILE: median and p90 RTT (ms) of a ping log.
ping_stats() {
  python3 - "$1" <<'EOF'
import re, sys
v = sorted(float(m) for m in re.findall(r'time=([\d.]+) ms', open(sys.argv[1]).read()))
if not v:
    print("nan nan"); sys.exit()
print(f"{v[len(v)//2]:.0f} {v[min(len(v)-1, int(len(v)*0.9))]:.0f}")
EOF
}

# tx_bytes: bytes sent out of the uplink so far.
tx_bytes() { ip netns exec "$rt" cat /sys/class/net/wan/statistics/tx_bytes; }

ip netns exec "$down" iperf3 -s -D -p 5201 --logfile "$work/iperf-server.log"
sleep 0.5
# The reference: a bulk TCP upload alone, what fills a modem's buffer.
ip netns exec "$up" iperf3 -c 10.215.2.2 -p 5201 -t "$PHASE" -J > "$work/alone-iperf.log" &
iperf=$!
ip netns exec "$up" ping -i 0.2 -w "$PHASE" 10.215.2.2 > "$work/alone-ping.txt" || true
wait "$iperf" || true
read -r alone_med alone_p90 < <(ping_stats "$work/alone-ping.txt")
alone_kbit=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(int(d['end']['sum_received']['bits_per_second']/1000))" "$work/alone-iperf.log")
echo "== iperf3 TCP alone: ping RTT median ${alone_med} ms, p90 ${alone_p90} ms; TCP ${alone_kbit} kbit/s"
results=("ledbat: iperf3_alone rtt=${alone_med}ms rtt_p90=${alone_p90}ms tcp=${alone_kbit}kbit/s")
for t in utp tcp; do
  log=$work/$t
  ip netns exec "$up" ping -i 0.2 -w "$PHASE" 10.215.2.2 > "$log-idle.txt" || true
  read -r idle_med idle_p90 < <(ping_stats "$log-idle.txt")
  ip netns exec "$up" env SHOAL_NO_DHT=1 SHOAL_NO_LSD=1 SHOAL_LOG=warn "$bin" seed "$work/t.torrent" \
    --from "$work/src" --port 7000 --transport "$t" --json > "$log-seed.log" 2>&1 &
  sleep 1
  ip netns exec "$down" env SHOAL_NO_DHT=1 SHOAL_NO_LSD=1 SHOAL_LOG=warn "$bin" download "$work/t.torrent" \
    -o "$work/dl-$t" --port 7001 --peer 10.215.1.2:7000 --transport "$t" --json > "$log-leech.log" 2>&1 &
  # Let the transfer ramp up, then measure it alone.
  sleep 10
  b0=$(tx_bytes)
  ip netns exec "$up" ping -i 0.2 -w "$PHASE" 10.215.2.2 > "$log-seed.txt" || true
  b1=$(tx_bytes)
  read -r seed_med seed_p90 < <(ping_stats "$log-seed.txt")
  seed_kbit=$(( (b1 - b0) * 8 / 1000 / PHASE ))
  # Now a TCP flow through the same uplink, and ping beside both.
  ip netns exec "$up" iperf3 -c 10.215.2.2 -p 5201 -t "$PHASE" -J > "$log-iperf.log" &
  iperf=$!
  ip netns exec "$up" ping -i 0.2 -w "$PHASE" 10.215.2.2 > "$log-both.txt" || true
  wait "$iperf" || true
  read -r both_med both_p90 < <(ping_stats "$log-both.txt")
  b2=$(tx_bytes)
  iperf_kbit=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(int(d['end']['sum_received']['bits_per_second']/1000))" "$log-iperf.log")
  total_kbit=$(( (b2 - b1) * 8 / 1000 / PHASE ))
  rate_kbit=$(python3 -c "import re,sys
m=re.fullmatch(r'(\d+(?:\.\d+)?)([kmg]?)bit',sys.argv[1].lower())
print(int(float(m[1])*{'':1,'k':1e3,'m':1e6,'g':1e9}[m[2]]/1000))" "$RATE")
  share=$(( 100 * iperf_kbit / rate_kbit ))
  shoal_with=$(( total_kbit - iperf_kbit ))
  [ "$shoal_with" -ge 0 ] || shoal_with=0
  for s in "$up" "$down"; do
    ip netns pids "$s" | xargs -r ps -o pid=,comm= -p | awk '$2=="shoal"{print $1}' | xargs -r kill -INT 2>/dev/null || true
  done
  sleep 2
  echo "== --transport $t (link $RATE, queue $QUEUE, $PHASE s phases)"
  echo "   idle:                 ping RTT median ${idle_med} ms, p90 ${idle_p90} ms"
  echo "   seeding alone:        ping RTT median ${seed_med} ms, p90 ${seed_p90} ms; uplink ${seed_kbit} kbit/s"
  echo "   seeding + iperf3 TCP: ping RTT median ${both_med} ms, p90 ${both_p90} ms; TCP ${iperf_kbit} kbit/s (${share} % of the link), shoal ~${shoal_with} kbit/s"
  results+=("ledbat: transport=$t idle_rtt=${idle_med}ms seed_rtt=${seed_med}ms seed_rtt_p90=${seed_p90}ms both_rtt=${both_med}ms tcp_share=${share}% seed_alone=${seed_kbit}kbit/s seed_with_tcp=${shoal_with}kbit/s")
done
printf '%s\n' "${results[@]}"
