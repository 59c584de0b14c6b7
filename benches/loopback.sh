#!/usr/bin/env bash
# End-to-end loopback benchmark (issue 5): shoal vs aria2 vs Transmission.
#
#   bash benches/loopback.sh [--size-mib N] [--rounds R] [--only single|multi]
#
# Defaults: 1024 MiB, 3 rounds, both torrents. Other options:
#   --work-dir DIR            parent of the scratch folder (default: $TMPDIR or /tmp)
#   --download-dir DIR        parent of the downloads' folder (default: the scratch
#                             folder); /dev/shm takes the disk out of the measure
#   --results FILE            where the Markdown results go
#                             (default: target/loopback/results-<date>.md)
#   --no-transmission-seeder  skip the Transmission-as-seeder block
#   --transport utp           uTP against TCP instead: a shoal seeder (taking
#                             both) and shoal downloading with --transport tcp
#                             ("shoal") and with --transport utp ("shoal-utp"),
#                             alternating each round, CPU per GiB of both sides
#   --keep                    keep the scratch folder (for debugging)
#
# What it does (see docs/performance.md for the method and the latest table):
#  1. installs aria2, Transmission 3.00, opentracker, GNU time, openssl and python3
#     if missing (Debian apt-get) and builds shoal in release;
#  2. makes an N MiB single-file torrent and an N MiB torrent of 100 files (data from
#     /dev/urandom) with `shoal create`, announcing to a local opentracker (whitelist);
#  3. for each torrent and each seeder (shoal, aria2, Transmission) starts the seeder,
#     then times complete, verified downloads by shoal, aria2 and Transmission from it,
#     alternating the order each round, into a fresh folder; checks the data with cmp;
#  4. measures the machine limit in the same run (openssl dgst -sha1 over the warm
#     file, a loopback TCP copy file -> socket -> file) and shoal create/verify;
#  5. prints a Markdown table and the issue-5 targets (PASS/FAIL) and saves them.
#
# Everything binds 127.0.0.1. Every process the script starts runs in its own
# session and is killed (by its process group) on exit, error, Ctrl-C or SIGTERM;
# after a kill -9 of the script a sidecar (and parent-death signals) do it.
# Results of a 1 GiB run vary with machine load: rerun on a quiet machine.
set -Eeuo pipefail
# Benchmarks stay on loopback: no SSDP or NAT-PMP toward the real router,
# no DHT bootstrap toward the public routers, no LSD multicast. Peers come
# from the local tracker.
export SHOAL_NO_PORT_MAPPING=1 SHOAL_NO_DHT=1 SHOAL_NO_LSD=1

SIZE_MIB=1024
ROUNDS=3
ONLY=""
WORK_PARENT=${TMPDIR:-/tmp}
DL_PARENT=""
DL=""
RESULTS=""
TR_SEEDER=1
KEEP=0
UTP=0

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

while [ $# -gt 0 ]; do
  case $1 in
    --size-mib) SIZE_MIB=${2:?}; shift 2 ;;
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --only) ONLY=${2:?}; shift 2 ;;
    --work-dir) WORK_PARENT=${2:?}; shift 2 ;;
    --download-dir) DL_PARENT=${2:?}; shift 2 ;;
    --results) RESULTS=${2:?}; shift 2 ;;
    --no-transmission-seeder) TR_SEEDER=0; shift ;;
    --transport)
      [ "${2:-}" = utp ] || { echo "--transport: utp (uTP against TCP)" >&2; exit 2; }
      UTP=1; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ $SIZE_MIB =~ ^[0-9]+$ && $SIZE_MIB -ge 1 ]] || { echo "--size-mib: a positive integer" >&2; exit 2; }
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -ge 1 ]] || { echo "--rounds: a positive integer" >&2; exit 2; }
case $ONLY in
  "") TORRENTS=(single multi) ;;
  single | multi) TORRENTS=("$ONLY") ;;
  *) echo "--only: single or multi" >&2; exit 2 ;;
