#!/usr/bin/env bash
# Runs the rows of docs/sim.md (or the named ones) and keeps each run's
# output and samples in docs/sim/NAME/; then draws the plots and prints
# the table (benches/sim/plot.py).
#   bash benches/sim/rows.sh            # every row
#   bash benches/sim/rows.sh n10 n20    # some
set -euo pipefail
cd "$(dirname "$0")/../.."
declare -A ROWS=(
  [n10]="--peers 10"
  [n20]="--peers 20"
  [n40]="--peers 40"
  [n100]="--peers 100"
  [n1000]="--peers 1000"
  [n1000p256]="--peers 1000 --piece 256KiB"
  [n5000p256]="--peers 5000 --piece 256KiB"
  [het10]="--peers 10 --up 4M,8M,16M"
  [het20]="--peers 20 --up 4M,8M,16M"
  [het100]="--peers 100 --up 4M,8M,16M"
  [flash20]="--peers 20 --join flash"
  [flash100]="--peers 100 --join flash"
  [churn20]="--peers 20 --churn 6"
  [churn100]="--peers 100 --churn-share 0.5"
  [free20]="--peers 20 --free-riders 4"
  [free100]="--peers 100 --free-share 0.2"
  [super10]="--peers 10 --super-seed"
  [leaves10]="--peers 10 --seed-leaves"
  [superleaves10]="--peers 10 --seed-leaves --super-seed"
  [leaves100]="--peers 100 --seed-leaves"
  [superleaves100]="--peers 100 --seed-leaves --super-seed"
)
ORDER=(n10 n20 n40 n100 n1000 n1000p256 n5000p256 het10 het20 het100 flash20 flash100
       churn20 churn100 free20 free100 super10 leaves10 superleaves10 leaves100 superleaves100)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${ORDER[@]}")
cargo bench -q --bench sim --no-run >&2
for name in "${names[@]}"; do
  args=${ROWS[$name]:?unknown row $name}
  dir=docs/sim/$name
  mkdir -p "$dir"
  echo "== $name: $args (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  # shellcheck disable=SC2086
  cargo bench -q --bench sim -- $args --out "$dir" > "$dir/out.txt" 2> "$dir/err.txt"
  printf 'args: %s\nload: %s\n' "$args" "$(cut -d' ' -f1 /proc/loadavg)" > "$dir/meta.txt"
  tail -1 "$dir/out.txt" >&2
done
python3 benches/sim/plot.py docs/sim
