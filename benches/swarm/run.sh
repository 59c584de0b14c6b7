#!/usr/bin/env bash
# One swarm of real BitTorrent processes, each host in its own network
# namespace, joined by a bridge, with per-host upload and download caps
# (tc tbf), an opentracker in a namespace of its own, one seeder and N
# leechers. Prints a per-peer table and, last, exactly:
#   swarm: client=<client> N=<n> T=<s>s T*=<s>s ratio=<r> transport=<t>
# T: first leecher start -> last leecher verified done. T* (fluid lower bound)
# = max(F/u_s, F/min d_i, N*F/(u_s + sum u_i)), free riders counting u_i = 0.
#
#   bash benches/swarm/run.sh --leechers N --size BYTES --seed-up RATE \
#        --up RATE[,RATE...] --down RATE [--client shoal|aria2|transmission] \
#        [--free-riders K] [--churn K [--churn-at S] [--churn-down S]] \
#        [--join all|flash|staggered [--stagger S]] [--seed-leaves] [--super-seed] \
#        [--trackerless] [--linger] [--transport utp|tcp|both] \
#        [--seed-slots S] [--leech-slots S] [--pace FRACTION] [--timeout SECONDS] [--keep DIR]
#
# --client       every peer, seeder included, runs this client (default shoal)
# --free-riders  leechers 1..K upload nothing (shoal: SHOAL_TEST_FREE_RIDE=1,
#                its choker never unchokes anyone; their links stay as fast
#                as the others', so requests and ACKs flow). shoal only.
# --churn        the last K leechers are killed (SIGKILL, the whole host) at
#                --churn-at seconds after the start (default T*/2), and
#                started again --churn-down seconds later (default 2) on the
#                same download folder
# --join         all: at once; flash: each at a random moment within 1 s;
#                staggered: one every --stagger seconds (default 1)
# --seed-leaves  the seeder stops once it has uploaded one copy (F bytes)
# --super-seed   the shoal seeder super-seeds (BEP 16, --super-seed)
# --trackerless  no tracker: the torrent has no announce URL and every peer
#                finds the others through the DHT; the tracker's namespace
#                runs a shoal DHT node as the bootstrap node instead. shoal only.
# --transport    every shoal peer's --transport (default: shoal's, both).
#                shoal only; the DHT of --trackerless is on UDP 6882, as uTP
#                has 6881
# --linger       leechers keep seeding once done (download --seed) until the
#                run ends, instead of leaving at once; a leecher's end is its
#                first "seeding" state event. shoal only.
# --seed-slots   regular upload slots of a shoal seeder (SHOAL_TEST_UPLOAD_SLOTS)
# --leech-slots  the same for shoal leechers
# --pace         every shoal peer limits its upload (--upload-limit) to this
#                fraction of its link's rate, so its uplink queue stays empty
# --keep DIR     copy the run's files there: logs, report.md (table), swarm.svg
#
# RATE is tc's syntax (8mbit, 500kbit); BYTES takes k/M/G (powers of 1024).
# LEECH_LOG (environment) replaces shoal leechers' SHOAL_LOG filter, e.g.
# LEECH_LOG=warn,shoal=debug,shoal::picker=trace to see each connection;
# SEED_LOG sets a shoal seeder's.
# Needs root, iproute2 (ip netns, tc), opentracker, python3, /usr/bin/time,
# and aria2c / transmission-daemon for those clients. Everything it creates
# (namespaces named shsw<pid>-*, processes, files) is removed at exit, on
# Ctrl-C and on failure; the run is bounded by --timeout. The hosts use
# 10.213.0.0/16, which exists only inside these namespaces. No latency is
# added: this kernel has no netem, so links differ only in rate.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
N=6 SIZE=8M SEED_UP=16mbit UP=8mbit DOWN=100mbit CLIENT=shoal FREE=0 TIMEOUT=300 KEEP=
TRANSPORT= CHURN=0 CHURN_AT= CHURN_DOWN=2 JOIN=all STAGGER=1 SEED_LEAVES=0 SUPER_SEED=0 TRACKERLESS=0 LINGER=0 SEED_SLOTS= LEECH_SLOTS= PACE=
while [ $# -gt 0 ]; do
  case "$1" in
    --leechers) N=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --seed-up) SEED_UP=$2; shift 2 ;;
    --up) UP=$2; shift 2 ;;
    --down) DOWN=$2; shift 2 ;;
    --client) CLIENT=$2; shift 2 ;;
    --free-riders) FREE=$2; shift 2 ;;
    --churn) CHURN=$2; shift 2 ;;
    --churn-at) CHURN_AT=$2; shift 2 ;;
    --churn-down) CHURN_DOWN=$2; shift 2 ;;
    --join) JOIN=$2; shift 2 ;;
    --stagger) STAGGER=$2; shift 2 ;;
    --seed-leaves) SEED_LEAVES=1; shift ;;
    --super-seed) SUPER_SEED=1; shift ;;
    --trackerless) TRACKERLESS=1; shift ;;
    --linger) LINGER=1; shift ;;
    --seed-slots) SEED_SLOTS=$2; shift 2 ;;
    --leech-slots) LEECH_SLOTS=$2; shift 2 ;;
    --pace) PACE=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    --transport) TRANSPORT=$2; shift 2 ;;
    -h|--help) sed -n '2,52p' "$0"; exit 0 ;;
    *) echo "swarm: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$CLIENT" in
  shoal) ;;
  aria2) need=aria2c ;;
  transmission) need=transmission-daemon ;;
  *) echo "swarm: --client is shoal, aria2 or transmission" >&2; exit 2 ;;
