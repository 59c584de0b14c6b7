#!/usr/bin/env bash
# The runs behind docs/swarm.md, one after the other. Each is one command of
# benches/swarm/run.sh (printed before it runs); its report.md and swarm.svg
# go to docs/swarm/<name>/, the full run folder to $RUNS/<name> (default
# /tmp/swarm-runs). The load average before each run is printed too: this
# is a shared 2-core machine, and a compile next door shows in T.
#
#   bash benches/swarm/measure.sh [--transport utp|tcp|both] [NAME...]
#                                       (default: all of them)
# With --transport, every shoal peer uses it and a run NAME is kept as
# NAME-<transport> (docs/swarm/n10-utp/, ...).
set -uo pipefail
TRANSPORT=
if [ "${1:-}" = --transport ]; then TRANSPORT=$2; shift 2; fi
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
RUNS=${RUNS:-/tmp/swarm-runs}
base=(--size 16M --seed-up 16mbit --down 100mbit)
declare -A runs=(
  [n5]="--leechers 5 --up 8mbit"
  [n10]="--leechers 10 --up 8mbit"
  [n20]="--leechers 20 --up 8mbit"
  [n40]="--leechers 40 --up 8mbit --timeout 240"
  [het10]="--leechers 10 --up 4mbit,8mbit,16mbit"
  [het20]="--leechers 20 --up 4mbit,8mbit,16mbit"
  [free20]="--leechers 20 --up 8mbit --free-riders 4"
  [flash20]="--leechers 20 --up 8mbit --join flash"
  [churn20]="--leechers 20 --up 8mbit --churn 6"
  [aria10]="--leechers 10 --up 8mbit --client aria2"
  [tr10]="--leechers 10 --up 8mbit --client transmission --timeout 240"
  [slots1]="--leechers 10 --up 8mbit --seed-slots 1"
  [slots2]="--leechers 10 --up 8mbit --seed-slots 2"
  [slots8]="--leechers 10 --up 8mbit --seed-slots 8"
  [lslots2]="--leechers 10 --up 8mbit --leech-slots 2"
  [lslots8]="--leechers 10 --up 8mbit --leech-slots 8"
  [leaves10]="--leechers 10 --up 8mbit --seed-leaves --timeout 60"
  [super10]="--leechers 10 --up 8mbit --super-seed"
  [super20]="--leechers 20 --up 8mbit --super-seed"
  [superleaves10]="--leechers 10 --up 8mbit --super-seed --seed-leaves --timeout 60"
  [dht10]="--leechers 10 --up 8mbit --trackerless"
  [linger10]="--leechers 10 --up 8mbit --linger"
  [lingerhet20]="--leechers 20 --up 4mbit,8mbit,16mbit --linger"
)
order=(n5 n10 n20 n40 het10 het20 free20 flash20 churn20 aria10 tr10 slots1 slots2 slots8 lslots2 lslots8 leaves10 super10 super20 superleaves10 dht10 linger10 lingerhet20)
[ $# -gt 0 ] && order=("$@")
for run in "${order[@]}"; do
  args=${runs[$run]:?unknown run $run}
  name=$run
  if [ -n "$TRANSPORT" ]; then
    args="$args --transport $TRANSPORT"
    name=$run-$TRANSPORT
  fi
  echo "== $name: bash benches/swarm/run.sh ${base[*]} $args   (load:$(uptime | sed 's/.*average://'))"
  rm -rf "${RUNS:?}/$name"
  # shellcheck disable=SC2086
  bash "$here/run.sh" "${base[@]}" $args --keep "$RUNS/$name" >"$RUNS.$name.out" 2>&1
  rc=$?
  grep -E '^(T =|leecher time|per leecher|free riders|seeder upload|seeder uploaded|l[0-9]+ restarted|swarm:)' "$RUNS.$name.out"
  [ $rc = 0 ] || { echo "(exit $rc)"; tail -5 "$RUNS.$name.out"; }
  if [ -f "$RUNS/$name/report.md" ]; then
    mkdir -p "$root/docs/swarm/$name"
    cp "$RUNS/$name/report.md" "$RUNS/$name/swarm.svg" "$root/docs/swarm/$name/"
  fi
done