esac
if [ "${BASH_VERSINFO[0]}" -lt 5 ]; then
  echo "needs bash 5 (EPOCHREALTIME)" >&2
  exit 2
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE=$((SIZE_MIB * 1048576))
DL_LIMIT=$((120 + SIZE_MIB / 4)) # seconds allowed for one download
HZ=$(getconf CLK_TCK)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- processes
PIDS=()     # session/process-group leaders we started
WORK=""
SLEEP_FD="" # a FIFO nobody writes to: `read -t` on it is a sleep without a fork

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM HUP
  if [ -n "$REAPER" ]; then kill -KILL "$REAPER" 2>/dev/null || true; fi
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || continue
    kill -CONT -- "-$pid" 2>/dev/null || kill -CONT "$pid" 2>/dev/null || true
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  local deadline=$((SECONDS + 10)) alive
  while :; do
    alive=0
    for pid in "${PIDS[@]}"; do
      if kill -0 -- "-$pid" 2>/dev/null; then alive=1; fi
    done
    [ $alive = 0 ] || [ $SECONDS -ge $deadline ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$SLEEP_FD" ]; then exec {SLEEP_FD}>&-; fi
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ $KEEP = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  fi
  if [ -n "$DL" ] && [ -d "$DL" ]; then rm -rf "$DL"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'log "failed: line $LINENO: $BASH_COMMAND"' ERR

# spawn LOGBASE CMD...: runs CMD in a new session (so its whole process group
# can be signalled), output to LOGBASE.out/.err; sets LAST_PID. CMD also gets
# SIGKILL should this script die without running its trap (kill -9).
LAST_PID=""
DEATHSIG=(setpriv --pdeathsig KILL)
spawn() {
  local base=$1
  shift
  setsid "${DEATHSIG[@]}" "$@" </dev/null >"$base.out" 2>"$base.err" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  echo "$LAST_PID" >>"$WORK/pids"
}

# A sidecar for the case no trap can handle (kill -9 of this script): when the
# script is gone, it kills what the script started and removes the scratch
# folder. (Spawned processes also get SIGKILL then, via their parent-death
# signal, except opentracker, which clears it when it drops to user nobody.)
REAPER=""
reaper() {
  trap - EXIT INT TERM HUP ERR
  while kill -0 "$$" 2>/dev/null; do nap 1; done
  local p
  while read -r p; do
    kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
  done <"$WORK/pids"
  if [ $KEEP = 0 ]; then rm -rf "$WORK"; fi
  if [ -n "$DL" ]; then rm -rf "$DL"; fi
}

# stop PID [TIMEOUT]: SIGTERM to the group, wait, then SIGKILL.
stop() {
  local pid=$1 t=${2:-15} i
  kill -CONT -- "-$pid" 2>/dev/null || true
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < t * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    nap 0.05
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

nap() { read -r -t "$1" -u "$SLEEP_FD" _ || true; }

# TICKS = utime+stime (clock ticks, all threads) of PID.
TICKS=0
read_ticks() {
  local s a
  TICKS=0
  read -r s <"/proc/$1/stat" 2>/dev/null || return 0
  s=${s##*) }
  read -r -a a <<<"$s"
  TICKS=$((a[11] + a[12]))
}
# HWM = peak RSS (VmHWM, kB) of PID.
HWM=0
read_hwm() {
  local k v _u
  HWM=0
  while read -r k v _u; do
    if [ "$k" = "VmHWM:" ]; then HWM=$v; fi
  done <"/proc/$1/status" 2>/dev/null || true
}

# Free TCP ports, handed out once each.
NEXT_PORT=$((20000 + RANDOM % 30000))
PORT=0
next_port() {
  while :; do
    NEXT_PORT=$((NEXT_PORT + 1))
    if [ -z "$(ss -Htan "( sport = :$NEXT_PORT or dport = :$NEXT_PORT )" 2>/dev/null)" ]; then
      PORT=$NEXT_PORT
      return
    fi
  done
}

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---------------------------------------------------------------- 1. set-up
install_deps() {
  local need=() sudo=""
  command -v aria2c >/dev/null || need+=(aria2)
  command -v transmission-daemon >/dev/null || need+=(transmission-daemon)
  command -v transmission-remote >/dev/null || need+=(transmission-cli)
  command -v opentracker >/dev/null || need+=(opentracker)
  [ -x /usr/bin/time ] || need+=(time)
  command -v openssl >/dev/null || need+=(openssl)
  command -v python3 >/dev/null || need+=(python3)
  command -v ss >/dev/null || need+=(iproute2)
  command -v cmp >/dev/null || need+=(diffutils)
  command -v setsid >/dev/null && command -v setpriv >/dev/null || need+=(util-linux)
  if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH=$HOME/.cargo/bin:$PATH
  fi
  if ! command -v cargo >/dev/null; then
    command -v curl >/dev/null || need+=(curl ca-certificates)
  fi
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || sudo=sudo
    log "installing: ${need[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if ! command -v cargo >/dev/null; then
    log "installing Rust (rustup, minimal profile)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
    PATH=$HOME/.cargo/bin:$PATH
  fi
}

install_deps

WORK=$(mktemp -d "$WORK_PARENT/shoal-loopback.XXXXXX")
chmod 755 "$WORK" # opentracker runs as nobody and must read its whitelist
mkfifo "$WORK/.sleep"
exec {SLEEP_FD}<>"$WORK/.sleep"
mkdir -p "$WORK/src" "$WORK/log" "$WORK/tracker"
# Downloads (and the disk reference below) go here: a folder of its own,
# removed on exit like the scratch folder.
if [ -n "$DL_PARENT" ]; then
  DL=$(mktemp -d "$DL_PARENT/shoal-loopback-dl.XXXXXX")
else
  DL=$WORK/dl
  mkdir "$DL"
fi
: >"$WORK/pids"
reaper &
REAPER=$!

log "building shoal (release)"
spawn "$WORK/log/cargo" env -C "$REPO" cargo build --release
wait "$LAST_PID" || { tail -30 "$WORK/log/cargo.err" >&2; die "cargo build failed"; }
# A private copy: a rebuild in the same tree during the run (someone else's
# cargo build) must not swap the binary under the benchmark.
mkdir -p "$WORK/bin"
cp "$REPO/target/release/shoal" "$WORK/bin/shoal"
SHOAL=$WORK/bin/shoal
SHOAL_BUILD="$("$SHOAL" --version) ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(
  [ -z "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] || echo ', with uncommitted changes'))"
log "benchmarking $SHOAL_BUILD"
chmod 755 "$WORK/tracker"
RUNS=$WORK/runs.tsv
LIMITS=$WORK/limits.tsv
SEEDERS=$WORK/seeders.tsv
printf 'torrent\tseeder\tdownloader\tround\tstatus\twall\tcpu\trss_kb\tseed_cpu\n' >"$RUNS"
: >"$LIMITS"
printf 'torrent\tseeder\tpeak_rss_kb\n' >"$SEEDERS"
if [ -z "$RESULTS" ]; then
  mkdir -p "$REPO/target/loopback"
  RESULTS=$REPO/target/loopback/results-$(date +%Y%m%d-%H%M%S).md
fi

# Helpers in Python: a tracker query and a loopback TCP copy.
cat >"$WORK/tracker_lists.py" <<'EOF'
# tracker_lists.py ANNOUNCE_URL INFO_HASH_HEX PORT: exit 0 when the tracker's
# peer list for the torrent holds 127.0.0.1:PORT. Announces as a throw-away
# peer on port 1 and then sends `stopped` for it.
import sys, os, urllib.parse, urllib.request
url, ih, want = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3])
pid = b"-BN0001-" + os.urandom(12)
def announce(extra):
    q = ("?info_hash=" + urllib.parse.quote_from_bytes(ih) + "&peer_id=" + urllib.parse.quote_from_bytes(pid)
         + "&port=1&uploaded=0&downloaded=0&left=1&compact=1&numwant=200" + extra)
    with urllib.request.urlopen(url + q, timeout=5) as r:
        return r.read()
body = announce("&event=started")
announce("&event=stopped")
i = body.find(b"5:peers")
if i < 0:
    sys.exit(1)
j = body.index(b":", i + 7)
n = int(body[i + 7:j])
peers = body[j + 1:j + 1 + n]
ports = {int.from_bytes(peers[k + 4:k + 6], "big") for k in range(0, len(peers) - 5, 6)}
sys.exit(0 if want in ports else 1)
EOF
cat >"$WORK/tcpcopy.py" <<'EOF'
# tcpcopy.py SRC DST: copies SRC to DST through a loopback TCP connection
# (sender: sendfile; receiver: recv_into a 4 MiB buffer + write; DST "-":
# received data is dropped), sender and receiver in two processes; prints the
# seconds from connect to the last write.
import os, socket, sys, time
src, dst = sys.argv[1], sys.argv[2]
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
port = ls.getsockname()[1]
r, w = os.pipe()
child = os.fork()
if child == 0:
    c, _ = ls.accept()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    buf = bytearray(4 << 20); mv = memoryview(buf)
    fd = None if dst == "-" else os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    while True:
        n = c.recv_into(buf)
        if n == 0:
            break
        if fd is not None:
            os.write(fd, mv[:n])
    if fd is not None:
        os.close(fd)
    os.write(w, b"x")
    os._exit(0)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
t0 = time.perf_counter()
s.connect(("127.0.0.1", port))
with open(src, "rb") as f:
    s.sendfile(f)
s.shutdown(socket.SHUT_WR)
os.read(r, 1)
t1 = time.perf_counter()
os.waitpid(child, 0)
print(f"{t1 - t0:.4f}")
EOF

# ---------------------------------------------------------------- 2. data, tracker
next_port
TRACKER_PORT=$PORT
ANNOUNCE=http://127.0.0.1:$TRACKER_PORT/announce

SINGLE_NAME=bench-single.bin
MULTI_NAME=bench-multi
log "writing ${SIZE_MIB} MiB single file and ${SIZE_MIB} MiB in 100 files from /dev/urandom under $WORK"
head -c "$SIZE" /dev/urandom >"$WORK/src/$SINGLE_NAME"
each=$((SIZE / 100))
for i in $(seq 0 99); do
  d=$WORK/src/$MULTI_NAME/d$((i / 10))
  mkdir -p "$d"
  n=$each
  if [ "$i" = 99 ]; then n=$((SIZE - 99 * each)); fi
  head -c "$n" /dev/urandom >"$d/f$(printf %02d "$i").bin"
done
# Flush the new data to disk now: writeback of 2 GiB of dirty pages during
# the first timed runs slowed them by half (2.5 s instead of 1 s here).
sync

declare -A TORRENT HASH NAME PIECE
NAME[single]=$SINGLE_NAME
NAME[multi]=$MULTI_NAME
for t in single multi; do
  TORRENT[$t]=$WORK/$t.torrent
  "$SHOAL" create "$WORK/src/${NAME[$t]}" -o "${TORRENT[$t]}" -t "$ANNOUNCE" --force >"$WORK/log/create-$t.out"
  info=$("$SHOAL" info "${TORRENT[$t]}" --json)
  HASH[$t]=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["info_hash"])' <<<"$info")
  PIECE[$t]=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["piece_count"], d["piece_length"])' <<<"$info")
