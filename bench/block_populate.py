#!/usr/bin/env python3
"""Adds N volumes to a block domain at once, as a VDSM host would have laid
them out, for benchmarks at sizes cairnd would take an hour to create one
by one (bench/block.sh).

    block_populate.py LVM_PROGRAM DEVICE SD N

DEVICE is the domain's only PV; cairnd must not be running. Each volume is
a RAW PREALLOCATED 128 MiB LV (one extent) in an image of its own, tagged
IU_/PU_/MD_ with a version 5 metadata record in its slot. The LVs are added
to the VG's text metadata (vgcfgbackup, edit, vgcfgrestore: one metadata
write instead of N); the records are written straight to the PV with
O_DIRECT. The leases LV is moved to one contiguous run of extents big
enough for every slot's lease (its bytes copied), so an LV mapper without
device-mapper (the tests' stand-in) can still map it.
"""
import mmap
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid

MIB = 1 << 20
RECORD = 512


def lvm(program, device, *args):
    config = ('devices { filter=["a|^%s$|", "r|.*|"] hints="none" obtain_device_list_from_udev=0 } '
              'backup { backup=0 archive=0 }' % device)
    out = subprocess.run([program, args[0], "--config", config] + list(args[1:]),
                         capture_output=True, text=True, env=dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1"))
    if out.returncode != 0:
        sys.exit("lvm %s failed: %s" % (" ".join(args), out.stderr))
    return out.stdout


def lv_blocks(text):
    """(name, start, end) of each LV block inside logical_volumes."""
    body_start = text.index("logical_volumes {")
    out = []
    for m in re.finditer(r"\n\t\t(\S+) \{\n", text[body_start:]):
        start = body_start + m.start() + 1
        depth, i = 0, start
        while True:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        out.append((m.group(1), start, i + 1))
    return out


def lv_id():
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    raw = "".join(alphabet[b % len(alphabet)] for b in os.urandom(32))
    return "-".join([raw[0:6], raw[6:10], raw[10:14], raw[14:18], raw[18:22], raw[22:26], raw[26:32]])


def record(sd, img, n):
    lines = {
        "CAP": str(128 * MIB), "CTIME": str(int(time.time())), "DESCRIPTION": "bench %d" % n,
        "DISKTYPE": "DATA", "DOMAIN": sd, "FORMAT": "RAW", "GEN": "0", "IMAGE": img,
        "LEGALITY": "LEGAL", "PUUID": "00000000-0000-0000-0000-000000000000", "SEQ": "1",
        "TYPE": "PREALLOCATED", "VOLTYPE": "LEAF",
    }
    text = "".join("%s=%s\n" % (k, lines[k]) for k in sorted(lines)) + "EOF\n"
    return text.encode().ljust(RECORD, b"\0")


def main():
    program, device, sd, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "vg.cfg")
        lvm(program, device, "vgcfgbackup", "-f", cfg, sd)
        text = open(cfg).read()
        extent = int(re.search(r"\n\textent_size = (\d+)", text).group(1)) * 512
        pe_start = int(re.search(r"pe_start = (\d+)", text).group(1)) * 512
        pe_count = int(re.search(r"pe_count = (\d+)", text).group(1))
        used = set()
        segments = {}
        for name, start, end in lv_blocks(text):
            block = text[start:end]
            for count, first in re.findall(r'extent_count = (\d+).*?"pv0", (\d+)', block, re.S):
                used.update(range(int(first), int(first) + int(count)))
                segments.setdefault(name, []).append((int(first), int(count)))
        slots = set()
        for tags in re.findall(r"tags = \[([^\]]*)\]", text):
            slots.update(int(s) for s in re.findall(r'"MD_(\d+)"', tags))
        free = [e for e in range(pe_count) if e not in used]
        new_slots = [s for s in range(1, n + len(slots) + 1) if s not in slots][:n]

        # The leases LV: one run of extents covering every slot's lease.
        # Room for the leases of a few more volumes cairnd adds after these.
        need = -(-((100 + max(new_slots) + 1 + 64) * MIB) // extent)
        (first_old, count_old), = segments["leases"]
        if need > count_old:
            run = next(i for i in range(len(free) - need)
                       if free[i + need - 1] - free[i] == need - 1)
            new_first = free[run]
            del free[run:run + need]
            fd = os.open(device, os.O_RDWR)
            src, dst = pe_start + first_old * extent, pe_start + new_first * extent
            for off in range(0, count_old * extent, 64 * MIB):
                os.pwrite(fd, os.pread(fd, 64 * MIB, src + off), dst + off)
            os.fsync(fd)
            os.close(fd)
            name, start, end = next(b for b in lv_blocks(text) if b[0] == "leases")
            block = text[start:end]
            block = re.sub(r"extent_count = \d+", "extent_count = %d" % need, block)
            block = re.sub(r'"pv0", \d+', '"pv0", %d' % new_first, block)
            text = text[:start] + block + text[end:]
            free = sorted(free + list(range(first_old, first_old + count_old)))
        if len(free) < n:
            sys.exit("the VG has %d free extents, %d needed" % (len(free), n))

        lvs = []
        records = {}
        for i, slot in enumerate(new_slots):
            vol, img = str(uuid.uuid4()), str(uuid.uuid4())
            lvs.append("""
\t\t%s {
\t\t\tid = "%s"
\t\t\tstatus = ["READ", "WRITE", "VISIBLE"]
\t\t\tflags = []
\t\t\ttags = ["IU_%s", "MD_%d", "PU_00000000-0000-0000-0000-000000000000"]
\t\t\tcreation_time = %d
\t\t\tcreation_host = "bench"
\t\t\tsegment_count = 1

\t\t\tsegment1 {
\t\t\t\tstart_extent = 0
\t\t\t\textent_count = 1

\t\t\t\ttype = "striped"
\t\t\t\tstripe_count = 1

\t\t\t\tstripes = [
\t\t\t\t\t"pv0", %d
\t\t\t\t]
\t\t\t}
\t\t}
""" % (vol, lv_id(), img, slot, int(time.time()), free[i]))
            records[slot] = record(sd, img, i)
        _, _, last_end = lv_blocks(text)[-1]
        text = text[:last_end] + "".join(lvs) + text[last_end:]
        seqno = int(re.search(r"\n\tseqno = (\d+)", text).group(1))
        text = re.sub(r"\n\tseqno = \d+", "\n\tseqno = %d" % (seqno + 1), text, count=1)
        open(cfg, "w").write(text)
        lvm(program, device, "vgcfgrestore", "-f", cfg, sd)

        # Records: the metadata LV's version 5 area, read, filled, written.
        (md_first, _), = segments["metadata"]
        area_start = pe_start + md_first * extent + MIB
        length = (max(new_slots) + 1) * 8192
        length = -(-length // 4096) * 4096
        buf = mmap.mmap(-1, length)
        fd = os.open(device, os.O_RDWR | os.O_DIRECT)
        os.preadv(fd, [buf], area_start)
        for slot, rec in records.items():
            buf[slot * 8192:slot * 8192 + RECORD] = rec
        os.pwritev(fd, [buf], area_start)
        os.fsync(fd)
        os.close(fd)
    print(n)


if __name__ == "__main__":
    main()
