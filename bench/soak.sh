#!/usr/bin/env bash
# Kill -9 soak (not run by CI): random mutating workloads from several
# clients, cairnd killed with SIGKILL at random moments, invariants checked
# after every restart. Prints a JSON summary; fails if any invariant broke.
#   ROUNDS=50 CLIENTS=4 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
cargo build --release --bins --example cairn-soak >&2
exec target/release/examples/cairn-soak --rounds "${ROUNDS:-50}" --clients "${CLIENTS:-4}"