esac
case "$JOIN" in all|flash|staggered) ;; *) echo "swarm: --join is all, flash or staggered" >&2; exit 2 ;; esac
[ "$FREE" = 0 ] || [ "$CLIENT" = shoal ] || { echo "swarm: --free-riders needs --client shoal" >&2; exit 2; }
[ "$TRACKERLESS" = 0 ] || [ "$CLIENT" = shoal ] || { echo "swarm: --trackerless needs --client shoal" >&2; exit 2; }
[ "$LINGER" = 0 ] || [ "$CLIENT" = shoal ] || { echo "swarm: --linger needs --client shoal" >&2; exit 2; }
[ -z "$TRANSPORT" ] || [ "$CLIENT" = shoal ] || { echo "swarm: --transport needs --client shoal" >&2; exit 2; }
case "$TRANSPORT" in ''|utp|tcp|both) ;; *) echo "swarm: --transport is utp, tcp or both" >&2; exit 2 ;; esac
[ $((FREE + CHURN)) -le "$N" ] || { echo "swarm: free riders and churned peers are distinct leechers" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "swarm: needs root (network namespaces)" >&2; exit 1; }
for p in ip tc opentracker python3 /usr/bin/time ${need:-}; do
  command -v "$p" >/dev/null || { echo "swarm: $p is missing (bash .ci/deps installs it)" >&2; exit 1; }
done

bytes() { # 8M -> 8388608
  python3 -c "import re,sys
m=re.fullmatch(r'(\d+)([kKmMgG]?)(i?B)?',sys.argv[1]) or sys.exit('bad size '+sys.argv[1])
print(int(m[1])*{'':1,'k':1<<10,'m':1<<20,'g':1<<30}[m[2].lower()])" "$1"
}
F=$(bytes "$SIZE")
# pace RATE: shoal's --upload-limit for a link of RATE under --pace, else nothing.
pace() {
  [ -n "$PACE" ] || return 0
  python3 -c "import re,sys
m=re.fullmatch(r'(\d+(?:\.\d+)?)([kmg]?)(bit|bps)',sys.argv[1].lower())
v=float(m[1])*{'':1,'k':1e3,'m':1e6,'g':1e9}[m[2]]*(8 if m[3]=='bps' else 1)/8
print('--upload-limit', int(v*float(sys.argv[2])))" "$1" "$PACE"
}
IFS=, read -r -a UPS <<<"$UP"