done
printf '%s\n' "${HASH[single]}" "${HASH[multi]}" >"$WORK/tracker/whitelist.txt"
printf 'listen.tcp_udp 127.0.0.1:%s\naccess.whitelist %s\n' "$TRACKER_PORT" "$WORK/tracker/whitelist.txt" >"$WORK/tracker/opentracker.conf"
chmod 644 "$WORK/tracker/"*
# -C /: opentracker chroots to its working folder; / keeps absolute paths valid
spawn "$WORK/log/opentracker" env -C / opentracker -f "$WORK/tracker/opentracker.conf"
for ((i = 0; i < 100; i++)); do
  [ -n "$(ss -Htln "sport = :$TRACKER_PORT" 2>/dev/null)" ] && break
  kill -0 "$LAST_PID" 2>/dev/null || die "opentracker did not start: $(cat "$WORK/log/opentracker.err")"
  nap 0.05
done
log "opentracker on $ANNOUNCE"

warm() { cat "$WORK/src/$SINGLE_NAME" >/dev/null; find "$WORK/src/$MULTI_NAME" -type f -exec cat {} + >/dev/null; }
warm

# wait_tracker TORRENT PORT: until the tracker lists 127.0.0.1:PORT for it.
wait_tracker() {
  local t=$1 port=$2 i
  for ((i = 0; i < 60; i++)); do
    python3 "$WORK/tracker_lists.py" "$ANNOUNCE" "${HASH[$t]}" "$port" 2>/dev/null && return 0
    nap 0.25
  done
  return 1
}

# ---------------------------------------------------------------- 4/5. machine limit, create, verify
F=$WORK/src/$SINGLE_NAME
log "machine limit: openssl dgst -sha1, loopback TCP copy; shoal create/verify (median of 3)"
disk_how="dd bs=1M oflag=direct"
ossl=() disk=() tcp=() tcpn=() cre=() ver=() cre_cpu=() ver_cpu=() cre_rss=0 ver_rss=0
for i in 1 2 3; do
  t0=$EPOCHREALTIME
  openssl dgst -sha1 "$F" >/dev/null
  t1=$EPOCHREALTIME
  ossl+=("$(secs "$t0" "$t1")")
  # D: what the download folder's disk takes, written the way shoal writes
  # a big piece (O_DIRECT, where the filesystem has it).
  t0=$EPOCHREALTIME
  if ! dd if="$F" of="$DL/disk.bin" bs=1M oflag=direct status=none 2>/dev/null; then
    disk_how="dd bs=1M (no O_DIRECT here)"
    t0=$EPOCHREALTIME
    dd if="$F" of="$DL/disk.bin" bs=1M status=none
  fi
  t1=$EPOCHREALTIME
  disk+=("$(secs "$t0" "$t1")")
  rm -f "$DL/disk.bin"
  tcp+=("$(python3 "$WORK/tcpcopy.py" "$F" "$DL/tcpcopy.bin")")
  tcpn+=("$(python3 "$WORK/tcpcopy.py" "$F" -)")
  rm -f "$DL/tcpcopy.bin"
  t0=$EPOCHREALTIME
  /usr/bin/time -o "$WORK/log/time" -f '%e %U %S %M' "$SHOAL" create "$F" -o "$WORK/create.torrent" --force >/dev/null
  t1=$EPOCHREALTIME
  read -r _ u s m <"$WORK/log/time"
  cre+=("$(secs "$t0" "$t1")"); cre_cpu+=("$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')"); [ "$m" -gt "$cre_rss" ] && cre_rss=$m
  rc=0
  t0=$EPOCHREALTIME
  /usr/bin/time -o "$WORK/log/time" -f '%e %U %S %M' "$SHOAL" verify "${TORRENT[single]}" "$WORK/src" >/dev/null || rc=$?
  t1=$EPOCHREALTIME
  [ $rc = 0 ] || die "shoal verify of the source data failed"
  read -r _ u s m <"$WORK/log/time"
  ver+=("$(secs "$t0" "$t1")"); ver_cpu+=("$(awk -v u="$u" -v s="$s" 'BEGIN { print u + s }')"); [ "$m" -gt "$ver_rss" ] && ver_rss=$m
