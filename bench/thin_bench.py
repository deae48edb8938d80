"""Thin-provisioning measurements against a running cairnd (bench/thin.sh
starts it on a loop-device LUN): the SPM's extend, the idle mailbox cost,
the idle thin LV, and a guest stand-in writing at fixed rates while the
drive monitor grows its volume.

The guest is qemu-storage-daemon (qemu's block layer) with the thin LV under
a qcow2 node, a throttle filter at the rate, exported over NBD; the writer
writes 256 MiB chunks through it with `qemu-img bench` (4 MiB requests,
16 in flight), one process per chunk. A
chunk that fails (ENOSPC: the guest would have paused) is counted as a
pause and written again after 50 ms, as a resumed guest would. Every chunk
carries its own pattern and is read back at the end: a wrong byte fails the
run.

    thin_bench.py SOCKET LUN_GUID COUNT IDLE_SECONDS RATES SIZE_GIB FULL_GIB
"""

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

BLANK = "00000000-0000-0000-0000-000000000000"
MIB, GIB = 1 << 20, 1 << 30
CHUNK = 256 * MIB


class Cairn:
    def __init__(self, sock):
        self.sock = sock

    def call(self, method, params):
        sock = self.sock

        class Conn(http.client.HTTPConnection):
            def connect(self):
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(sock)

        c = Conn("cairnd", timeout=600)
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        c.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
        r = json.loads(c.getresponse().read())
        if "error" in r:
            sys.exit(f"{method}: {r['error']}")
        return r["result"]

    def task(self, t):
        while True:
            st = self.call("Task.getStatus", {"taskID": t})
            if st["taskState"] == "finished":
                if st["code"] != 0:
                    sys.exit(f"task failed: {st}")
                return
            time.sleep(0.05)


def block_pool(c, guid):
    sd, sp = str(uuid.uuid4()), str(uuid.uuid4())
    vg = c.call("LVMVolumeGroup.create", {"name": sd, "devlist": [guid], "force": False})
    c.call("StorageDomain.create", {"storagedomainID": sd, "domainType": "ISCSI", "typeArgs": vg,
                                    "name": "bench", "domainClass": "Data"})
    c.call("StoragePool.create", {"storagepoolID": sp, "name": "bench", "masterSdUUID": sd,
                                  "masterVersion": 1, "domainList": [sd]})
    c.call("StoragePool.connect", {"storagepoolID": sp, "hostID": 1, "scsiKey": "",
                                   "masterSdUUID": sd, "masterVersion": 1})
    c.task(c.call("StoragePool.spmStart", {"storagepoolID": sp, "prevID": -1, "prevLver": "-1",
                                           "enableScsiFencing": "false"}))
    return sp, sd


def thin_volume(c, sp, sd, size):
    ids = {"storagepoolID": sp, "storagedomainID": sd, "imageID": str(uuid.uuid4()),
           "volumeID": str(uuid.uuid4())}
    c.task(c.call("Volume.create", dict(ids, size=str(size), volFormat="COW", preallocate="SPARSE",
                                        diskType="DATA", desc="bench", srcImgUUID=BLANK,
                                        srcVolUUID=BLANK)))
    return ids


def spm_extends(c, ids, count):
    room = c.call("Volume.getInfo", ids)["apparentsize"]
    times = []
    for _ in range(count):
        r = c.call("Volume.requestExtend", dict(ids, newSize=str(room + 128 * MIB)))
        if not r["extended"] or r["size"] < room + 128 * MIB:
            sys.exit(f"the extend did not grow the LV: {r}")
        room = r["size"]
        times.append(r["elapsed_ms"])
    return times


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def qemu_io(nbd, cmd):
    return subprocess.run(
        ["qemu-io", "--image-opts", f"driver=nbd,export=thr0,server.type=unix,server.path={nbd}",
         "-c", cmd], capture_output=True, text=True)


