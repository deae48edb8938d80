"""Incremental backup through the Cinder face (bench/cinder_backup.sh runs
it): a SIZE GiB thin volume filled with random data, a full backup, then
PCT% of it changed in scattered 64 KiB writes and an incremental backup
that reads what the dirty bitmap marks; then as much changed again and an
incremental backup without the bitmap, which reads and hashes the whole
volume as Cinder's chunked drivers do. The chain is restored into a new
volume, which must equal the source byte for byte, or the run fails.

    cinder_backup_bench.py SOCKET CINDER_ADDR DATA_DIR LOG SIZE_GIB PCT
"""

import glob
import json
import os
import uuid
import random
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from cinder_bench import Cinder, Rpc  # noqa: E402

MIB = 1 << 20


def wait_backup(c, bid):
    while True:
        status, body = c.req("GET", f"/backups/{bid}")
        st = body["backup"]["status"]
        if st == "available":
            return body["backup"]
        if st == "error":
            sys.exit(f"backup {bid} failed: {body}")
        time.sleep(0.05)


def backup(c, vid, incremental):
    start = time.time()
    status, body = c.req("POST", "/backups", {"backup": {"volume_id": vid, "incremental": incremental}})
    if status != 202:
        sys.exit(f"backup: {status} {body}")
    b = wait_backup(c, body["backup"]["id"])
    return b["id"], time.time() - start


def read_bytes(log, bid):
    for line in open(log):
        if "backup done" in line and bid in line:
            return int(re.search(r"read=(\d+)", line).group(1))
    sys.exit(f"no 'backup done' line for {bid}")


def leaf_of(data, vid):
    paths = [p for p in glob.glob(f"{data}/mnt/**/images/{vid}/*", recursive=True)
             if not p.endswith((".meta", ".lease"))]
    if len(paths) != 1:
        sys.exit(f"volume {vid}: expected one layer, found {paths}")
    return paths[0]


def qemu_io(path, cmds):
    args = ["qemu-io", "-f", "qcow2", "-t", "none"]
    for cmd in cmds:
        args += ["-c", cmd]
    subprocess.run(args + [path], check=True, stdout=subprocess.DEVNULL)


def change(path, size, pct, rng):
    """Scattered 64 KiB writes covering pct% of the disk."""
    n = int(size * pct / 100) // (64 << 10)
    slots = rng.sample(range(size // (64 << 10)), n)
    cmds = [f"write -P {rng.randrange(1, 255)} {s * (64 << 10)} 64k" for s in slots]
    for i in range(0, len(cmds), 400):
        qemu_io(path, cmds[i:i + 400])
    return n * (64 << 10)


def main():
    sock, addr, data, log, size_gib, pct = sys.argv[1:7]
    size, pct = int(size_gib) << 30, float(pct)
    rpc, c = Rpc(sock), Cinder(addr)
    rng = random.Random(13)
    status, body = c.req("POST", "/volumes", {"volume": {"size": int(size_gib), "name": "backup-bench"}})
    if status != 202:
        sys.exit(f"create: {status} {body}")
    vid = body["volume"]["id"]
    c.wait(vid)
    leaf = leaf_of(data, vid)
    # Random data: 256 MiB of it, written at every 256 MiB of the disk.
    pattern = os.path.join(os.path.dirname(data), "random")
    with open(pattern, "wb") as f:
        for _ in range(256):
            f.write(os.urandom(MIB))
    qemu_io(leaf, [f"write -s {pattern} {off} 256M" for off in range(0, size, 256 * MIB)])
    os.unlink(pattern)

    full, full_s = backup(c, vid, False)
    changed1 = change(leaf, size, pct, rng)
    inc, inc_s = backup(c, vid, True)
    changed2 = change(leaf, size, pct, rng)
    # Cinder's way: no change tracking; the bitmap is removed first.
    bitmap = f"cairn-backup-{inc}"
    sd = rpc.call("StoragePool.getInfo", {"storagepoolID": rpc.call("Host.getConnectedStoragePools", {})[0]})["info"]["master_uuid"]
    job = str(uuid.uuid4())
    rpc.call("SDM.remove_bitmap", {"job_id": job, "vol_info": {"sd_id": sd, "img_id": vid, "vol_id": os.path.basename(leaf)}, "bitmap": bitmap})
    while True:
        j = rpc.call("Host.getJobs", {"job_ids": [job]}).get(job, {})
        if j.get("status") not in ("pending", "running"):
            if j.get("status") != "done":
                sys.exit(f"remove_bitmap: {j}")
            break
        time.sleep(0.05)
    hashed, hashed_s = backup(c, vid, True)

    start = time.time()
    status, body = c.req("POST", f"/backups/{hashed}/restore", {"restore": {"name": "restored"}})
    if status != 202:
        sys.exit(f"restore: {status} {body}")
    rid = body["restore"]["volume_id"]
    while True:
        _, v = c.req("GET", f"/volumes/{rid}")
        if v["volume"]["status"] == "available":
            break
        if v["volume"]["status"].startswith("error"):
            sys.exit(f"restore failed: {v}")
        time.sleep(0.05)
    restore_s = time.time() - start
    cmp = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", leaf, leaf_of(data, rid)],
                         capture_output=True, text=True)
    if cmp.returncode != 0:
        sys.exit(f"the restored volume differs from the source: {cmp.stdout}{cmp.stderr}")
    print(json.dumps({
        "size": size, "pct": pct, "changed1": changed1, "changed2": changed2,
        "full_s": full_s, "full_read": read_bytes(log, full),
        "inc_s": inc_s, "inc_read": read_bytes(log, inc),
        "hashed_s": hashed_s, "hashed_read": read_bytes(log, hashed),
        "restore_s": restore_s,
    }))


if __name__ == "__main__":
    main()
