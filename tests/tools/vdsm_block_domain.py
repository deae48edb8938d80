#!/usr/bin/env python3
"""Lays out a version 5 block storage domain on DEVICE the way VDSM does
(../shared/reference/vdsm-block.md, sections 1.2-1.5 and 2), with lvm and
plain writes only, sharing no code with Cairn: what a VDSM host would have
left on a LUN, for Cairn to read, join and extend.

    vdsm_block_domain.py SD DEVICE GUID PATTERN_FILE

Makes: the PV (two 128 MiB metadata areas, live on this PV), the VG named
SD with 128 MiB extents, the special LVs (metadata ids inbox outbox leases
xleases master), the xleases index, an ext3 master file system, the
domain metadata as sealed MDT_ tags, the domain tag last; then three
volumes, each a one-segment LV with IU_/PU_/MD_ tags and a version 5
record in its slot: a RAW preallocated 1 GiB volume holding PATTERN_FILE's
bytes at its start (image A), and a qcow2 base holding them plus a qcow2
snapshot on it (image B). Prints "A_IMG A_VOL B_IMG B_BASE B_TOP". The
sanlock areas are left zeroed (the tests take flock leases).
"""
import hashlib
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
import uuid

MIB = 1 << 20
EXTENT = 128 * MIB
BLANK = "00000000-0000-0000-0000-000000000000"