done
sync
{
  printf 'size_bytes\t%s\n' "$SIZE"
  printf 'openssl_s\t%s\n' "$(median "${ossl[@]}")"
  printf 'tcp_s\t%s\n' "$(median "${tcp[@]}")"
  printf 'disk_s\t%s\n' "$(median "${disk[@]}")"
  printf 'disk_how\t%s\n' "$disk_how"
  printf 'download_fs\t%s\n' "$(df --output=fstype "$DL" | tail -1)"
  printf 'tcp_null_s\t%s\n' "$(median "${tcpn[@]}")"
  printf 'create_s\t%s\n' "$(median "${cre[@]}")"
  printf 'create_cpu\t%s\n' "$(median "${cre_cpu[@]}")"
  printf 'create_rss_kb\t%s\n' "$cre_rss"
  printf 'verify_s\t%s\n' "$(median "${ver[@]}")"
  printf 'verify_cpu\t%s\n' "$(median "${ver_cpu[@]}")"
  printf 'verify_rss_kb\t%s\n' "$ver_rss"
  printf 'pieces_single\t%s\n' "${PIECE[single]}"
  printf 'pieces_multi\t%s\n' "${PIECE[multi]}"
} >>"$LIMITS"
log "openssl ${ossl[*]} s; disk ${disk[*]} s; tcp ${tcp[*]} s (to /dev/null: ${tcpn[*]} s); create ${cre[*]} s; verify ${ver[*]} s"

# ---------------------------------------------------------------- 3. seeders
SEED_PID="" SEED_PORT="" SEED_TR_RPC=""

aria2_common=(--no-conf --enable-dht=false --enable-dht6=false --bt-enable-lpd=false
  --enable-peer-exchange=false --disable-ipv6=true --interface=127.0.0.1
  --bt-require-crypto=false --bt-min-crypto-level=plain --file-allocation=none
  --allow-overwrite=true --summary-interval=0 --console-log-level=warn)

# tr_settings CONFDIR PEERPORT RPCPORT DOWNLOADDIR [DONEFILE]
tr_settings() {
  local conf=$1 peer=$2 rpc=$3 dir=$4 done=${5:-}
  mkdir -p "$conf"
  local script=false
  if [ -n "$done" ]; then
    printf '#!/bin/sh\ndate +%%s.%%N > %s\n' "$done" >"$conf/done.sh"
    chmod 755 "$conf/done.sh"
    script=true
  fi
  cat >"$conf/settings.json" <<EOF
{
  "bind-address-ipv4": "127.0.0.1", "bind-address-ipv6": "::1",
  "rpc-bind-address": "127.0.0.1", "rpc-port": $rpc, "rpc-authentication-required": false,
  "rpc-whitelist": "127.0.0.1", "rpc-whitelist-enabled": true, "rpc-host-whitelist-enabled": false,
  "peer-port": $peer, "peer-port-random-on-start": false, "port-forwarding-enabled": false,
  "dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
  "encryption": 0, "rename-partial-files": false, "ratio-limit-enabled": false,
  "idle-seeding-limit-enabled": false, "download-dir": "$dir", "message-level": 1,
  "script-torrent-done-enabled": $script, "script-torrent-done-filename": "$conf/done.sh"
}
EOF
}
tr_wait_rpc() {
  local i
  for ((i = 0; i < 300; i++)); do
    transmission-remote "127.0.0.1:$1" -l >/dev/null 2>&1 && return 0
    nap 0.1
  done
  return 1
}
# TR_STATE / TR_PCT of torrent 1
tr_info() {
  local out
  out=$(transmission-remote "127.0.0.1:$1" -t 1 -i 2>/dev/null || true)
  TR_STATE=$(sed -n 's/^ *State: //p' <<<"$out")
  TR_PCT=$(sed -n 's/^ *Percent Done: //p' <<<"$out")
}

tr_wait_seeding() {
  local i
  for ((i = 0; i < 1200; i++)); do
    tr_info "$1"
    [[ $TR_PCT == 100% && $TR_STATE != *Verif* && $TR_STATE != *Queued* ]] && return 0
    nap 0.25
  done
  die "Transmission did not verify the seed data (state $TR_STATE, $TR_PCT)"
}

# Transmission 3.00 keeps one peer record per IP address: once a loopback
# downloader has finished, it turns away the next one from 127.0.0.1 (seen:
# rounds 2 and 3 got no data). So the Transmission seeder is restarted before
# each download (same config and resume data: no re-check, same port).
SEED_HWM=0 SEED_BASE="" SEED_RESTARTS=0
restart_tr_seeder() {
  local t=$1
  read_hwm "$SEED_PID"
  if [ "$HWM" -gt "$SEED_HWM" ]; then SEED_HWM=$HWM; fi
  stop "$SEED_PID" 20
  SEED_RESTARTS=$((SEED_RESTARTS + 1))
  spawn "$SEED_BASE.restart$SEED_RESTARTS" transmission-daemon -f -g "$SEED_BASE.conf" -x "$SEED_BASE.pid"
  SEED_PID=$LAST_PID
  tr_wait_rpc "$SEED_TR_RPC" || die "transmission-daemon (seeder) did not restart"
  tr_wait_seeding "$SEED_TR_RPC"
  wait_tracker "$t" "$SEED_PORT" || die "transmission seeder not listed by the tracker after a restart"
}

