#!/usr/bin/env bash
# The Cinder face (issue 13), in one run on one cairnd with its embedded
# local domain (the machine's disk): thin 1 GiB volume create + delete per
# second through the Cinder API beside the same work through Cairn's
# JSON-RPC, and the list of LIST volumes with details (pages of 1000).
# A real Cinder is not run beside it: its volume drivers need an NFS client
# (NFS driver) or device-mapper (LVM driver), which this machine's kernel
# lacks, and without a volume service its API stores nothing. LIST thin
# volumes of 1 GiB promise more than 20 times a small disk (Cinder's default
# over-subscription), so the run allows more.
#   bench/cinder.sh        PAIRS=100 LIST=10000
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
cargo build --release --bins >&2
PAIRS=${PAIRS:-100}
LIST=${LIST:-10000}
work=$(mktemp -d /tmp/cairn-cinder-bench.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
daemon=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
target/release/cairnd --data-dir "$work/data" --log-level warn \
    --cinder-listen "127.0.0.1:$port" --cinder-auth noauth \
    --cinder-over-subscription 10000 2>> "$work/cairnd.log" &
daemon=$!
for _ in $(seq 600); do [ -S "$work/data/cairnd.sock" ] && break; sleep 0.1; done
sleep 1
python3 bench/cinder_bench.py "$work/data/cairnd.sock" "127.0.0.1:$port" "$PAIRS" "$LIST" > "$work/out.json"
python3 - "$(cat "$work/out.json")" <<'PY'
import datetime, json, platform, sys
sys.path.insert(0, "bench")
from results import publish
r = json.loads(sys.argv[1])
rows = [
    (f"thin 1 GiB volume create + delete, one after the other ({r['pairs']} pairs)",
     f"{r['cinder_pairs_s']:.1f} pairs/s", f"{r['rpc_pairs_s']:.1f} pairs/s (Volume.create + Image.delete, tasks waited)",
     f"{r['cinder_pairs_s'] / r['rpc_pairs_s']:.2f}"),
    (f"list {r['count']} volumes with details ({-(-r['count'] // 1000)} pages of 1000)",
     f"{r['list_s'] * 1000:.0f} ms", f"{r['rpc_images_s'] * 1000:.0f} ms (StorageDomain.getImages: ids only)", "—"),
    (f"create {r['count']} volumes through the API (sequential requests)",
     f"{r['count'] / r['fill_s']:.0f} volumes/s", "—", "—"),
]
table = "\n".join(["| measure | Cinder face | Cairn JSON-RPC | ratio |", "|---|---|---|---|"] +
                  [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows])
publish("cinder", f"""Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC on {platform.node()}, cairnd's embedded local
domain on the machine's disk, one client, keep-alive HTTP on loopback. A real Cinder was not run:
its volume drivers need an NFS client or device-mapper, which this kernel lacks.

{table}
""")
PY