tag=shsw$$
work=$(mktemp -d /tmp/$tag.XXXX)
chmod 755 "$work"
pids=()
spaces=()
cleanup() {
  # Every process in our namespaces (a leecher's client runs under a
  # subshell whose own PID is all that $! gave), then the ones we started.
  for s in "${spaces[@]}"; do
    ip netns pids "$s" 2>/dev/null | xargs -r kill 2>/dev/null || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for s in "${spaces[@]}"; do
    ip netns pids "$s" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for s in "${spaces[@]}"; do ip netns del "$s" 2>/dev/null || true; done
  for k in "${!neigh_saved[@]}"; do sysctl -qw "$k=${neigh_saved[$k]}" || true; done
  if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP" && cp -r "$work"/. "$KEEP"/ && rm -rf "$KEEP"/src "$KEEP"/l*/ "$KEEP"/*.tr
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The kernel's ARP table is one for all namespaces, and by default it holds
# 1024 entries (gc_thresh3): 42 hosts that all talk to each other need
# ~1700, and past the limit new neighbours are not resolved at all, so a
# leecher's connections time out silently ("neighbor table overflow" in
# dmesg). That, not the client, was what made the first N = 40 runs slow
# (docs/swarm.md). Raised for the run, put back at exit.
declare -A neigh_saved=()
hosts_total=$((N + 2))
need=$((2 * hosts_total * hosts_total + 1024))
for k in net.ipv4.neigh.default.gc_thresh2 net.ipv4.neigh.default.gc_thresh3; do
  cur=$(sysctl -n "$k")
  if [ "$cur" -lt "$need" ]; then
    neigh_saved[$k]=$cur
    sysctl -qw "$k=$need"
  fi
done

# SHOAL_BIN: a binary to use (the tests pass their own); else the release
# build, rebuilt when the sources are newer.
bin=${SHOAL_BIN:-$root/target/release/shoal}
if [ -z "${SHOAL_BIN:-}" ] && { [ ! -x "$bin" ] || [ -n "$(find "$root/src" "$root/vendor" -newer "$bin" -name '*.rs' | head -1)" ]; }; then
  (cd "$root" && cargo build --release --quiet)
fi

br=$tag-br
ip netns add "$br"; spaces+=("$br")
ip -n "$br" link add br0 type bridge
ip -n "$br" link set br0 up
# The sampler reads the bridge ports' counters through a process living there.
ip netns exec "$br" sleep 100000 &
anchor=$!
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
  echo "$1 b$n_host $ip_of $up $down" >>"$work/hosts"
}

