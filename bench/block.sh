#!/usr/bin/env bash
# Block domain benchmarks (issue 11), in one run on one loop-device LUN:
# - volume create+delete through cairnd against the floor of bare
#   `lvcreate` + `lvremove` on the same VG, with the same lvm program;
# - listing a block domain of each size in SIZES (StorageDomain.dump, full
#   info), the volumes laid out at once by bench/block_populate.py as a
#   VDSM host would have left them (creating 10,000 through cairnd one by
#   one would take an hour), then create+delete again at the largest size,
#   past VDSM's 1,947 volumes;
# - Image.prepare and teardown of chains of 1 to CHAIN volumes;
# - how soon a non-SPM host sees a volume the SPM made (the two-host test
#   multihost::two_hosts_share_a_block_domain_and_hand_over_the_spm, run
#   in a release build, reports it).
# This machine has no device-mapper: both sides run the lvm stand-in
# (tests/tools/lvm_without_device_mapper.sh), which imitates activation
# with loop devices; the floor never activates. Rewrites the block table
# of bench/RESULTS.md. A wrong result (a volume missing or listed wrongly,
# a failed task) fails the run.
#   bench/block.sh             PAIRS=100 SIZES="100 1000 10000" CHAIN=50
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
cargo build --release --bins --example cairn-bench >&2
PAIRS=${PAIRS:-100}
CHAIN=${CHAIN:-50}
SIZES=${SIZES:-"100 1000 10000"}
largest=$(echo "$SIZES" | tr ' ' '\n' | sort -n | tail -1)
LVM="$PWD/tests/tools/lvm_without_device_mapper.sh"
B=target/release/examples/cairn-bench
work=$(mktemp -d /tmp/cairn-block-bench.XXXXXX)
# A populated volume takes one 128 MiB extent: a sparse LUN with room for
# all, the leases LV grown for them, and the create+delete pairs.
lun_size=$(( (largest + 300) * (128 << 20) + (CHAIN + 16) * (1 << 30) ))
truncate -s "$lun_size" "$work/lun"
lun=$(losetup -f --show "$work/lun")
guid=$(basename "$lun")
daemon=
sd=$(python3 -c 'import uuid; print(uuid.uuid4())')
sp=$(python3 -c 'import uuid; print(uuid.uuid4())')
sock="$work/data/cairnd.sock"
cleanup() {
    stop_daemon
    for m in $(awk '$5 ~ /blockSD/ {print $5}' /proc/self/mountinfo); do umount -l "$m"; done
    for l in /dev/"$sd"/*; do
        [ -L "$l" ] && losetup -d "$(readlink -f "$l")" 2>/dev/null
        rm -f "$l"
    done
    rmdir /dev/"$sd" 2>/dev/null || true
    losetup -d "$lun" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start_daemon() {
    rm -f "$sock"
    CAIRN_LVM="$LVM" CAIRN_BLOCK_DEVICES="$lun" CAIRN_SHARED_LEASES=flock \
        target/release/cairnd --data-dir "$work/data" --no-embedded-default --log-level warn \
        2>> "$work/cairnd.log" &
    daemon=$!
    for _ in $(seq 600); do [ -S "$sock" ] && break; sleep 0.1; done
}
stop_daemon() {
    if [ -n "$daemon" ]; then
        kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
        daemon=
    fi
}
rpc() {
    curl -sf --unix-socket "$sock" -H 'Content-Type: application/json' \
        -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$1\",\"params\":$2}" http://cairnd/jsonrpc |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps(r["result"]) if "result" in r else sys.exit("error: %s" % r["error"]))'
}
wait_spm() {
    for _ in $(seq 600); do
        [ "$(rpc StoragePool.getSpmStatus "{\"storagepoolID\":\"$sp\"}" 2>/dev/null |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["spmStatus"])' 2>/dev/null)" = SPM ] && return
        sleep 0.1
    done
    echo "cairnd did not become SPM" >&2
    exit 1
}

start_daemon
vg=$(rpc LVMVolumeGroup.create "{\"name\":\"$sd\",\"devlist\":[\"$guid\"],\"force\":false}" | tr -d '"')
rpc StorageDomain.create "{\"storagedomainID\":\"$sd\",\"domainType\":\"ISCSI\",\"typeArgs\":\"$vg\",\"name\":\"bench\",\"domainClass\":\"Data\"}" >/dev/null
rpc StoragePool.create "{\"storagepoolID\":\"$sp\",\"name\":\"bench\",\"masterSdUUID\":\"$sd\",\"masterVersion\":1,\"domainList\":[\"$sd\"]}" >/dev/null
rpc StoragePool.connect "{\"storagepoolID\":\"$sp\",\"hostID\":1,\"scsiKey\":\"\",\"masterSdUUID\":\"$sd\",\"masterVersion\":1}" >/dev/null
rpc StoragePool.spmStart "{\"storagepoolID\":\"$sp\",\"prevID\":-1,\"prevLver\":\"-1\",\"enableScsiFencing\":\"false\"}" >/dev/null
wait_spm

# The floor: the two lvm commands a volume needs at the least.
filter="devices { filter=[\"a|^$lun\$|\", \"r|.*|\"] obtain_device_list_from_udev=0 hints=\"none\" }"
start=$(date +%s.%N)
for i in $(seq "$PAIRS"); do
    LVM_SUPPRESS_FD_WARNINGS=1 "$LVM" lvcreate --config "$filter" --autobackup n --activate n --zero n \
        --wipesignatures n --size 1g --name "floor$i" "$sd" >/dev/null 2>&1
    LVM_SUPPRESS_FD_WARNINGS=1 "$LVM" lvremove --config "$filter" --autobackup n --force "$sd/floor$i" >/dev/null 2>&1
done
floor=$(python3 -c "import sys; print(float(sys.argv[2]) / (float(sys.argv[1]) - $start))" "$(date +%s.%N)" "$PAIRS")
cairn=$($B create-delete --socket "$sock" --count "$PAIRS")
chain=$($B prepare-chain --socket "$sock" --count "$CHAIN" --repeat 3)
chain_volumes=$CHAIN

# Listing at each size; the volumes are added with cairnd stopped.
listings=()
have=0
for n in $SIZES; do
    stop_daemon
    python3 bench/block_populate.py "$LVM" "$lun" "$sd" $((n - have)) >/dev/null
    have=$n
    start_daemon
    wait_spm
    listings+=("$($B list --socket "$sock" --expect "$n" --repeat 5 --capacity $((128 << 20)))")
done
large=$($B create-delete --socket "$sock" --count 10)
stop_daemon

# A non-SPM host's view of the SPM's change, measured by the two-host test.
reports="$work/reports"
mkdir -p "$reports"
CAIRN_BENCH_REPORT_DIR=$reports cargo nextest run --release -j2 --no-fail-fast \
    -E 'test(multihost::two_hosts_share_a_block_domain_and_hand_over_the_spm)' >&2
visible=$(cat "$reports/block_visibility.json")

python3 - "$floor" "$cairn" "$large" "$PAIRS" "$largest" "$chain" "$visible" "${listings[@]}" <<'PY'
import datetime, json, platform, sys
sys.path.insert(0, "bench")
from results import publish
floor = float(sys.argv[1])
cairn, large = json.loads(sys.argv[2]), json.loads(sys.argv[3])
pairs, largest = int(sys.argv[4]), int(sys.argv[5])
chain, visible = json.loads(sys.argv[6]), json.loads(sys.argv[7])
listings = [json.loads(x) for x in sys.argv[8:]]
ratio = floor / cairn["per_second"]
rows = [
    (f"create+delete, thin 1 GiB COW, sequential ({pairs} pairs)",
     f"{cairn['per_second']:.1f}/s", f"{floor:.1f}/s (bare lvcreate + lvremove)",
     f"{ratio:.1f}x the floor's time", "≤ 1.5x"),
]
for l in listings:
    rows.append((f"listing {l['count']:,} volumes with full info (StorageDomain.dump, median)",
                 f"{l['median_seconds'] * 1000:.0f} ms", "—", "—",
                 "< 300 ms at 10,000" if l["count"] == 10000 else "measured"))
rows.append((f"create+delete with {largest:,} volumes in the domain (10 pairs)",
             f"{large['per_second']:.1f}/s", "—", "—", "works past VDSM's 1,947"))
for c in chain["chains"]:
    rows.append((f"Image.prepare / teardown of a chain of {c['depth']} (median of 3)",
                 f"{c['prepare_s'] * 1000:.0f} / {c['teardown_s'] * 1000:.0f} ms", "—", "—", "measured"))
rows.append(("a volume the SPM made, seen by the other host (after the create returned)",
             f"{visible['seen_after_s'] * 1000:.0f} ms", "—", "—",
             "measured (cache rechecked at most 1 s old)"))
out = [f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()}, "
       "one loop-device LUN, lvm stand-in (no device-mapper on this kernel).", "",
       "| measure | Cairn | floor | ratio | target |", "|---|---|---|---|---|"]
out += ["| " + " | ".join(r) + " |" for r in rows]
publish("block", "\n".join(out))
PY