# start_seeder KIND TORRENT [PEER]: starts KIND seeding, waits until it is
# ready and listed by the tracker. Sets SEED_PID, SEED_PORT.
start_seeder() {
  local kind=$1 t=$2 peer=${3:-} i
  next_port
  SEED_PORT=$PORT
  local base=$WORK/log/seed-$kind-$t-$SEED_PORT
  case $kind in
    shoal)
      local extra=()
      if [ -n "$peer" ]; then extra=(--peer "$peer"); fi
      spawn "$base" env SHOAL_LOG=shoal=info "$SHOAL" seed "${TORRENT[$t]}" --from "$WORK/src" \
        --port "$SEED_PORT" --quiet "${extra[@]}"
      SEED_PID=$LAST_PID
      ;;
    aria2)
      spawn "$base" aria2c "${aria2_common[@]}" --listen-port="$SEED_PORT" --seed-ratio=0.0 \
        --bt-seed-unverified=true --bt-tracker-interval=1 -d "$WORK/src" "${TORRENT[$t]}"
      SEED_PID=$LAST_PID
      ;;
    transmission)
      next_port
      SEED_TR_RPC=$PORT
      tr_settings "$base.conf" "$SEED_PORT" "$SEED_TR_RPC" "$WORK/src"
      spawn "$base" transmission-daemon -f -g "$base.conf" -x "$base.pid"
      SEED_PID=$LAST_PID
      SEED_BASE=$base
      tr_wait_rpc "$SEED_TR_RPC" || die "transmission-daemon (seeder) did not start"
      transmission-remote "127.0.0.1:$SEED_TR_RPC" -a "${TORRENT[$t]}" -w "$WORK/src" >/dev/null
      tr_wait_seeding "$SEED_TR_RPC"
      ;;
  esac
  if [ -n "$peer" ]; then return 0; fi # a seeder told where to go needs no tracker
  wait_tracker "$t" "$SEED_PORT" || die "$kind seeder not listed by the tracker (logs: $base.*)"
}

# wait_listening LOGFILE PID: until the shoal log says it listens; sets
# T_READY (epoch s of that log line) and TICKS (CPU of PID when it was seen).
wait_listening() {
  local f=$1 pid=$2 i line
  for ((i = 0; i < 6000; i++)); do
    read_ticks "$pid"
    [ -e "$f" ] && while IFS= read -r line; do
      if [[ $line == *"listening on port"* ]]; then
        T_READY=$(date -d "${line%% *}" +%s.%N)
        return 0
      fi
    done <"$f"
    kill -0 "$pid" 2>/dev/null || return 1
    nap 0.01
  done
  return 1
}

# ---------------------------------------------------------------- 3. downloads
STALL=30 # a download that reads < 1 MiB in this many seconds is given up

# IOCHARS = bytes moved by read()/write() calls (rchar + wchar) of all
# processes of group PGID: grows with a download (data written to the files).
IOCHARS=0
read_iochars() {
  local p k v
  IOCHARS=0
  for p in $(ps -o pid= -g "$1" 2>/dev/null); do
    while read -r k v; do
      if [ "$k" = rchar: ] || [ "$k" = wchar: ]; then IOCHARS=$((IOCHARS + v)); fi
    done <"/proc/$p/io" 2>/dev/null || true
  done
}

# watchdog PGID MARKER: kills the group (and writes MARKER) when it stalls.
watchdog() {
  local g=$1 marker=$2 last=-1 since=$SECONDS
  trap - EXIT INT TERM HUP ERR
  while kill -0 "$g" 2>/dev/null; do
    read_iochars "$g"
    if [ $((IOCHARS - last)) -ge 1048576 ]; then
      last=$IOCHARS
      since=$SECONDS
    elif [ $((SECONDS - since)) -ge $STALL ]; then
      echo stalled >"$marker"
      kill -TERM -- "-$g" 2>/dev/null || true
      return 0
    fi
    nap 1
  done
}
# record TORRENT SEEDER DOWNLOADER ROUND STATUS WALL CPU RSS_KB SEED_CPU
record() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RUNS"
  log "$(printf '%-6s %-12s -> %-12s round %s: %-40s wall %s s, cpu %s s, rss %s kB, seeder cpu %s s' "$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$9")"
}

check_data() { # check_data TORRENT OUTDIR: cmp every file, and no extra files
  local t=$1 out=$2 f
  if [ "$t" = single ]; then
    cmp -s "$WORK/src/$SINGLE_NAME" "$out/$SINGLE_NAME" || return 1
  else
    while IFS= read -r f; do
      cmp -s "$WORK/src/$MULTI_NAME/$f" "$out/$MULTI_NAME/$f" || return 1
    done < <(cd "$WORK/src/$MULTI_NAME" && find . -type f | sort)
    [ "$(cd "$out/$MULTI_NAME" && find . -type f | wc -l)" = 100 ] || return 1
  fi
}

