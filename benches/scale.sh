#!/usr/bin/env bash
# Large torrents, end to end on loopback: a torrent of 100k pieces and one of
# 10k files (and with --huge, 16 GiB in 1M pieces), each created, seeded and
# downloaded by shoal. Prints times and the downloader's peak RSS, to show
# there is no quadratic behaviour and memory stays bounded.
# Usage: bash benches/scale.sh [--huge]
#        bash benches/scale.sh --service N   (N torrents in one `shoal serve`,
#        compared with transmission-daemon: see benches/scale_service.py)
#        bash benches/scale.sh --seed-peers N  (one seeder, N leechers: RSS per
#        peer and CPU per GiB served, see benches/seed_many.py)
set -euo pipefail
# Benchmarks stay on loopback: no SSDP or NAT-PMP toward the real router.
export SHOAL_NO_PORT_MAPPING=1
cd "$(dirname "$0")/.."
huge=0
[ "${1:-}" = "--huge" ] && huge=1
cargo build --release -q
S=$PWD/target/release/shoal
if [ "${1:-}" = "--service" ]; then
  # The Python side starts every process in a session of its own and stops
  # them, and removes its temporary folder, on exit, Ctrl-C or SIGTERM.
  exec python3 benches/scale_service.py "$S" "${2:-1000}"
fi
if [ "${1:-}" = "--seed-peers" ]; then
  exec python3 benches/seed_many.py "$S" "${2:-200}" "${3:-20}"
fi
work=$(mktemp -d /tmp/shoal-scale.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run NAME SRC_PARENT TORRENT: create → seed → download; one line of figures.
run() {
  local name=$1 src=$2 t=$3
  local p; p=$(port)
  local t0 t1 t2
  t0=$(date +%s.%N)
  "$S" seed "$t" --from "$src" --port "$p" --quiet & pids+=($!)
  local seed_pid=$!
  # Seed start-up is the verify of all data; wait until it listens.
  until python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$p)))" 2>/dev/null; do sleep 0.05; done
  t1=$(date +%s.%N)
  /usr/bin/time -f "%e %M" -o "$work/time.$name" "$S" download "$t" -o "$work/dl.$name" --peer "127.0.0.1:$p" --port "$(port)" --quiet
  t2=$(date +%s.%N)
  kill "$seed_pid"; wait "$seed_pid" 2>/dev/null || true
  read -r wall rss < "$work/time.$name"
  printf '| %s | %s | %.2f | %.2f | %d |\n' "$name" "$4" "$(echo "$t1 - $t0" | bc)" "$wall" "$((rss / 1024))"
  rm -rf "$work/dl.$name"
}

echo "| torrent | create s | seed start-up (verify) s | download s | download peak RSS MiB |"
echo "|---|---|---|---|---|"

# 100k pieces of 16 KiB (1.6 GB, sparse zeros).
mkdir -p "$work/pieces"
truncate -s $((16384 * 100000)) "$work/pieces/big.bin"
c0=$(date +%s.%N)
"$S" create "$work/pieces/big.bin" -o "$work/pieces.torrent" --piece-length 16384 >/dev/null
c1=$(date +%s.%N)
run "100k pieces (1.6 GB)" "$work/pieces" "$work/pieces.torrent" "$(printf '%.2f' "$(echo "$c1 - $c0" | bc)")"
rm -rf "$work/pieces"

# 10k files of 4 KiB in 100 folders.
mkdir -p "$work/files/many"
python3 - "$work/files/many" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(100):
    os.makedirs(f"{root}/d{d:03}", exist_ok=True)
    for f in range(100):
        with open(f"{root}/d{d:03}/f{f:03}.bin", "wb") as fh:
            fh.write(os.urandom(4096))
PY
c0=$(date +%s.%N)
"$S" create "$work/files/many" -o "$work/files.torrent" --piece-length 16384 >/dev/null
c1=$(date +%s.%N)
run "10k files (40 MB)" "$work/files" "$work/files.torrent" "$(printf '%.2f' "$(echo "$c1 - $c0" | bc)")"
rm -rf "$work/files"

if [ $huge = 1 ]; then
  # 1M pieces of 16 KiB: 16 GiB of sparse zeros.
  mkdir -p "$work/huge"
  truncate -s $((16384 * 1048576)) "$work/huge/huge.bin"
  c0=$(date +%s.%N)
  "$S" create "$work/huge/huge.bin" -o "$work/huge.torrent" --piece-length 16384 >/dev/null
  c1=$(date +%s.%N)
  run "1M pieces (16 GiB)" "$work/huge" "$work/huge.torrent" "$(printf '%.2f' "$(echo "$c1 - $c0" | bc)")"
fi
