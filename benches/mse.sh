#!/usr/bin/env bash
# The cost of encryption on loopback: shoal seeds a 1 GiB single-file torrent
# to a shoal leecher over one connection (`--peer`, no tracker, no DHT/LSD),
# with both sides at `--encryption plain`, `prefer` (the handshake is hidden,
# the data flows plain) and `require` (RC4 both ways), in alternating order.
#
#   bash benches/mse.sh [--size-mib N] [--rounds R] [--baseline BIN]
#
# --baseline BIN  also times BIN (another shoal build, e.g. main before the
#                 encryption work) seeding and leeching plain, to show that
#                 plain connections did not get slower.
# Prints one line per download and the medians with their ratio to plain.
# Builds shoal in release first. Scratch data goes under ${TMPDIR:-/tmp}.
set -Eeuo pipefail
SIZE_MIB=1024 ROUNDS=3 BASELINE=""
while [ $# -gt 0 ]; do
  case $1 in
    --size-mib) SIZE_MIB=${2:?}; shift 2 ;;
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --baseline) BASELINE=${2:?}; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# SHOAL_BIN: a shoal binary to time instead of building this tree's.
if [ -z "${SHOAL_BIN:-}" ]; then (cd "$REPO" && cargo build --release --bin shoal >&2); fi
SHOAL=${SHOAL_BIN:-$REPO/target/release/shoal}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shoal-mse-bench.XXXXXX")
SEEDER=""
cleanup() { [ -n "$SEEDER" ] && kill "$SEEDER" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
export SHOAL_NO_DHT=1 SHOAL_NO_LSD=1 SHOAL_NO_PORT_MAPPING=1

mkdir -p "$WORK/src"
head -c $((SIZE_MIB * 1048576)) /dev/urandom > "$WORK/src/data.bin"
"$SHOAL" create "$WORK/src/data.bin" -o "$WORK/t.torrent" --force >/dev/null

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# one BIN MODE: prints the seconds of one complete, verified download.
one() {
  local bin=$1 mode=$2 p out t0 t1
  p=$(port)
  # Timed from the seeder's `seeding` event: its check of the data (slow
  # when the page cache dropped the file) is not part of the download.
  : > "$WORK/seed.json"
  "$bin" seed "$WORK/t.torrent" --from "$WORK/src" --port "$p" --json \
    ${mode:+--encryption $mode} > "$WORK/seed.json" 2>/dev/null & SEEDER=$!
  until grep -q '"event":"seeding"' "$WORK/seed.json"; do
    kill -0 "$SEEDER" 2>/dev/null || { echo "the seeder exited ($bin $mode)" >&2; exit 1; }
    sleep 0.1
  done
  out="$WORK/out"; rm -rf "$out"
  t0=$EPOCHREALTIME
  "$bin" download "$WORK/t.torrent" -o "$out" --port "$(port)" --quiet \
    --peer "127.0.0.1:$p" ${mode:+--encryption $mode}
  t1=$EPOCHREALTIME
  kill "$SEEDER"; wait "$SEEDER" 2>/dev/null || true; SEEDER=""
  cmp -s "$WORK/src/data.bin" "$out/data.bin" || { echo "data differs ($bin $mode)" >&2; exit 1; }
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}

one "$SHOAL" plain >/dev/null # warm-up (page cache, CPU frequency): not counted
declare -A TIMES
CASES=("$SHOAL plain" "$SHOAL prefer" "$SHOAL require")
[ -n "$BASELINE" ] && CASES+=("$BASELINE -")
for r in $(seq 1 "$ROUNDS"); do
  order=()
  for i in "${!CASES[@]}"; do
    if [ $((r % 2)) -eq 1 ]; then order+=("${CASES[$i]}"); else order=("${CASES[$i]}" "${order[@]}"); fi
  done
  for c in "${order[@]}"; do
    read -r bin mode <<<"$c"
    label=$mode; [ "$bin" != "$SHOAL" ] && label="baseline"
    m=$mode; [ "$m" = "-" ] && m=""
    s=$(one "$bin" "$m")
    echo "round $r  $label  ${s}s  $(python3 -c "print(f'{$SIZE_MIB/$s:.0f}')") MiB/s"
    TIMES[$label]+="$s "
  done
done
echo
python3 - "$SIZE_MIB" "${TIMES[plain]}" "${TIMES[prefer]}" "${TIMES[require]}" "${TIMES[baseline]:-}" <<'PY'
import statistics, sys
mib = int(sys.argv[1])
names = ["plain", "prefer", "require", "baseline"]
med = {n: statistics.median(map(float, v.split())) for n, v in zip(names, sys.argv[2:]) if v.strip()}
for n, m in med.items():
    print(f"{n:9} median {m:7.3f} s  {mib/m:6.0f} MiB/s  ratio to plain {m/med['plain']:.3f}")
PY
