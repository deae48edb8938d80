#!/usr/bin/env bash
# Block domain benchmarks (issue 11), in one run on one loop-device LUN:
# - volume create+delete through cairnd against the floor of bare
#   `lvcreate` + `lvremove` on the same VG, with the same lvm program;
# - listing a block domain of LIST_N volumes (StorageDomain.dump).
# This machine has no device-mapper: both sides run the lvm stand-in
# (tests/tools/lvm_without_device_mapper.sh), which imitates activation
# with loop devices; the floor never activates. Rewrites the block table
# of bench/RESULTS.md.
#   bench/block.sh             PAIRS=100 LIST_N=500
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
cargo build --release --bins --example cairn-bench >&2
PAIRS=${PAIRS:-100}
LIST_N=${LIST_N:-500}
LVM="$PWD/tests/tools/lvm_without_device_mapper.sh"
B=target/release/examples/cairn-bench
work=$(mktemp -d /tmp/cairn-block-bench.XXXXXX)
# A thin 1 GiB volume takes a 1 GiB LV: a sparse LUN with room for all.
lun_size=$(( (LIST_N + 8) * (1 << 30) + (16 << 30) ))
truncate -s "$lun_size" "$work/lun"
lun=$(losetup -f --show "$work/lun")
guid=$(basename "$lun")
daemon=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    for m in $(awk '$5 ~ /blockSD/ {print $5}' /proc/self/mountinfo); do umount -l "$m"; done
    for l in /dev/"$sd"/*; do
        [ -L "$l" ] && losetup -d "$(readlink -f "$l")" 2>/dev/null
        rm -f "$l"
    done
    rmdir /dev/"$sd" 2>/dev/null || true
    losetup -d "$lun" 2>/dev/null || true
    rm -rf "$work"
}
sd=$(python3 -c 'import uuid; print(uuid.uuid4())')
sp=$(python3 -c 'import uuid; print(uuid.uuid4())')
trap cleanup EXIT

CAIRN_LVM="$LVM" CAIRN_BLOCK_DEVICES="$lun" CAIRN_SHARED_LEASES=flock \
    target/release/cairnd --data-dir "$work/data" --no-embedded-default --log-level warn \
    2> "$work/cairnd.log" &
daemon=$!
sock="$work/data/cairnd.sock"
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
rpc() {
    curl -sf --unix-socket "$sock" -H 'Content-Type: application/json' \
        -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$1\",\"params\":$2}" http://cairnd/jsonrpc |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps(r["result"]) if "result" in r else sys.exit("error: %s" % r["error"]))'
}
vg=$(rpc LVMVolumeGroup.create "{\"name\":\"$sd\",\"devlist\":[\"$guid\"],\"force\":false}" | tr -d '"')
rpc StorageDomain.create "{\"storagedomainID\":\"$sd\",\"domainType\":\"ISCSI\",\"typeArgs\":\"$vg\",\"name\":\"bench\",\"domainClass\":\"Data\"}" >/dev/null
rpc StoragePool.create "{\"storagepoolID\":\"$sp\",\"name\":\"bench\",\"masterSdUUID\":\"$sd\",\"masterVersion\":1,\"domainList\":[\"$sd\"]}" >/dev/null
rpc StoragePool.connect "{\"storagepoolID\":\"$sp\",\"hostID\":1,\"scsiKey\":\"\",\"masterSdUUID\":\"$sd\",\"masterVersion\":1}" >/dev/null
rpc StoragePool.spmStart "{\"storagepoolID\":\"$sp\",\"prevID\":-1,\"prevLver\":\"-1\",\"enableScsiFencing\":\"false\"}" >/dev/null
for _ in $(seq 100); do
    [ "$(rpc StoragePool.getSpmStatus "{\"storagepoolID\":\"$sp\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["spmStatus"])')" = SPM ] && break
    sleep 0.1
done

# The floor: the two lvm commands a volume needs at the least.
filter="devices { filter=[\"a|^$lun\$|\", \"r|.*|\"] obtain_device_list_from_udev=0 }"
start=$(date +%s.%N)
for i in $(seq "$PAIRS"); do
    LVM_SUPPRESS_FD_WARNINGS=1 "$LVM" lvcreate --config "$filter" --autobackup n --activate n --zero n \
        --wipesignatures n --size 1g --name "floor$i" "$sd" >/dev/null 2>&1
    LVM_SUPPRESS_FD_WARNINGS=1 "$LVM" lvremove --config "$filter" --autobackup n --force "$sd/floor$i" >/dev/null 2>&1
done
floor=$(python3 -c "import sys; print(float(sys.argv[2]) / (float(sys.argv[1]) - $start))" "$(date +%s.%N)" "$PAIRS")

cairn=$($B create-delete --socket "$sock" --count "$PAIRS")
populate=$($B populate --socket "$sock" --count "$LIST_N")
list=$($B list --socket "$sock" --count "$LIST_N" --repeat 5)

python3 - "$floor" "$cairn" "$populate" "$list" "$PAIRS" "$LIST_N" <<'PY'
import datetime, json, platform, sys
sys.path.insert(0, "bench")
from results import publish
floor = float(sys.argv[1])
cairn, populate, listing = (json.loads(x) for x in sys.argv[2:5])
pairs, n = int(sys.argv[5]), int(sys.argv[6])
ratio = floor / cairn["per_second"]
rows = [
    (f"create+delete, thin 1 GiB COW, sequential ({pairs} pairs/s)",
     f"{cairn['per_second']:.1f}", f"{floor:.1f} (bare lvcreate + lvremove)",
     f"{ratio:.1f}x the floor's time", "≤ 1.5x"),
    (f"listing {n} volumes with full info (StorageDomain.dump, median s)",
     f"{listing['median_seconds']:.3f}", "—", "—", "< 0.3 s at 10,000"),
    (f"populating {n} volumes (creates/s)", f"{populate['per_second']:.1f}", "—", "—", "measured"),
]
out = [f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()}, "
       "one loop-device LUN, lvm stand-in (no device-mapper on this kernel).", "",
       "| measure | Cairn | floor | ratio | target |", "|---|---|---|---|---|"]
out += ["| " + " | ".join(r) + " |" for r in rows]
publish("block", "\n".join(out))
PY
