#!/usr/bin/env bash
# Thin provisioning benchmarks (issue 12), in one run on one loop-device LUN
# with the lvm stand-in (this machine has no device-mapper: lvextend and
# the guest host's refresh run real lvm metadata commands; activation and
# refresh are loop devices, tests/tools/lvm_without_device_mapper.sh):
# - the SPM's extend: Volume.requestExtend on the SPM, +128 MiB each, as
#   cairnd times it (checks, lvextend, cache update), p50/p99;
# - the mailbox path: a non-SPM host's requestExtend (mailbox + lvextend on
#   the SPM + refresh on the host), from the two-host test in a release
#   build (multihost::a_non_spm_host_grows_a_thin_volume_...);
# - the idle SPM's cost of serving the mailbox (250 blocks): cairnd's CPU
#   over IDLE seconds, and the bytes it reads by its timing;
# - the LV an idle thin disk takes.
# VDSM's figures are its published ones (vdsm-block.md 3.8). A wrong
# result (an extend that did not grow the LV) fails the run.
#   bench/thin.sh              COUNT=50 IDLE=30
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
cargo build --release --bins >&2
COUNT=${COUNT:-50}
IDLE=${IDLE:-30}
LVM="$PWD/tests/tools/lvm_without_device_mapper.sh"
work=$(mktemp -d /tmp/cairn-thin-bench.XXXXXX)
truncate -s 64G "$work/lun"
lun=$(losetup -f --show "$work/lun")
guid=$(basename "$lun")
sd=$(python3 -c 'import uuid; print(uuid.uuid4())')
sp=$(python3 -c 'import uuid; print(uuid.uuid4())')
sock="$work/data/cairnd.sock"
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
trap cleanup EXIT
CAIRN_LVM="$LVM" CAIRN_BLOCK_DEVICES="$lun" CAIRN_SHARED_LEASES=flock \
    target/release/cairnd --data-dir "$work/data" --no-embedded-default --log-level warn \
    2>> "$work/cairnd.log" &
daemon=$!
for _ in $(seq 600); do [ -S "$sock" ] && break; sleep 0.1; done

python3 - "$sock" "$sd" "$sp" "$guid" "$COUNT" "$IDLE" "$daemon" > "$work/local.json" <<'PY'
import http.client, json, socket, statistics, sys, time, uuid
sock, sd, sp, guid, count, idle, pid = sys.argv[1:8]
count, idle = int(count), float(idle)
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sock)
def rpc(method, params):
    c = Conn("cairnd")
    c.request("POST", "/jsonrpc", json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
              {"Content-Type": "application/json"})
    r = json.loads(c.getresponse().read())
    if "error" in r:
        sys.exit(f"{method}: {r['error']}")
    return r["result"]
def task(t):
    while True:
        st = rpc("Task.getStatus", {"taskID": t})
        if st["taskState"] == "finished":
            if st["code"] != 0:
                sys.exit(f"task failed: {st}")
            return
        time.sleep(0.05)
vg = rpc("LVMVolumeGroup.create", {"name": sd, "devlist": [guid], "force": False})
rpc("StorageDomain.create", {"storagedomainID": sd, "domainType": "ISCSI", "typeArgs": vg, "name": "bench", "domainClass": "Data"})
rpc("StoragePool.create", {"storagepoolID": sp, "name": "bench", "masterSdUUID": sd, "masterVersion": 1, "domainList": [sd]})
rpc("StoragePool.connect", {"storagepoolID": sp, "hostID": 1, "scsiKey": "", "masterSdUUID": sd, "masterVersion": 1})
task(rpc("StoragePool.spmStart", {"storagepoolID": sp, "prevID": -1, "prevLver": "-1", "enableScsiFencing": "false"}))
img, vol = str(uuid.uuid4()), str(uuid.uuid4())
ids = {"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": vol}
task(rpc("Volume.create", dict(ids, size=str(40 << 30), volFormat="COW", preallocate="SPARSE",
                               diskType="DATA", desc="bench", srcImgUUID="00000000-0000-0000-0000-000000000000",
                               srcVolUUID="00000000-0000-0000-0000-000000000000")))
idle_lv = rpc("Volume.getInfo", ids)["apparentsize"]
room, times = idle_lv, []
for _ in range(count):
    r = rpc("Volume.requestExtend", dict(ids, newSize=str(room + (128 << 20))))
    if not r["extended"] or r["size"] < room + (128 << 20):
        sys.exit(f"the extend did not grow the LV: {r}")
    room = r["size"]
    times.append(r["elapsed_ms"])
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / 100.0
c0, t0 = cpu(), time.time()
time.sleep(idle)
idle_cpu = (cpu() - c0) / (time.time() - t0)
q = statistics.quantiles(times, n=100)
print(json.dumps({"count": count, "p50_ms": statistics.median(times), "p99_ms": q[98], "max_ms": max(times),
                  "idle_lv": idle_lv, "idle_cpu_percent": idle_cpu * 100}))
PY
kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=

reports="$work/reports"
mkdir -p "$reports"
CAIRN_BENCH_REPORT_DIR=$reports cargo nextest run --release -j2 --no-fail-fast \
    -E 'test(multihost::a_non_spm_host_grows_a_thin_volume_through_the_mailbox_across_failover)' >&2

python3 - "$(cat "$work/local.json")" "$(cat "$reports/thin_mailbox.json")" <<'PY'
import datetime, json, platform, statistics, sys
sys.path.insert(0, "bench")
from results import publish
local, mail = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rt = mail["round_trips_ms"]
# The SPM reads the 4 KiB event block every 20 ms and 1000 KiB every 10 s.
reads_kib_s = 4 / 0.020 + 1000 / 10
rows = [
    (f"extend on the SPM (requestExtend, +128 MiB, {local['count']} times)",
     f"p50 {local['p50_ms']:.0f} ms, p99 {local['p99_ms']:.0f} ms, max {local['max_ms']:.0f} ms",
     "extend-volume 0.55/0.92/1.14 s (mailbox + lvextend, PR #124)"),
    (f"extend from a non-SPM host through the mailbox ({len(rt)} times, 2 hosts)",
     ", ".join(f"{x:.0f} ms" for x in rt) + f" (median {statistics.median(rt):.0f} ms)",
     "0.77/1.15/1.39 s total; mailbox round trip 0.5-1.0 s"),
    ("a request outstanding through an SPM failover: served after the new SPM started",
     f"{mail['served_after_spm_start_s']:.2f} s (SPM start included)", "re-processed by a new SPM"),
    ("idle SPM serving the mailbox (250 blocks)",
     f"{local['idle_cpu_percent']:.2f}% of a core (all of idle cairnd), {reads_kib_s:.0f} KiB/s read",
     "0.6% of a core, ~524 KiB/s (1000 KiB / 2 s + events)"),
    ("LV of an idle thin disk", f"{local['idle_lv'] / 2**30:.1f} GiB", "2.5 GiB"),
]
table = "\n".join(
    ["| measure | Cairn | VDSM |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows])
publish("thin", f"""Measured {datetime.date.today()} on {platform.node()} ({platform.machine()}), `bench/thin.sh`,
lvm stand-in (loop devices, no device-mapper on this kernel), one loop-device LUN on the
machine's disk. Not yet measured: the writer at 100/400/800 MiB/s and full speed for
20 GiB (pauses per rate); the fast tier's drive-monitor test writes 2 GiB through
qemu-storage-daemon with 0 pauses.

{table}
""")
PY
