#!/usr/bin/env bash
# The swarm simulator (docs/sim.md): builds it in release (cargo's bench
# profile) and runs it with the given options, e.g.
#   bash benches/sim/run.sh --peers 1000 --seed 3
#   bash benches/sim/run.sh --peers 20 --free-share 0.2
# `--help` lists them all. Its last line: sim: N=… T=…s T*=…s ratio=… wall=…s
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo bench -q --bench sim --no-run >&2
exec cargo bench -q --bench sim -- "$@"