def run(*args, **kw):
    out = subprocess.run(list(args), capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit("%s failed: %s" % (" ".join(args), out.stderr))
    return out.stdout


class Lvm:
    def __init__(self, device):
        self.device = device
        self.config = ('devices { filter=["a|^%s$|", "r|.*|"] hints="none" obtain_device_list_from_udev=0 } '
                       'global { activation=0 } backup { backup=0 archive=0 }' % device)

    def __call__(self, *args):
        return run("lvm", args[0], "--config", self.config, *args[1:],
                   env=dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1"))

    def offset(self, vg, lv):
        """Where an LV (one segment) starts on the PV."""
        ranges = self("lvs", "--noheadings", "-o", "seg_pe_ranges", "%s/%s" % (vg, lv)).split()
        assert len(ranges) == 1, ranges
        first = int(ranges[0].rpartition(":")[2].split("-")[0])
        pe_start = int(self("pvs", "--noheadings", "--nosuffix", "--units", "b", "-o", "pe_start",
                            self.device).strip())
        return pe_start + first * EXTENT


def write_at(device, offset, data):
    fd = os.open(device, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def escape(text):
    # VDSM writes characters outside its tag alphabet as &<code>&.
    return re.sub(r"[^a-zA-Z0-9_+.\-/=!:#]", lambda m: "&%d&" % ord(m.group(0)), text)


def domain_tags(md):
    seal = hashlib.sha1()
    for k in sorted(md):
        seal.update(("%s=%s" % (k, md[k])).encode("ascii", "xmlcharrefreplace"))
    tags = ["MDT_%s=%s" % (escape(k), escape(v)) for k, v in md.items()]
    return tags + ["MDT__SHA_CKSUM=%s" % seal.hexdigest()]


def xleases_index(sd):
    """The index at the second 1 MiB slot: a 512-byte header (big-endian
    magic 0x12152016, version "0001", the lockspace, mtime, the updating
    flag), then empty 64-byte records up to 62 x 4 KiB."""
    header = bytearray(512)
    header[0:4] = struct.pack(">i", 0x12152016)
    header[5:9] = b"0001"
    header[10:10 + len(sd)] = sd.encode()
    header[59:69] = b"%010d" % int(time.time())
    header[70:71] = b"-"
    header[511:512] = b"\n"
    record = b"\0" * 49 + b"00000000000" + b"\0" + b"--\n"
    return bytes(header) + record * ((62 * 4096 - 512) // 64)


def volume_record(sd, img, parent, capacity, fmt, kind, role):
    md = {"CAP": str(capacity), "CTIME": str(int(time.time())), "DESCRIPTION": "made as VDSM does",
          "DISKTYPE": "DATA", "DOMAIN": sd, "FORMAT": fmt, "GEN": "0", "IMAGE": img,
          "LEGALITY": "LEGAL", "PUUID": parent, "SEQ": "1", "TYPE": kind, "VOLTYPE": role}
    return ("".join("%s=%s\n" % (k, md[k]) for k in sorted(md)) + "EOF\n").encode()


def main():
    sd, device, guid, pattern_file = sys.argv[1:5]
    pattern = open(pattern_file, "rb").read()
    lvm = Lvm(device)
    # 1.2: the PV and the VG.
    lvm("pvcreate", "--metadatasize", "128m", "--metadatacopies", "2", "--metadataignore", "y", "--yes", device)
    lvm("pvchange", "--metadataignore", "n", device)
    lvm("vgcreate", "--setautoactivation", "n", "--physicalextentsize", "128m",
        "--addtag", "RHAT_storage_domain_UNREADY", sd, device)
    vg_uuid = lvm("vgs", "--noheadings", "-o", "vg_uuid", sd).strip()
    # 1.3/1.4: the special LVs, metadata first (extent 0 of the PV).
    for name, mib in [("metadata", 128), ("ids", 8), ("inbox", 16), ("outbox", 16),
                      ("leases", 2048), ("xleases", 1024), ("master", 1024)]:
        lvm("lvcreate", "--autobackup", "n", "--activate", "n", "--zero", "n", "--wipesignatures", "n",
            "--size", "%dm" % mib, "--name", name, sd)
    write_at(device, lvm.offset(sd, "xleases") + MIB, xleases_index(sd))
    master = lvm.offset(sd, "master")
    run("mkfs.ext3", "-q", "-F", "-j", "-E", "nodiscard,offset=%d" % master, device, "%dk" % (1024 * 1024))
    # 1.5: metadata as tags, then the domain tag.
    pe_count = lvm("pvs", "--noheadings", "-o", "pv_pe_count", device).strip()
    pv_uuid = lvm("pvs", "--noheadings", "-o", "pv_uuid", device).strip()
    md = {"VERSION": "5", "SDUUID": sd, "TYPE": "ISCSI", "CLASS": "Data", "DESCRIPTION": "vdsm, by hand",
          "ROLE": "Regular", "POOL_UUID": "", "LOCKPOLICY": "", "LOCKRENEWALINTERVALSEC": "5",
          "LEASETIMESEC": "60", "IOOPTIMEOUTSEC": "10", "LEASERETRIES": "3", "VGUUID": vg_uuid,
          "PV0": "pv:%s,uuid:%s,pestart:0,pecount:%s,mapoffset:0" % (guid, pv_uuid, pe_count),
          "ALIGNMENT": "1048576", "BLOCK_SIZE": "512"}
    args = ["vgchange", "--autobackup", "n"]
    for t in domain_tags(md):
        args += ["--addtag", t]
    lvm(*args, sd)
    lvm("vgchange", "--deltag", "RHAT_storage_domain_UNREADY", "--addtag", "RHAT_storage_domain", sd)

    # 2: volumes, each an LV with its tags and a record in its slot.
    metadata = lvm.offset(sd, "metadata")
    gib = 1 << 30
    a_img, a_vol = str(uuid.uuid4()), str(uuid.uuid4())
    b_img, b_base, b_top = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    with tempfile.TemporaryDirectory() as tmp:
        base, top = os.path.join(tmp, "base"), os.path.join(tmp, "top")
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1", base, str(gib))
        run("qemu-io", "-f", "qcow2", "-c", "write -s %s 0 %d" % (pattern_file, len(pattern)), base)
        run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1", "-F", "qcow2", "-b", b_base, "-u",
            top, str(gib))
        images = {b_base: open(base, "rb").read(), b_top: open(top, "rb").read(), a_vol: pattern}
    volumes = [
        (a_vol, a_img, BLANK, 1, "RAW", "PREALLOCATED", "LEAF"),
        (b_base, b_img, BLANK, 2, "COW", "SPARSE", "INTERNAL"),
        (b_top, b_img, b_base, 3, "COW", "SPARSE", "LEAF"),
    ]
    for vol, img, parent, slot, fmt, kind, role in volumes:
        lvm("lvcreate", "--autobackup", "n", "--activate", "n", "--zero", "n", "--wipesignatures", "n",
            "--size", "1g", "--name", vol, "--addtag", "IU_%s" % img, "--addtag", "PU_%s" % parent,
            "--addtag", "MD_%d" % slot, sd)
        write_at(device, lvm.offset(sd, vol), images[vol])
        write_at(device, metadata + MIB + slot * 8192,
                 volume_record(sd, img, parent, gib, fmt, kind, role).ljust(512, b"\0"))
    print(a_img, a_vol, b_img, b_base, b_top)


if __name__ == "__main__":
    main()
