#!/usr/bin/env bash
# Side-by-side benchmarks of Cairn and libvirt's storage driver (dir pool),
# on the same file system, in one run. Writes the figures into
# bench/RESULTS.md between the results markers.
#
#   bench/run.sh                 # PAIRS=2000 LIST_N=10000 by default
#   PAIRS=500 LIST_N=2000 bench/run.sh
#
# Not a timed test: slow machines give small numbers, never a failure. A
# wrong result (a failed task, a wrong count) fails loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
if ! command -v virsh >/dev/null || ! command -v libvirtd >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libvirt-daemon libvirt-clients >/dev/null
fi

PAIRS=${PAIRS:-2000}
LIST_N=${LIST_N:-10000}
WORK=${BENCH_DIR:-$PWD/bench/work}
rm -rf "$WORK"; mkdir -p "$WORK"
cargo build --release --bins --example cairn-bench >&2
BENCH=target/release/examples/cairn-bench

# --- libvirt: storage driver only (the qemu driver cannot start here) ---
DRV=$WORK/libvirt-drivers; mkdir -p "$DRV"
LIBDIR=$(dirname "$(find /usr/lib -name libvirt_driver_storage.so | head -1)")
for d in storage secret nodedev; do ln -sf "$LIBDIR/libvirt_driver_$d.so" "$DRV/"; done
LIBVIRTD_PID=""
if ! pgrep -x libvirtd >/dev/null; then
    LIBVIRT_DRIVER_DIR=$DRV libvirtd >"$WORK/libvirtd.log" 2>&1 &
    LIBVIRTD_PID=$!
    sleep 2
fi
export LIBVIRT_DEFAULT_URI=storage:///system
POOL=cairnbench$$
mkdir -p "$WORK/libvirt-pool"
virsh -q pool-define-as "$POOL" dir --target "$WORK/libvirt-pool" >/dev/null
virsh -q pool-start "$POOL" >/dev/null

# --- cairnd on the same file system ---
target/release/cairnd --data-dir "$WORK/cairn" --log-level warn >"$WORK/cairnd.log" 2>&1 &
CAIRND_PID=$!
SOCK=$WORK/cairn/cairnd.sock
for _ in $(seq 200); do [ -S "$SOCK" ] && break; sleep 0.05; done

cleanup() {
    kill "$CAIRND_PID" 2>/dev/null || true
    virsh -q pool-destroy "$POOL" >/dev/null 2>&1 || true
    virsh -q pool-undefine "$POOL" >/dev/null 2>&1 || true
    [ -n "$LIBVIRTD_PID" ] && kill "$LIBVIRTD_PID" 2>/dev/null || true
}
trap cleanup EXIT

now() { date +%s.%N; }
fsname=$(df --output=fstype "$WORK" | tail -1)

# 1. create + delete of thin 1 GiB qcow2 volumes
cmds=$WORK/virsh-cmds
python3 - "$POOL" "$PAIRS" >"$cmds" <<'PY'
import sys
pool, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    print(f"vol-create-as {pool} v{i}.qcow2 1G --format qcow2")
    print(f"vol-delete v{i}.qcow2 --pool {pool}")
PY
t0=$(now); virsh <"$cmds" >"$WORK/virsh.out" 2>&1; t1=$(now)
created=$(grep -c "^Vol v.* created" "$WORK/virsh.out" || true)
[ "$created" = "$PAIRS" ] || { echo "libvirt created $created of $PAIRS volumes" >&2; exit 1; }
lv_pairs=$(python3 -c "print($PAIRS/($t1-$t0))")
c1=$($BENCH create-delete --socket "$SOCK" --count "$PAIRS" --concurrency 1)
c4=$($BENCH create-delete --socket "$SOCK" --count "$PAIRS" --concurrency 4)

# 2. listing 10,000 volumes with full details
python3 - "$WORK/libvirt-pool" "$LIST_N" <<'PY'
import shutil, subprocess, sys, os
d, n = sys.argv[1], int(sys.argv[2])
t = os.path.join(d, "template.img")
subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", t, "1G"], check=True)
for i in range(n):
    shutil.copyfile(t, os.path.join(d, f"vol{i:05d}.qcow2"))
os.unlink(t)
PY
virsh -q pool-refresh "$POOL" >/dev/null
lv_list=()
for _ in 1 2 3; do
    t0=$(now); lines=$(virsh -q vol-list "$POOL" --details | grep -c qcow2); t1=$(now)
    [ "$lines" = "$LIST_N" ] || { echo "virsh listed $lines of $LIST_N" >&2; exit 1; }
    lv_list+=("$(python3 -c "print($t1-$t0)")")
done
lv_list_med=$(printf '%s\n' "${lv_list[@]}" | sort -g | sed -n 2p)
pop=$($BENCH populate --socket "$SOCK" --count "$LIST_N" --concurrency 4)
list=$($BENCH list --socket "$SOCK" --expect "$LIST_N" --repeat 5)
rss_kib=$(awk '/VmRSS/ {print $2}' /proc/$CAIRND_PID/status)

python3 - "$lv_pairs" "$c1" "$c4" "$lv_list_med" "$pop" "$list" "$rss_kib" "$PAIRS" "$LIST_N" "$fsname" <<'PY'
import json, sys, datetime, platform, subprocess
sys.path.insert(0, "bench")
from results import publish
lv_pairs, c1, c4, lv_list, pop, lst, rss, pairs, list_n, fs = sys.argv[1:]
c1, c4, pop, lst = (json.loads(x) for x in (c1, c4, pop, lst))
lv_pairs, lv_list, rss = float(lv_pairs), float(lv_list), int(rss)
rows = [
    ("create+delete, thin 1 GiB qcow2, sequential (pairs/s)", f"{c1['per_second']:.0f}", f"{lv_pairs:.0f}", c1['per_second'] / lv_pairs, "≥ 5x"),
    ("create+delete, 4 clients (pairs/s)", f"{c4['per_second']:.0f}", f"{lv_pairs:.0f} (1 session)", c4['per_second'] / lv_pairs, "—"),
    (f"list {list_n} volumes with details (s)", f"{lst['median_seconds']:.3f}", f"{lv_list:.3f}", lv_list / lst['median_seconds'], "≥ 10x"),
    (f"cairnd RSS with {list_n} volumes (MiB)", f"{rss/1024:.1f}", "—", None, "< 50 MiB"),
]
out = [f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node()}, {fs} file system, "
       f"{pairs} pairs, {list_n} volumes (populated at {pop['per_second']:.0f} creates/s with 4 clients).", "",
       "| measure | Cairn | libvirt | ratio | target |", "|---|---|---|---|---|"]
for name, c, l, r, t in rows:
    out.append(f"| {name} | {c} | {l} | {'' if r is None else f'{r:.1f}x'} | {t} |")
text = "\n".join(out)
publish("results", text)
PY
