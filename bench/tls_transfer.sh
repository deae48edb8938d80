#!/usr/bin/env bash
# What mutual TLS and the unprivileged network front cost the image data
# path: upload and download of a fully written raw volume through the
# local Unix socket and through TCP (TLS 1.3, client certificate, relayed
# by the front), in one run on the same file system, next to a local
# `dd bs=8M conv=fsync` of the same bytes. Every transfer is checked with
# cmp. Rewrites the tls-transfer table in bench/RESULTS.md.
#   SIZE_GIB=2 bench/tls_transfer.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
SIZE_GIB=${SIZE_GIB:-2}
WORK=${BENCH_DIR:-$PWD/bench/work}/tls-transfer
cleanup() { [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true; }
trap cleanup EXIT
rm -rf "$WORK"; mkdir -p "$WORK"
cargo build --release --bins >&2
DATA=$WORK/cairn
target/release/cairn pki init --dir "$DATA/pki" >/dev/null
target/release/cairn pki issue host --host --san 127.0.0.1 --dir "$DATA/pki" >/dev/null
target/release/cairn pki issue client --client --dir "$DATA/pki" >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/release/cairnd --data-dir "$DATA" --listen "127.0.0.1:$PORT" --log-level warn >"$WORK/cairnd.log" 2>&1 &
PID=$!
SOCK=$DATA/cairnd.sock
for _ in $(seq 200); do [ -S "$SOCK" ] && break; sleep 0.05; done
UNIX="target/release/cairn --data-dir $DATA --json"
TLS="target/release/cairn --data-dir $DATA --connect 127.0.0.1:$PORT --json"
now() { date +%s.%N; }
secs() { python3 -c "print($2 - $1)"; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
vol() { local v; v=$($UNIX volume create --size "${SIZE_GIB}G" --format raw --allocation sparse --wait); echo "$(field "$v" imageID) $(field "$v" volumeID)"; }

local_file=$WORK/local.raw
python3 - "$local_file" "$SIZE_GIB" <<'PY'
import os, sys
with open(sys.argv[1], "wb") as f:
    block = os.urandom(1 << 20)
    for _ in range(int(sys.argv[2]) * 1024):
        f.write(block)
PY
sync
drop; t0=$(now); dd if="$local_file" of="$WORK/dd.raw" bs=8M conv=fsync status=none; t1=$(now)
dd_s=$(secs "$t0" "$t1"); cmp "$local_file" "$WORK/dd.raw"; rm -f "$WORK/dd.raw"
results=()
for via in UNIX TLS; do
    cli=${!via}
    read -r img vol <<<"$(vol)"
    drop; t0=$(now); $cli image upload "$local_file" "$img" "$vol" >/dev/null; t1=$(now)
    up=$(secs "$t0" "$t1")
    drop; t0=$(now); $cli image download "$img" "$vol" "$WORK/down.raw" >/dev/null; t1=$(now)
    down=$(secs "$t0" "$t1")
    cmp "$local_file" "$WORK/down.raw"; rm -f "$WORK/down.raw"
    $UNIX image delete "$img" --wait >/dev/null
    results+=("$up" "$down")
done
python3 - "$SIZE_GIB" "$dd_s" "${results[@]}" <<'PY'
import datetime, platform, sys
sys.path.insert(0, "bench")
from results import publish
gib = int(sys.argv[1])
dd, uu, ud, tu, td = map(float, sys.argv[2:7])
mb = lambda s: gib * 1024 / s
rows = [
    (f"upload {gib} GiB", f"{mb(uu):,.0f} MiB/s", f"{mb(tu):,.0f} MiB/s", f"{uu / tu:.2f}x"),
    (f"download {gib} GiB", f"{mb(ud):,.0f} MiB/s", f"{mb(td):,.0f} MiB/s", f"{ud / td:.2f}x"),
]
out = [f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()}, release build, page cache dropped before each transfer; local dd bs=8M conv=fsync of the same bytes: {mb(dd):,.0f} MiB/s.", "",
       "| transfer (`cairn image upload/download`) | Unix socket | TCP, mutual TLS via the front | TLS / Unix |", "|---|---|---|---|"] + [f"| {' | '.join(r)} |" for r in rows]
publish("tls-transfer", "\n".join(out))
PY
