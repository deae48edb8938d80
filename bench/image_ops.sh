#!/usr/bin/env bash
# Issue 4's image benchmarks, Cairn side by side with its peer in one run,
# on a loop-mounted xfs with reflink (so reflink clones can be measured):
#   - qcow2->qcow2 copy of a fully written volume: SDM.copy_data vs
#     `qemu-img convert -t none -T none -W -m 16` (medians of three runs);
#   - copy of an empty 1 TiB volume, raw and qcow2: SDM.copy_data vs
#     `qemu-img convert` (target: under 1 s);
#   - reflink clone of a written 10 GiB raw volume: SDM.copy_data vs
#     `cp --reflink=always` (target: under 50 ms);
#   - snapshot creation through the API: p50 and p99 (targets 20/100 ms),
#     next to `qemu-img create -b` run as a process;
#   - upload and download of a fully written volume through the HTTP
#     transfer (`cairn image upload/download`) vs a local copy of the same
#     bytes, `dd bs=8M conv=fsync` (target: at least 70%).
# Every copy is checked (qemu-img compare or cmp). Rewrites the
# image-ops table in bench/RESULTS.md.
#   SIZE_GIB=4 CLONE_GIB=10 SNAPSHOTS=200 bench/image_ops.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
SIZE_GIB=${SIZE_GIB:-4}
CLONE_GIB=${CLONE_GIB:-10}
SNAPSHOTS=${SNAPSHOTS:-200}
WORK=${BENCH_DIR:-$PWD/bench/work}/image-ops
MNT=$WORK/xfs
cleanup() {
    [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    mountpoint -q "$MNT" && umount "$MNT" || true
    [ -n "${LOOP:-}" ] && losetup -d "$LOOP" 2>/dev/null || true
}
trap cleanup EXIT
umount "$MNT" 2>/dev/null || true
rm -rf "$WORK"; mkdir -p "$MNT"
truncate -s $(((SIZE_GIB * 5 + CLONE_GIB + 8) << 30)) "$WORK/xfs.img"
# Direct I/O to the backing file: no second page cache under the xfs.
LOOP=$(losetup --direct-io=on -f --show "$WORK/xfs.img")
mkfs.xfs -q -m reflink=1 "$LOOP"
mount "$LOOP" "$MNT"
cargo build --release --bins --example cairn-bench >&2
target/release/cairnd --data-dir "$MNT/cairn" --log-level warn >"$WORK/cairnd.log" 2>&1 &
PID=$!
SOCK=$MNT/cairn/cairnd.sock
for _ in $(seq 200); do [ -S "$SOCK" ] && break; sleep 0.05; done
CAIRN="target/release/cairn --socket $SOCK --json"
BENCH=target/release/examples/cairn-bench
now() { date +%s.%N; }
secs() { python3 -c "print($2 - $1)"; }
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
median() { python3 -c 'import sys; v=sorted(map(float, sys.argv[1:])); print(v[len(v)//2])' "$@"; }
sd=$($CAIRN status | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["master_uuid"])')
vol() { # size format allocation -> IMG/VOL
    local v; v=$($CAIRN volume create --size "$1" --format "$2" --allocation "$3" --wait)
    echo "$(field "$v" imageID)/$(field "$v" volumeID)"
}
path() { echo "$MNT/cairn/storage/local/$sd/images/$1"; }
fill() { # path format GiB: write every byte
    local w=(); for ((g = 0; g < $3; g++)); do w+=(-c "write -P 0x5a ${g}G 1G"); done
    qemu-io -f "$2" "${w[@]}" "$1" >/dev/null
}
copy_s() { field "$($BENCH copy --socket "$SOCK" --src "$1" --dst "$2")" seconds; }
same() { qemu-img compare -q -f "$2" -F "$4" "$1" "$3" || { echo "copy $3 differs from $1" >&2; exit 1; }; }

# qcow2 -> qcow2, fully written.
src=$(vol "${SIZE_GIB}G" cow sparse); dst=$(vol "${SIZE_GIB}G" cow sparse)
fill "$(path "$src")" qcow2 "$SIZE_GIB"; sync
# This disk varies by +-30% between runs: alternate three runs each, keep
# the medians.
peer_runs=(); cairn_runs=()
for _ in 1 2 3; do
    drop; t0=$(now); qemu-img convert -t none -T none -W -m 16 -f qcow2 -O qcow2 "$(path "$src")" "$WORK/peer.qcow2"; t1=$(now)
    peer_runs+=("$(secs "$t0" "$t1")"); same "$(path "$src")" qcow2 "$WORK/peer.qcow2" qcow2; rm -f "$WORK/peer.qcow2"
    drop; cairn_runs+=("$(copy_s "$src" "$dst")"); same "$(path "$src")" qcow2 "$(path "$dst")" qcow2
done
qcow_peer=$(median "${peer_runs[@]}"); qcow_cairn=$(median "${cairn_runs[@]}")
$CAIRN image delete "${dst%/*}" --wait >/dev/null

# Empty 1 TiB, raw and qcow2.
empty() { # format qemu-format
    local s d t0 t1; s=$(vol 1T "$1" sparse); d=$(vol 1T "$1" sparse)
    t0=$(now); qemu-img convert -f "$2" -O "$2" "$(path "$s")" "$WORK/peer.$2"; t1=$(now)
    peer=$(secs "$t0" "$t1"); rm -f "$WORK/peer.$2"
    cairn=$(copy_s "$s" "$d"); same "$(path "$s")" "$2" "$(path "$d")" "$2"
    $CAIRN image delete "${s%/*}" --wait >/dev/null; $CAIRN image delete "${d%/*}" --wait >/dev/null
}
empty raw raw; empty_raw_peer=$peer; empty_raw_cairn=$cairn
empty cow qcow2; empty_qcow_peer=$peer; empty_qcow_cairn=$cairn

# Reflink clone of a written raw volume.
src=$(vol "${CLONE_GIB}G" raw sparse); dst=$(vol "${CLONE_GIB}G" raw sparse)
fill "$(path "$src")" raw "$CLONE_GIB"; sync
t0=$(now); cp --reflink=always "$(path "$src")" "$MNT/peer.raw"; t1=$(now)
reflink_peer=$(secs "$t0" "$t1"); rm -f "$MNT/peer.raw"
reflink_cairn=$(copy_s "$src" "$dst"); cmp "$(path "$src")" "$(path "$dst")"
$CAIRN image delete "${src%/*}" --wait >/dev/null; $CAIRN image delete "${dst%/*}" --wait >/dev/null

# Snapshot latency, and qemu-img create -b as a process; after the
# gigabytes written above have reached the disk.
sync
snap=$($BENCH snapshots --socket "$SOCK" --count "$SNAPSHOTS")
qemu-img create -q -f qcow2 "$WORK/base.qcow2" 10G
peer_ms=()
for i in $(seq "$SNAPSHOTS"); do
    t0=$(now); qemu-img create -q -f qcow2 -b "$WORK/base.qcow2" -F qcow2 "$WORK/s$i.qcow2"; t1=$(now)
    peer_ms+=("$(secs "$t0" "$t1")")
done
snap_peer=$(python3 -c 'import sys; v=sorted(float(x)*1000 for x in sys.argv[1:]); print(v[len(v)//2], v[round((len(v)-1)*0.99)])' "${peer_ms[@]}")
rm -f "$WORK"/s*.qcow2

# Transfer: upload a fully written local file, download a volume.
local_file=$MNT/local.raw
truncate -s "${SIZE_GIB}G" "$local_file"; fill "$local_file" raw "$SIZE_GIB"; sync
up=$(vol "${SIZE_GIB}G" raw sparse)
drop; t0=$(now); dd if="$local_file" of="$MNT/dd.raw" bs=8M conv=fsync status=none; t1=$(now)
dd_s=$(secs "$t0" "$t1"); cmp "$local_file" "$MNT/dd.raw"; rm -f "$MNT/dd.raw"
drop; t0=$(now); $CAIRN image upload "$local_file" "${up%/*}" "${up#*/}" >/dev/null; t1=$(now)
up_s=$(secs "$t0" "$t1"); cmp "$local_file" "$(path "$up")"
drop; t0=$(now); $CAIRN image download "${up%/*}" "${up#*/}" "$MNT/down.raw" >/dev/null; t1=$(now)
down_s=$(secs "$t0" "$t1"); cmp "$local_file" "$MNT/down.raw"

python3 - "$SIZE_GIB" "$CLONE_GIB" "$qcow_peer" "$qcow_cairn" "$empty_raw_peer" "$empty_raw_cairn" \
    "$empty_qcow_peer" "$empty_qcow_cairn" "$reflink_peer" "$reflink_cairn" "$snap" "$snap_peer" \
    "$dd_s" "$up_s" "$down_s" <<'PY'
import datetime, json, platform, sys
sys.path.insert(0, "bench")
from results import publish
a = sys.argv[1:]
gib, clone_gib = int(a[0]), int(a[1])
qp, qc, erp, erc, eqp, eqc, rp, rc = map(float, a[2:10])
snap = json.loads(a[10]); sp50, sp99 = map(float, a[11].split())
dd, up, down = map(float, a[12:15])
mb = lambda s, g=gib: g * 1024 / s
ms = lambda s: f"{s * 1000:,.1f} ms"
verdict = lambda ok: "met" if ok else "**not met**"
rows = [
    (f"qcow2→qcow2 copy, {gib} GiB written", f"{mb(qc):,.0f} MiB/s", f"qemu-img convert -t none -T none -W -m 16: {mb(qp):,.0f} MiB/s",
     f"{qp / qc:.2f}x (target ≥ 1.0x: {verdict(qc <= qp)})"),
    ("empty 1 TiB raw copy", ms(erc), f"qemu-img convert: {ms(erp)}", f"target < 1 s: {verdict(erc < 1)}"),
    ("empty 1 TiB qcow2 copy", ms(eqc), f"qemu-img convert: {ms(eqp)}", f"target < 1 s: {verdict(eqc < 1)}"),
    (f"reflink clone, {clone_gib} GiB written raw", ms(rc), f"cp --reflink=always: {ms(rp)}", f"target < 50 ms: {verdict(rc < 0.05)}"),
    (f"snapshot through the API (p50 / p99 of {snap['count']})", f"{snap['p50_ms']:.1f} / {snap['p99_ms']:.1f} ms",
     f"qemu-img create -b process: {sp50:.1f} / {sp99:.1f} ms", f"targets 20 / 100 ms: {verdict(snap['p50_ms'] < 20 and snap['p99_ms'] < 100)}"),
    (f"upload {gib} GiB (cairn image upload)", f"{mb(up):,.0f} MiB/s", f"local dd bs=8M conv=fsync: {mb(dd):,.0f} MiB/s",
     f"{dd / up * 100:.0f}% of local (target ≥ 70%: {verdict(dd / up >= 0.7)})"),
    (f"download {gib} GiB (cairn image download)", f"{mb(down):,.0f} MiB/s", f"local dd bs=8M conv=fsync: {mb(dd):,.0f} MiB/s",
     f"{dd / down * 100:.0f}% of local (target ≥ 70%: {verdict(dd / down >= 0.7)})"),
]
out = [f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()}, loop-mounted xfs (reflink=1) on the root disk, release build, page cache dropped before copies.", "",
       "| operation | Cairn | peer | result |", "|---|---|---|---|"] + [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows]
publish("image-ops", "\n".join(out))
PY