# timed_cli TORRENT SEEDER DOWNLOADER ROUND OUT CMD...: GNU time around CMD.
timed_cli() {
  local t=$1 s=$2 d=$3 r=$4 out=$5
  shift 5
  local tf=$WORK/log/time-$t-$s-$d-$r c0 c1 t0 t1 rc=0 u sy m
  read_ticks "$SEED_PID"
  c0=$TICKS
  t0=$EPOCHREALTIME
  spawn "$WORK/log/dl-$t-$s-$d-$r" timeout -k 5 "$DL_LIMIT" \
    "${DEATHSIG[@]}" /usr/bin/time -o "$tf" -f '%e %U %S %M' "${DEATHSIG[@]}" "$@"
  local dl=$LAST_PID marker=$WORK/log/dl-$t-$s-$d-$r.stalled
  watchdog "$dl" "$marker" &
  local wd=$!
  wait "$dl" || rc=$?
  t1=$EPOCHREALTIME
  kill "$wd" 2>/dev/null || true
  wait "$wd" 2>/dev/null || true
  read_ticks "$SEED_PID"
  c1=$TICKS
  SEED_CPU=$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz }')
  WALL=$(secs "$t0" "$t1")
  CPU="" RSS=""
  if [ -s "$tf" ]; then
    read -r _ u sy m < <(tail -1 "$tf") || true
    CPU=$(awk -v u="$u" -v s="$sy" 'BEGIN { printf "%.2f", u + s }')
    RSS=$m
  fi
  if [ -e "$marker" ]; then
    STATUS="stalled (no data for ${STALL}s)"
  elif [ $rc = 124 ] || [ $rc = 137 ]; then
    STATUS="timeout (${DL_LIMIT}s)"
  elif [ $rc != 0 ]; then
    STATUS="exit $rc"
  elif ! check_data "$t" "$out"; then
    STATUS="data differs"
  else
    STATUS=ok
  fi
}

run_shoal() { # TORRENT SEEDER ROUND OUT
  next_port
  # TCP, like aria2 and Transmission here: a shoal seeder takes uTP too,
  # and shoal dials uTP first (uTP is measured with --transport utp).
  local how=(--transport tcp)
  timed_cli "$1" "$2" shoal "$3" "$4" "$SHOAL" download "${TORRENT[$1]}" -o "$4" --port "$PORT" --quiet "${how[@]}"
}

run_shoal-utp() { # TORRENT SEEDER ROUND OUT: shoal over uTP only
  next_port
  timed_cli "$1" "$2" shoal-utp "$3" "$4" "$SHOAL" download "${TORRENT[$1]}" -o "$4" --port "$PORT" --quiet \
    --transport utp
}

run_aria2() { # TORRENT SEEDER ROUND OUT
  next_port
  timed_cli "$1" "$2" aria2 "$3" "$4" aria2c "${aria2_common[@]}" --listen-port="$PORT" \
    --seed-time=0 -d "$4" "${TORRENT[$1]}"
}

# Transmission as the downloader: the daemon is started before the timed
# window; the window runs from `transmission-remote -a` (or, with a shoal
# seeder, from the moment that seeder listens and dials Transmission) until
# Transmission's torrent-done script runs (all pieces hash-checked).
run_transmission() { # TORRENT SEEDER ROUND OUT
  local t=$1 s=$2 r=$3 out=$4 i
  local base=$WORK/log/dl-$t-$s-transmission-$r
  next_port
  local peer=$PORT
  next_port
  local rpc=$PORT
  local donef=$base.done
  tr_settings "$base.conf" "$peer" "$rpc" "$out" "$donef"
  spawn "$base" transmission-daemon -f -g "$base.conf" -x "$base.pid"
  local dpid=$LAST_PID
  tr_wait_rpc "$rpc" || die "transmission-daemon did not start (logs: $base.*)"
  local long_seeder=$SEED_PID long_port=$SEED_PORT c0 t0 run_seeder=""
  read_ticks "$SEED_PID"
  c0=$TICKS
  t0=$EPOCHREALTIME
  transmission-remote "127.0.0.1:$rpc" -a "${TORRENT[$t]}" -w "$out" >/dev/null
  if [ "$s" = shoal ]; then
    # Transmission 3.00 ignores 127.0.0.0/8 peers from trackers, so the seeder
    # must dial it. The long-running seeder learns new peers only at the
    # tracker's re-announce interval (opentracker: 30 min), so a fresh seeder
    # is started for this run with --peer; the long-running one is paused.
    for ((i = 0; i < 200; i++)); do
      tr_info "$rpc"
      [[ -n $TR_STATE && $TR_STATE != *Verif* && $TR_STATE != *Queued* ]] && break
      nap 0.05
    done
    kill -STOP -- "-$long_seeder"
    start_seeder shoal "$t" "127.0.0.1:$peer"
    run_seeder=$SEED_PID
    wait_listening "$WORK/log/seed-shoal-$t-$SEED_PORT.err" "$run_seeder" || die "per-run shoal seeder did not start"
    c0=$TICKS
    t0=$T_READY
  fi
  local deadline=$((SECONDS + DL_LIMIT)) t1="" last=-1 since=$SECONDS check=$SECONDS stalled=0
  while [ $SECONDS -lt $deadline ]; do
    if [ -s "$donef" ]; then
      read -r t1 <"$donef"
      break
    fi
    kill -0 "$dpid" 2>/dev/null || break
    if [ $SECONDS -ne $check ]; then
      check=$SECONDS
      read_iochars "$dpid"
      if [ $((IOCHARS - last)) -ge 1048576 ]; then
        last=$IOCHARS
        since=$SECONDS
      elif [ $((SECONDS - since)) -ge $STALL ]; then
        stalled=1
        break
      fi
    fi
    nap 0.02
  done
  read_ticks "$dpid"
  CPU=$(awk -v a="$TICKS" -v hz="$HZ" 'BEGIN { printf "%.2f", a / hz }')
  read_hwm "$dpid"
  RSS=$HWM
  read_ticks "$SEED_PID"
  SEED_CPU=$(awk -v a="$c0" -v b="$TICKS" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz }')
  tr_info "$rpc"
  local got=$TR_PCT
  stop "$dpid" 20
  if [ -n "$run_seeder" ]; then
    stop "$run_seeder"
    SEED_PID=$long_seeder
    SEED_PORT=$long_port
    kill -CONT -- "-$long_seeder"
  fi
  if [ -z "$t1" ]; then
    WALL=$(secs "$t0" "$EPOCHREALTIME")
    if [ "$s" = aria2 ] && [[ $got == 0% || $got == "" ]]; then
      STATUS="n/a (no data: Transmission ignores loopback tracker peers)"
    elif [ $stalled = 1 ]; then
      STATUS="stalled (no data for ${STALL}s, $got)"
    else
      STATUS="timeout (${DL_LIMIT}s, $got)"
    fi
    return
  fi
  WALL=$(secs "$t0" "$t1")
  if [[ $got != 100% ]]; then
    STATUS="incomplete ($got)"
  elif ! check_data "$t" "$out"; then
    STATUS="data differs"
  else
    STATUS=ok
  fi
}

