#!/usr/bin/env bash
# raw->raw copy of a fully written volume (default 4 GiB): Cairn's
# SDM.copy_data against `dd iflag=direct oflag=direct bs=8M` and
# `qemu-img convert` (default options), same file system, one run, page
# cache dropped before each copy, medians of three alternating rounds.
# Every copy is checked byte for byte.
# Rewrites the copy table in bench/RESULTS.md.
#   SIZE_GIB=4 bench/copy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
SIZE_GIB=${SIZE_GIB:-4}
WORK=${BENCH_DIR:-$PWD/bench/work}/copy
rm -rf "$WORK"; mkdir -p "$WORK"
cargo build --release --bins --example cairn-bench >&2
target/release/cairnd --data-dir "$WORK/cairn" --log-level warn >"$WORK/cairnd.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
SOCK=$WORK/cairn/cairnd.sock
for _ in $(seq 200); do [ -S "$SOCK" ] && break; sleep 0.05; done
CAIRN="target/release/cairn --socket $SOCK --json"
size=$((SIZE_GIB << 30))
src=$($CAIRN volume create --size "$size" --format raw --allocation preallocated --wait)
dst=$($CAIRN volume create --size "$size" --format raw --allocation sparse --wait)
sd=$($CAIRN status | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["master_uuid"])')
root=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["info"]["remotePath"])' "$($CAIRN call StorageDomain.getInfo "{\"storagedomainID\": \"$sd\"}" | python3 -c 'import json,sys; print(json.dumps({"info": json.load(sys.stdin)}))')")/$sd
path() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]); print(sys.argv[2] + "/images/" + v["imageID"] + "/" + v["volumeID"])' "$1" "$root"; }
SRC=$(path "$src"); DST=$(path "$dst")
writes=(); for ((g = 0; g < SIZE_GIB; g++)); do writes+=(-c "write -P 0x5a ${g}G 1G"); done
qemu-io -f raw "${writes[@]}" "$SRC" >/dev/null
sync
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
check() { cmp -s "$SRC" "$1" || { echo "copy $1 differs from the source" >&2; exit 1; }; }

copy_s() { target/release/examples/cairn-bench copy --socket "$SOCK" --src "$1" --dst "$2" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])'; }
ids() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]); print(v["imageID"] + "/" + v["volumeID"])' "$1"; }
median() { python3 -c 'import sys; v=sorted(map(float, sys.argv[1:])); print(v[len(v)//2])' "$@"; }
# This disk varies by +-30% between runs: alternate three rounds, keep medians.
dd_runs=(); qemu_runs=(); cairn_runs=()
for _ in 1 2 3; do
    drop; t0=$(now); dd if="$SRC" of="$WORK/dd.out" iflag=direct oflag=direct bs=8M status=none; t1=$(now)
    dd_runs+=("$(python3 -c "print($t1-$t0)")"); check "$WORK/dd.out"; rm -f "$WORK/dd.out"
    drop; t0=$(now); qemu-img convert -f raw -O raw "$SRC" "$WORK/qemu.out"; t1=$(now)
    qemu_runs+=("$(python3 -c "print($t1-$t0)")"); check "$WORK/qemu.out"; rm -f "$WORK/qemu.out"
    drop; cairn_runs+=("$(copy_s "$(ids "$src")" "$(ids "$dst")")"); check "$DST"
done
dd_s=$(median "${dd_runs[@]}"); qemu_s=$(median "${qemu_runs[@]}"); cairn_s=$(median "${cairn_runs[@]}")
fs=$(df --output=fstype "$WORK" | tail -1)
python3 - "$SIZE_GIB" "$dd_s" "$qemu_s" "$cairn_s" "$fs" <<'PY'
import datetime, platform, sys
sys.path.insert(0, "bench")
from results import publish
gib, dd, qemu, cairn, fs = int(sys.argv[1]), *map(float, sys.argv[2:5]), sys.argv[5]
mb = lambda s: gib * 1024 / s
rows = [
    ("Cairn SDM.copy_data (MiB/s)", f"{mb(cairn):,.0f}", ""),
    ("dd iflag=direct oflag=direct bs=8M (MiB/s)", f"{mb(dd):,.0f}", f"Cairn at {dd / cairn * 100:.0f}% of dd (target ≥ 90%)"),
    ("qemu-img convert, default options (MiB/s)", f"{mb(qemu):,.0f}", f"Cairn {qemu / cairn:.2f}x qemu-img (target ≥ 1.2x)"),
]
out = [f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()}, {fs}, {gib} GiB fully written raw volume, page cache dropped before each copy, medians of three alternating runs.", "",
       "| copy | throughput | ratio |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
text = "\n".join(out)
publish("copy", text)
PY