def write_chunk(nbd, i):
    """Chunk `i` written as a guest writes: 4 MiB requests, 16 in flight."""
    r = subprocess.run(
        ["qemu-img", "bench", "-w", "-c", str(CHUNK // (4 * MIB)), "-d", "16", "-s", "4M",
         "-o", str(i * CHUNK), f"--pattern={i % 250 + 1}", "--image-opts",
         f"driver=nbd,export=thr0,server.type=unix,server.path={nbd}"],
        capture_output=True, text=True)
    return r.returncode == 0 and "Failed" not in r.stdout + r.stderr


def standin_remaps():
    """The lvm stand-in's remap times so far (ms), when it logs them."""
    path = os.environ.get("CAIRN_STANDIN_TIMES")
    if not path or not os.path.exists(path):
        return []
    return [float(line.split()[2]) for line in open(path) if line.startswith("remap ")]


def guest_writes(c, ids, rate_mib_s, size, grown=False):
    """Writes `size` bytes through a throttled guest stand-in; returns
    figures. `grown`: the LV is first extended to hold it all, so the run
    measures this stack's speed with no extend."""
    if grown:
        cap = int(c.call("Volume.getInfo", ids)["capacity"])
        c.call("Volume.requestExtend", dict(ids, newSize=str(cap)))
    path = c.call("Image.prepare", ids)["path"]
    tmp = tempfile.mkdtemp()
    qmp, nbd = f"{tmp}/qmp.sock", f"{tmp}/nbd.sock"
    limit = [] if rate_mib_s is None else ["--object", f"throttle-group,id=tg0,x-bps-write={rate_mib_s * MIB}"]
    qsd = subprocess.Popen(
        ["qemu-storage-daemon", *limit,
         "--blockdev", f"driver=host_device,node-name=file0,filename={path},cache.direct=on,aio=native",
         "--blockdev", "driver=qcow2,node-name=fmt0,file=file0",
         *([] if rate_mib_s is None else
           ["--blockdev", "driver=throttle,node-name=thr0,throttle-group=tg0,file=fmt0"]),
         "--nbd-server", f"addr.type=unix,addr.path={nbd}",
         "--export", f"type=nbd,id=e0,node-name={'fmt0' if rate_mib_s is None else 'thr0'},name=thr0,writable=on",
         "--chardev", f"socket,id=qmp0,path={qmp},server=on,wait=off", "--monitor", "chardev=qmp0"])
    try:
        for _ in range(200):
            if os.path.exists(qmp) and os.path.exists(nbd):
                break
            time.sleep(0.05)
        mon = c.call("DriveMonitor.add", dict(ids, qmpSocket=qmp, nodeName="file0"))["monitorID"]
        pauses, chunks = 0, size // CHUNK
        remaps_before = len(standin_remaps())
        started = time.time()
        for i in range(chunks):
            while not write_chunk(nbd, i):
                pauses += 1
                time.sleep(0.05)
        secs = time.time() - started
        remaps = standin_remaps()[remaps_before:]
        status = next(d["status"] for d in c.call("DriveMonitor.list", {}) if d["monitorID"] == mon)
        # Read back: every chunk's pattern (the large run: its first and last MiB).
        for i in range(chunks):
            at = i * CHUNK
            reads = [(at, CHUNK)] if size <= 8 * GIB else [(at, MIB), (at + CHUNK - MIB, MIB)]
            for off, length in reads:
                r = qemu_io(nbd, f"read -P {i % 250 + 1} {off} {length}")
                if r.returncode != 0 or "Pattern verification failed" in r.stdout:
                    sys.exit(f"chunk {i} reads wrong: {r.stdout} {r.stderr}")
        c.call("DriveMonitor.remove", {"monitorID": mon})
    finally:
        qsd.terminate()
        qsd.wait()
    c.call("Image.teardown", ids)
    cycles = status["cycles"]
    # On the SPM each cycle is one lvextend, and each of those one remap.
    if len(remaps) == len(cycles):
        for cycle, ms in zip(cycles, remaps):
            cycle["standin_ms"] = ms
    return {"rate": rate_mib_s, "gib": size / GIB, "secs": secs, "mib_s": size / MIB / secs,
            "pauses": pauses, "extends": status["extends"], "room": status["room"],
            "cycles": cycles}


def main():
    sock, guid, count, idle, rates, size_gib, full_gib, pid = sys.argv[1:9]
    c = Cairn(sock)
    sp, sd = block_pool(c, guid)
    ids = thin_volume(c, sp, sd, 40 * GIB)
    idle_lv = c.call("Volume.getInfo", ids)["apparentsize"]
    times = spm_extends(c, ids, int(count))
    c0, t0 = cpu_seconds(pid), time.time()
    time.sleep(float(idle))
    idle_cpu = (cpu_seconds(pid) - c0) / (time.time() - t0)
    c.task(c.call("Image.delete", {"storagepoolID": sp, "storagedomainID": sd,
                                   "imageID": ids["imageID"], "postZero": False, "force": False}))
    runs = []
    plan = [(int(r), int(size_gib) * GIB) for r in rates.split()] + [(None, int(full_gib) * GIB)]
    for rate, size in plan:
        vol = thin_volume(c, sp, sd, size + 4 * GIB)
        runs.append(guest_writes(c, vol, rate, size))
        print(f"rate {rate}: {runs[-1]['mib_s']:.0f} MiB/s, {runs[-1]['pauses']} pauses, "
              f"{runs[-1]['extends']} extends", file=sys.stderr)
        c.task(c.call("Image.delete", {"storagepoolID": sp, "storagedomainID": sd,
                                       "imageID": vol["imageID"], "postZero": False, "force": False,
                                       "discard": True}))
    # The same stack's full speed with no extend: the LV holds it all.
    vol = thin_volume(c, sp, sd, int(full_gib) * GIB + 4 * GIB)
    reference = guest_writes(c, vol, None, int(full_gib) * GIB, grown=True)
    print(f"reference (no extend): {reference['mib_s']:.0f} MiB/s", file=sys.stderr)
    c.task(c.call("Image.delete", {"storagepoolID": sp, "storagedomainID": sd,
                                   "imageID": vol["imageID"], "postZero": False, "force": False,
                                   "discard": True}))
    q = statistics.quantiles(times, n=100)
    print(json.dumps({"count": len(times), "p50_ms": statistics.median(times), "p99_ms": q[98],
                      "max_ms": max(times), "idle_lv": idle_lv, "idle_cpu_percent": idle_cpu * 100,
                      "runs": runs, "reference": reference}))


if __name__ == "__main__":
    main()