DOWNLOADERS=(shoal aria2 transmission)
SEEDER_KINDS=(shoal aria2)
if [ $TR_SEEDER = 1 ]; then SEEDER_KINDS+=(transmission); fi
if [ $UTP = 1 ]; then DOWNLOADERS=(shoal shoal-utp) SEEDER_KINDS=(shoal); fi
ND=${#DOWNLOADERS[@]}

for t in "${TORRENTS[@]}"; do
  for s in "${SEEDER_KINDS[@]}"; do
    warm
    log "== $t torrent (${PIECE[$t]% *} pieces of ${PIECE[$t]#* } B): $s seeding"
    start_seeder "$s" "$t"
    SEED_HWM=0
    first=1
    for ((r = 1; r <= ROUNDS; r++)); do
      # alternate: round r starts with downloader r-1 (mod their number)
      for ((k = 0; k < ND; k++)); do
        d=${DOWNLOADERS[(r - 1 + k) % ND]}
        out=$DL/$t-$s-$d-$r
        rm -rf "$out"
        mkdir -p "$out"
        if [ "$s" = transmission ] && [ "$d" = transmission ]; then
          record "$t" "$s" "$d" "$r" "n/a (Transmission ignores loopback tracker peers)" "" "" "" ""
          continue
        fi
        if [ "$s" = transmission ] && [ $first = 0 ]; then restart_tr_seeder "$t"; fi
        first=0
        "run_$d" "$t" "$s" "$r" "$out"
        record "$t" "$s" "$d" "$r" "$STATUS" "$WALL" "$CPU" "$RSS" "$SEED_CPU"
        rm -rf "$out"
        sync
      done
    done
    read_hwm "$SEED_PID"
    if [ "$HWM" -gt "$SEED_HWM" ]; then SEED_HWM=$HWM; fi
    printf '%s\t%s\t%s\n' "$t" "$s" "$SEED_HWM" >>"$SEEDERS"
    stop "$SEED_PID" 20
  done
done

# ---------------------------------------------------------------- 5. report
{
  printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
  printf 'cpus\t%s\n' "$(nproc)"
  printf 'cpu_model\t%s\n' "$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
  printf 'kernel\t%s\n' "$(uname -r)"
  printf 'shoal\t%s\n' "$SHOAL_BUILD"
  printf 'aria2\t%s\n' "$(aria2c --version | head -1)"
  printf 'transmission\t%s\n' "$(transmission-daemon --version 2>&1 | head -1)"
  printf 'opentracker\t%s\n' "$(dpkg-query -W -f '${Version}' opentracker 2>/dev/null || echo '?')"
  printf 'openssl\t%s\n' "$(openssl version)"
  printf 'rounds\t%s\n' "$ROUNDS"
} >>"$LIMITS"

python3 - "$RUNS" "$LIMITS" "$SEEDERS" "$RESULTS" <<'EOF'
import csv, statistics, sys
runs_f, limits_f, seeders_f, out_f = sys.argv[1:]
L = dict(l.rstrip("\n").split("\t", 1) for l in open(limits_f) if "\t" in l)
runs = list(csv.DictReader(open(runs_f), delimiter="\t"))
seeders = list(csv.DictReader(open(seeders_f), delimiter="\t"))
size = int(L["size_bytes"]); gib = size / 2**30; mb = size / 1e6
ossl, tcp, tcpn = float(L["openssl_s"]), float(L["tcp_s"]), float(L["tcp_null_s"])
out = []
p = out.append

groups = {}
for r in runs:
    groups.setdefault((r["torrent"], r["seeder"], r["downloader"]), []).append(r)
M = {}
for k, rs in groups.items():
    ok = [r for r in rs if r["status"] == "ok"]
    if ok:
        M[k] = dict(
            n=len(ok), of=len(rs),
            wall=statistics.median(float(r["wall"]) for r in ok),
            cpu=statistics.median(float(r["cpu"]) for r in ok),
            rss=max(int(r["rss_kb"]) for r in ok) / 1024,
            seed=statistics.median(float(r["seed_cpu"]) for r in ok if r["seed_cpu"] != ""),
            walls=[float(r["wall"]) for r in ok])
    else:
        M[k] = dict(n=0, of=len(rs), status=sorted({r["status"] for r in rs}))

p(f"Loopback benchmark, {L['date']}, {L['cpus']} cores ({L['cpu_model']}), Linux {L['kernel']}; "
  f"{size / 2**20:.0f} MiB per torrent, {L['rounds']} rounds.")
p("")
p(f"Clients: {L['shoal']}; {L['aria2']}; {L['transmission']}; opentracker {L['opentracker']}; {L['openssl']}.")
p(f"Torrents: single file ({L['pieces_single'].split()[0]} pieces of {int(L['pieces_single'].split()[1]) // 1024} KiB), "
  f"100 files ({L['pieces_multi'].split()[0]} pieces of {int(L['pieces_multi'].split()[1]) // 1024} KiB).")
p("")
p("| machine limit (same run, warm page cache) | s | GB/s |")
p("|---|---:|---:|")
p(f"| L: `openssl dgst -sha1` over the file | {ossl:.3f} | {size / ossl / 1e9:.2f} |")
p(f"| D: `{L['disk_how']}` of the file into the download folder ({L['download_fs']}) | {float(L['disk_s']):.3f} | {size / float(L['disk_s']) / 1e9:.2f} |")
p(f"| loopback TCP copy file → socket → file | {tcp:.3f} | {size / tcp / 1e9:.2f} |")
p(f"| loopback TCP copy file → socket (received data dropped) | {tcpn:.3f} | {size / tcpn / 1e9:.2f} |")
p(f"| `shoal create` (CPU {float(L['create_cpu']):.2f} s, RSS {int(L['create_rss_kb']) / 1024:.1f} MiB) | {float(L['create_s']):.3f} | {size / float(L['create_s']) / 1e9:.2f} |")
p(f"| `shoal verify` (CPU {float(L['verify_cpu']):.2f} s, RSS {int(L['verify_rss_kb']) / 1024:.1f} MiB) | {float(L['verify_s']):.3f} | {size / float(L['verify_s']) / 1e9:.2f} |")
p("")
p("| torrent | seeder | downloader | ok runs | median wall s | MB/s | CPU s (user+sys) | peak RSS MiB | seeder CPU s | wall ÷ shoal's |")
p("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
for k in groups:
    t, s, d = k
    m = M[k]
    base = M.get((t, s, "shoal"), {})
    if m["n"]:
        ratio = f"{m['wall'] / base['wall']:.2f}" if base.get("n") else "–"
        p(f"| {t} | {s} | {d} | {m['n']}/{m['of']} | {m['wall']:.2f} | {mb / m['wall']:.0f} | {m['cpu']:.2f} | "
          f"{m['rss']:.1f} | {m['seed']:.2f} | {ratio} |")
    else:
        p(f"| {t} | {s} | {d} | 0/{m['of']} | {'; '.join(m['status'])} | | | | | |")
if seeders:
    p("")
    p("Seeder peak RSS (VmHWM over its whole run): " + ", ".join(
        f"{r['torrent']}/{r['seeder']} {int(r['peak_rss_kb']) / 1024:.1f} MiB" for r in seeders) + ".")

# ---- targets
p("")
p("| target (issue 5) | measured | result |")
p("|---|---|---|")
def res(ok):
    return "PASS" if ok else "**FAIL**"
def get(t, s, d):
    m = M.get((t, s, d))
    return m if m and m["n"] else None
torrents = sorted({k[0] for k in groups}, key=lambda x: x != "single")
for t in torrents:
    for s in ("shoal", "aria2"):
        sh = get(t, s, "shoal")
        if not sh:
            if (t, s, "shoal") in M:
                p(f"| {t}, {s} seeder: shoal download | no successful run | **FAIL** |")
            continue
        lim = ossl / 0.6
        p(f"| {t}, {s} seeder: shoal wall ≤ L/0.6 = {lim:.2f} s | {sh['wall']:.2f} s = {ossl / sh['wall'] * 100:.0f} % of L "
          f"({float(L['disk_s']) / sh['wall'] * 100:.0f} % of D) | {res(sh['wall'] <= lim)} |")
        for d in ("aria2", "transmission"):
            o = get(t, s, d)
            if o:
                p(f"| {t}, {s} seeder: shoal wall ≤ 0.5 × {d} | {sh['wall']:.2f} s vs {d} {o['wall']:.2f} s (×{sh['wall'] / o['wall']:.2f}) | {res(sh['wall'] <= 0.5 * o['wall'])} |")
            elif (t, s, d) in M:
                p(f"| {t}, {s} seeder: shoal wall ≤ 0.5 × {d} | {d}: {'; '.join(M[(t, s, d)].get('status', []))} | n/a |")
        others = [get(t, s, d) for d in ("aria2", "transmission") if get(t, s, d)]
        if others:
            best = min(o["cpu"] for o in others)
            p(f"| {t}, {s} seeder: shoal CPU/GiB ≤ 0.7 × best other | {sh['cpu'] / gib:.2f} vs {best / gib:.2f} s/GiB (×{sh['cpu'] / best:.2f}) | {res(sh['cpu'] <= 0.7 * best)} |")
    for d in ("aria2", "transmission"):
        a, b = get(t, "shoal", d), get(t, "aria2", d)
        if a and b:
            p(f"| {t}: {d} from shoal seeder ≤ from aria2 seeder | {a['wall']:.2f} s vs {b['wall']:.2f} s | {res(a['wall'] <= b['wall'])} |")
        elif (t, "shoal", d) in M or (t, "aria2", d) in M:
            p(f"| {t}: {d} from shoal seeder ≤ from aria2 seeder | missing runs | n/a |")
    for d in ("shoal", "aria2", "transmission"):
        a, b = get(t, "shoal", d), get(t, "aria2", d)
        if a and b:
            p(f"| {t}: shoal seeder CPU/GiB < aria2 seeder's (downloader {d}) | {a['seed'] / gib:.2f} vs {b['seed'] / gib:.2f} s/GiB | {res(a['seed'] < b['seed'])} |")
for what in ("create", "verify"):
    ts = float(L[f"{what}_s"])
    p(f"| `shoal {what}` ≥ 1.4 × openssl throughput | {size / ts / 1e9:.2f} vs {size / ossl / 1e9:.2f} GB/s (×{ossl / ts:.2f}) | {res(ossl / ts >= 1.4)} |")
for t in torrents:
    tcp_run, utp_run = get(t, "shoal", "shoal"), get(t, "shoal", "shoal-utp")
    if tcp_run and utp_run:
        share = tcp_run["wall"] / utp_run["wall"]
        p(f"| {t}: uTP throughput ≥ 50 % of TCP's (issue 20) | {mb / utp_run['wall']:.0f} vs {mb / tcp_run['wall']:.0f} MB/s = {share * 100:.0f} % | {res(share >= 0.5)} |")
        for name, m in (("TCP", tcp_run), ("uTP", utp_run)):
            p(f"| {t}: CPU per GiB over {name} (downloader + seeder) | {m['cpu'] / gib:.2f} + {m['seed'] / gib:.2f} s/GiB | (reported) |")
rss = [M[k]["rss"] for k in M if k[2] == "shoal" and M[k]["n"]]
if rss:
    p(f"| shoal download peak RSS ≤ 40 MiB | max {max(rss):.1f} MiB | {res(max(rss) <= 40)} |")
if abs(gib - 1) > 1e-9:
    p("")
    p(f"(Targets are stated for 1 GiB; this run used {size / 2**20:.0f} MiB.)")
text = "\n".join(out) + "\n"
open(out_f, "w").write(text)
print(text)
EOF
cp "$RUNS" "${RESULTS%.md}.runs.tsv"
log "results: $RESULTS (per-run data: ${RESULTS%.md}.runs.tsv)"