host tracker 1gbit 1gbit; tracker_ip=$ip_of
host seed "$SEED_UP" "$DOWN"; seed_ip=$ip_of
for i in $(seq 1 "$N"); do
  u=${UPS[$(( (i - 1) % ${#UPS[@]} ))]}
  host "l$i" "$u" "$DOWN"
done
python3 "$here/sample.py" "$anchor" "$work/counters" 0.2 &
pids+=($!)

# Data and torrent.
mkdir -p "$work/src"
head -c "$F" /dev/urandom >"$work/src/data.bin"
if [ "$TRACKERLESS" = 1 ]; then
  "$bin" create "$work/src/data.bin" -o "$work/t.torrent" --force >/dev/null
  # The bootstrap node: a shoal DHT node (a download of a torrent nobody
  # has, so it just stays up) that the seeder announces to and the leechers
  # ask first; it bootstraps from the seeder's node in turn.
  ip netns exec "$tag-tracker" "$bin" download \
    "magnet:?xt=urn:btih:$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    -o "$work/boot" --port 6881 --dht-port 6882 --dht-bootstrap "$seed_ip:6882" \
    --state-dir "$work/state-boot" --no-lsd --no-pex --quiet >"$work/tracker.log" 2>&1 &
  pids+=($!)
else
  "$bin" create "$work/src/data.bin" -o "$work/t.torrent" -t "http://$tracker_ip:6969/announce" --force >/dev/null
  hash=$("$bin" info "$work/t.torrent" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["info_hash"])')
  echo "$hash" >"$work/whitelist"
  chmod 644 "$work/whitelist"
  printf 'listen.tcp_udp %s:6969\naccess.whitelist %s\n' "$tracker_ip" "$work/whitelist" >"$work/ot.conf"
  ip netns exec "$tag-tracker" opentracker -f "$work/ot.conf" >"$work/tracker.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    ip netns exec "$tag-tracker" ss -ltn 2>/dev/null | grep -q ':6969 ' && break; sleep 0.05
  done
fi

now() { date +%s.%N; }
common=(--no-dht --no-lsd --no-pex --no-port-mapping --json)
# dht NAME: a peer's DHT flags when trackerless (its own state folder: the
# default one would be shared by every peer on this machine).
dht() {
  if [ "$TRACKERLESS" = 1 ]; then
    echo --dht-port 6882 --dht-bootstrap "$tracker_ip:6882" --state-dir "$work/state-$1"
  fi
}
[ "$TRACKERLESS" = 1 ] && common=(--no-lsd --no-pex --json)
[ -n "$TRANSPORT" ] && common+=(--transport "$TRANSPORT")
aria_common=(--enable-dht=false --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=false
  --disable-ipv6=true --bt-require-crypto=false --listen-port=6881 --file-allocation=none
  --allow-overwrite=true --summary-interval=0 --console-log-level=warn)

# tr_settings DIR ADDRESS DOWNLOAD_DIR [EXTRA_JSON]: a Transmission config.
tr_settings() {
  mkdir -p "$1"
  cat >"$1/settings.json" <<EOF
{"bind-address-ipv4": "$2", "rpc-bind-address": "127.0.0.1", "rpc-port": 9091,
 "rpc-authentication-required": false, "rpc-whitelist-enabled": false,
 "rpc-host-whitelist-enabled": false, "peer-port": 6881, "peer-port-random-on-start": false,
 "port-forwarding-enabled": false, "dht-enabled": false, "lpd-enabled": false,
 "pex-enabled": false, "utp-enabled": false, "encryption": 0, "rename-partial-files": false,
 "idle-seeding-limit-enabled": false, "incomplete-dir-enabled": false,
 "speed-limit-up-enabled": false, "speed-limit-down-enabled": false, "alt-speed-enabled": false,
 "download-dir": "$3", "message-level": 1 ${4:-, \"ratio-limit-enabled\": false}}
EOF
}
# tr_wait NS: until the daemon's RPC answers.
tr_wait() {
  for _ in $(seq 1 100); do
    ip netns exec "$1" transmission-remote 127.0.0.1:9091 -l >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# The seeder.
seed_ns=$tag-seed
case "$CLIENT" in
  shoal)
    read -r -a extra < <(pace "$SEED_UP"; echo)
    [ "$SEED_LEAVES" = 1 ] && extra+=(--seed-ratio 1)
    [ "$SUPER_SEED" = 1 ] && extra+=(--super-seed)
    read -r -a d < <(dht seed; echo)
    extra+=("${d[@]}")
    env ${SEED_SLOTS:+SHOAL_TEST_UPLOAD_SLOTS=$SEED_SLOTS} ${SEED_LOG:+SHOAL_LOG=$SEED_LOG} ip netns exec "$seed_ns" \
      "$bin" seed "$work/t.torrent" --from "$work/src" --port 6881 "${common[@]}" "${extra[@]}" \
      >"$work/seed.json" 2>"$work/seed.err" &
    pids+=($!)
    for _ in $(seq 1 100); do grep -q '"seeding"' "$work/seed.json" 2>/dev/null && break; sleep 0.1; done
    ;;
  aria2)
    ratio=0.0
    [ "$SEED_LEAVES" = 1 ] && ratio=1.0
    ip netns exec "$seed_ns" aria2c "${aria_common[@]}" -V --seed-ratio=$ratio -d "$work/src" \
      "$work/t.torrent" >"$work/seed.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
      ip netns exec "$seed_ns" ss -ltn 2>/dev/null | grep -q ':6881 ' && break; sleep 0.1
    done
    sleep 1 # its check of the data and first announce
    ;;
  transmission)
    x=
    [ "$SEED_LEAVES" = 1 ] && x=', "ratio-limit-enabled": true, "ratio-limit": 1'
    tr_settings "$work/seed.tr" "$seed_ip" "$work/src" "$x"
    ip netns exec "$seed_ns" transmission-daemon -f -g "$work/seed.tr" >"$work/seed.out" 2>&1 &
    pids+=($!)
    tr_wait "$seed_ns"
    ip netns exec "$seed_ns" transmission-remote 127.0.0.1:9091 -a "$work/t.torrent" -w "$work/src" >/dev/null
    for _ in $(seq 1 200); do
      info=$(ip netns exec "$seed_ns" transmission-remote 127.0.0.1:9091 -t 1 -i 2>/dev/null || true)
      if grep -q 'Percent Done: 100%' <<<"$info" && ! grep -q 'State: Verif' <<<"$info"; then break; fi
      sleep 0.1
    done
    ;;
esac

# leech I RUN: leecher I's client, in its namespace, until it has the whole
# file and has left (or is killed). Its end time goes to l<I>.end.
leech() {
  local i=$1 r=$2 ns=$tag-l$i dir=$work/l$i
  local rus=(/usr/bin/time -f '%e %U %S %M' -o "$work/l$i.r$r.rusage")
  case "$CLIENT" in
    shoal)
      local fr= lim
      [ "$i" -le "$FREE" ] && fr=SHOAL_TEST_FREE_RIDE=1
      read -r -a lim < <(pace "${UPS[$(( (i - 1) % ${#UPS[@]} ))]}"; echo)
      read -r -a d < <(dht "l$i"; echo)
      lim+=("${d[@]}")
      [ "$LINGER" = 1 ] && lim+=(--seed)
      env $fr ${LEECH_SLOTS:+SHOAL_TEST_UPLOAD_SLOTS=$LEECH_SLOTS} SHOAL_LOG=${LEECH_LOG:-warn,shoal::picker=trace} ip netns exec "$ns" "${rus[@]}" \
        "$bin" download "$work/t.torrent" -o "$dir" --port 6881 "${common[@]}" "${lim[@]}" \
        >"$work/l$i.r$r.json" 2>"$work/l$i.r$r.err" &
      local c=$! rc=0
      if [ "$LINGER" = 1 ]; then
        # Done when it starts seeding; it stays until the run ends.
        local line=
        while kill -0 "$c" 2>/dev/null; do
          line=$(grep -m1 '"state":"seeding"' "$work/l$i.r$r.json" 2>/dev/null) && break
          sleep 0.1
        done
        if [ -n "$line" ]; then
          sed 's/.*"ts":\([0-9.]*\).*/\1/' <<<"$line" >"$work/l$i.end"
          return 0
        fi
      fi
      wait "$c" || rc=$?
      now >"$work/l$i.end"
      return $rc
      ;;
    aria2)
      ip netns exec "$ns" "${rus[@]}" aria2c "${aria_common[@]}" --seed-time=0 -d "$dir" \
        "$work/t.torrent" >"$work/l$i.r$r.out" 2>&1
      local rc=$?
      now >"$work/l$i.end"
      return $rc
      ;;
    transmission)
      local cfg=$work/l$i.tr
      if [ "$r" = 1 ]; then
        tr_settings "$cfg" "10.213.0.$((i + 2))" "$dir" \
          ", \"ratio-limit-enabled\": false, \"script-torrent-done-enabled\": true, \"script-torrent-done-filename\": \"$cfg/done.sh\""
        printf '#!/bin/sh\ndate +%%s.%%N >%s\n' "$work/l$i.end" >"$cfg/done.sh"
        chmod 755 "$cfg/done.sh"
      fi
      ip netns exec "$ns" "${rus[@]}" transmission-daemon -f -g "$cfg" >"$work/l$i.r$r.out" 2>&1 &
      local d=$!
      tr_wait "$ns" || return 1
      # A restarted daemon resumes the torrent from its config folder.
      [ "$r" = 1 ] && ip netns exec "$ns" transmission-remote 127.0.0.1:9091 -a "$work/t.torrent" -w "$dir" >/dev/null
      while [ ! -s "$work/l$i.end" ] && kill -0 "$d" 2>/dev/null; do sleep 0.1; done
      [ -s "$work/l$i.end" ] || return 1
      # Done: it leaves, as shoal and aria2 leechers do.
      ip netns exec "$ns" transmission-remote 127.0.0.1:9091 -t 1 -i >"$work/l$i.r$r.info" 2>&1 || true
      # The daemon, not /usr/bin/time above it, so that time reports.
      ps -o pid= --ppid "$d" | xargs -r kill 2>/dev/null
      wait "$d"
      return 0
      ;;
  esac
}

# When the churned leechers are killed: --churn-at, else half of T*.
if [ "$CHURN" -gt 0 ] && [ -z "$CHURN_AT" ]; then
  CHURN_AT=$(python3 "$here/report.py" --tstar "$F" "$N" "$SEED_UP" "$DOWN" "$UP" "$FREE" | awk '{print $1 / 2}')
fi
cat >"$work/params" <<EOF
client=$CLIENT
transport=${TRANSPORT:-both}
size=$F
leechers=$N
seed_up=$SEED_UP
up=$UP
down=$DOWN
free=$FREE
churn=$CHURN
churn_at=$CHURN_AT
churn_down=$CHURN_DOWN
join=$JOIN
stagger=$STAGGER
seed_leaves=$SEED_LEAVES
super_seed=$SUPER_SEED
trackerless=$TRACKERLESS
linger=$LINGER
seed_slots=$SEED_SLOTS
leech_slots=$LEECH_SLOTS
pace=$PACE
EOF

# Start offsets, all computed before the clock starts.
read -r -a offs < <(python3 -c "import random
n, join, st = $N, '$JOIN', float('$STAGGER')
print(*[0 if join == 'all' else random.random() if join == 'flash' else i * st for i in range(n)])")
t0=$(now)
echo "$t0" >"$work/t0"
for i in $(seq 1 "$N"); do
  off=${offs[$((i - 1))]}
  (
    set +e
    sleep "$off"
    s=$(now)
    echo "$s" >"$work/l$i.start"
    leech "$i" 1 &
    c=$!
    if [ "$i" -gt $((N - CHURN)) ]; then
      sleep "$(python3 -c "import time; print(max(0, $t0 + $CHURN_AT - time.time()))")"
      if kill -0 "$c" 2>/dev/null && [ ! -s "$work/l$i.end" ]; then
        ip netns pids "$tag-l$i" | xargs -r kill -9
        now >"$work/l$i.killed"
        wait "$c"
        sleep "$CHURN_DOWN"
        now >"$work/l$i.restarted"
        leech "$i" 2 &
        c=$!
      fi
    fi
    wait "$c"
    rc=$?
    echo "$s $(cat "$work/l$i.end" 2>/dev/null || now) $rc" >"$work/l$i.time"
  ) &
  pids+=($!)
done

deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
  done_n=$(find "$work" -maxdepth 1 -name "l*.time" | wc -l)
  [ "$done_n" -ge "$N" ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "swarm: timed out after ${TIMEOUT}s with $done_n of $N leechers done" >&2
    # The report of what happened so far (a seeder that left too early
    # shows here how many pieces the swarm was left with).
    for i in $(seq 1 "$N"); do
      [ -s "$work/l$i.time" ] || echo "$(cat "$work/l$i.start" 2>/dev/null || now) $(now) timeout" >"$work/l$i.time"
    done
    python3 "$here/report.py" "$work" --partial || true
    exit 1
  fi
  sleep 0.2
done
sleep 0.5 # a last counter sample

fail=0
for i in $(seq 1 "$N"); do
  read -r _ _ rc <"$work/l$i.time"
  if [ "$rc" != 0 ] || ! cmp -s "$work/src/data.bin" "$work/l$i/data.bin"; then
    echo "swarm: leecher $i failed (exit $rc)" >&2
    tail -5 "$work/l$i.r1.err" "$work/l$i.r1.out" 2>/dev/null >&2 || true
    fail=1
  fi
done
[ "$fail" = 0 ] || exit 1
python3 "$here/report.py" "$work"
