#!/usr/bin/env python3
"""Independent check that a file storage domain follows VDSM's on-disk rules.

Written from the format description (domain metadata sealed with SHA-1 over
sorted KEY=VALUE lines; volume metadata as sorted lines ending with EOF,
at most 512 bytes; CAP/SEQ on version 5, SIZE/MTIME before), not from
Cairn's code, so that Cairn's writer is checked by a second reader.

Usage: vdsm_check.py DOMAIN_DIR   -> prints "ok" or the problems, exit 1.
"""

import hashlib
import json
import os
import re
import struct
import subprocess
import sys

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
BLANK = "00000000-0000-0000-0000-000000000000"
DOMAIN_KEYS = {
    "VERSION", "SDUUID", "TYPE", "ROLE", "DESCRIPTION", "CLASS", "POOL_UUID", "LOCKPOLICY",
    "LOCKRENEWALINTERVALSEC", "LEASETIMESEC", "IOOPTIMEOUTSEC", "LEASERETRIES", "REMOTE_PATH",
}
POOL_KEYS = {"POOL_DOMAINS", "POOL_DESCRIPTION", "POOL_SPM_ID", "POOL_SPM_LVER", "MASTER_VERSION"}
VOLUME_KEYS = {"CTIME", "DESCRIPTION", "DISKTYPE", "DOMAIN", "FORMAT", "GEN", "IMAGE", "LEGALITY",
               "PUUID", "TYPE", "VOLTYPE"}

problems = []


def problem(msg):
    problems.append(msg)


def read_domain_metadata(path):
    lines = [l for l in open(path, encoding="utf-8").read().split("\n") if l]
    md = {}
    for l in lines:
        k, _, v = l.partition("=")
        md[k.strip()] = v
    declared = md.pop("_SHA_CKSUM", None)
    h = hashlib.sha1()
    for k in sorted(md):
        h.update(("%s=%s" % (k, md[k])).encode("ascii", "xmlcharrefreplace"))
    if declared != h.hexdigest():
        problem("domain metadata checksum %s, expected %s" % (declared, h.hexdigest()))
    body = [l for l in lines if not l.startswith("_SHA_CKSUM=")]
    if body != sorted(body):
        problem("domain metadata lines are not sorted")
    if not lines[-1].startswith("_SHA_CKSUM="):
        problem("checksum is not the last line")
    return md


def check_domain(root):
    sd = os.path.basename(os.path.normpath(root))
    md = read_domain_metadata(os.path.join(root, "dom_md", "metadata"))
    version = int(md.get("VERSION", "0"))
    missing = DOMAIN_KEYS - set(md)
    if version >= 5:
        missing |= {"BLOCK_SIZE", "ALIGNMENT"} - set(md)
    if missing:
        problem("domain metadata lacks %s" % sorted(missing))
    if md.get("SDUUID") != sd:
        problem("SDUUID %s does not match directory %s" % (md.get("SDUUID"), sd))
    if md.get("TYPE") not in ("NFS", "LOCALFS", "POSIXFS", "GLUSTERFS", "CIFS"):
        problem("TYPE %r is not a VDSM file domain type" % md.get("TYPE"))
    if md.get("CLASS") not in ("Data", "Iso", "Backup"):
        problem("CLASS %r" % md.get("CLASS"))
    if md.get("ROLE") == "Master":
        if POOL_KEYS - set(md):
            problem("master domain lacks %s" % sorted(POOL_KEYS - set(md)))
        for entry in md.get("POOL_DOMAINS", "").split(","):
            dom, _, status = entry.partition(":")
            if not UUID.match(dom) or status not in ("Active", "Attached"):
                problem("POOL_DOMAINS entry %r" % entry)
        for d in ("master", "master/tasks", "master/vms"):
            if not os.path.isdir(os.path.join(root, d)):
                problem("master domain lacks %s/" % d)
    for f in ("ids", "leases", "inbox", "outbox") + (("xleases",) if version >= 4 else ()):
        if not os.path.isfile(os.path.join(root, "dom_md", f)):
            problem("dom_md/%s is missing" % f)
    for f in ("inbox", "outbox"):
        p = os.path.join(root, "dom_md", f)
        if os.path.isfile(p) and os.path.getsize(p) != 16 << 20:
            problem("dom_md/%s is not 16 MiB" % f)
    if version >= 4:
        align = int(md.get("ALIGNMENT", 1 << 20))
        with open(os.path.join(root, "dom_md", "xleases"), "rb") as f:
            f.seek(align)
            head = f.read(512)
        magic, ver, ls = struct.unpack(">i x 4s x 48s", head[:58])
        if magic != 0x12152016 or ver != b"0001" or ls.rstrip(b"\0").decode() != sd:
            problem("xleases index header is wrong")
    check_images(root, sd, version)


def check_images(root, sd, version):
    images = os.path.join(root, "images")
    for img in sorted(os.listdir(images)):
        if not UUID.match(img):
            problem("images/ holds %r, not an image" % img)
            continue
        vols = {}
        for name in sorted(os.listdir(os.path.join(images, img))):
            if name.endswith(".meta"):
                vols[name[:-5]] = check_volume(os.path.join(images, img), name[:-5], sd, img, version)
        for vol, md in vols.items():
            if md is None:
                continue
            parent = md.get("PUUID")
            children = [v for v, m in vols.items() if m and m.get("PUUID") == vol]
            if parent != BLANK and parent not in vols:
                problem("%s: parent %s is missing" % (vol, parent))
            if md.get("VOLTYPE") == "LEAF" and children:
                problem("%s is LEAF but has children %s" % (vol, children))
            if md.get("VOLTYPE") == "INTERNAL" and not children:
                problem("%s is INTERNAL without children" % vol)


def check_volume(dir, vol, sd, img, version):
    raw = open(os.path.join(dir, vol + ".meta"), "rb").read()
    if len(raw) > 512:
        problem("%s.meta is %d bytes" % (vol, len(raw)))
    text = raw.decode("utf-8")
    if not text.endswith("EOF\n"):
        problem("%s.meta does not end with EOF" % vol)
    lines = text.split("\n")[:-2]
    if lines != sorted(lines):
        problem("%s.meta lines are not sorted" % vol)
    md = dict(l.split("=", 1) for l in lines)
    want = set(VOLUME_KEYS) | ({"CAP", "SEQ"} if version >= 5 else {"SIZE", "MTIME"})
    if want - set(md):
        problem("%s.meta lacks %s" % (vol, sorted(want - set(md))))
    if set(md) - want:
        problem("%s.meta has extra keys %s" % (vol, sorted(set(md) - want)))
    # A template (SHARED) is hard-linked into the images cloned from it.
    if md.get("DOMAIN") != sd or (md.get("IMAGE") != img and md.get("VOLTYPE") != "SHARED"):
        problem("%s.meta names another domain or image" % vol)
    for f in (vol, vol + ".lease"):
        if not os.path.isfile(os.path.join(dir, f)):
            problem("%s is missing" % f)
    if md.get("FORMAT") not in ("RAW", "COW") or md.get("TYPE") not in ("SPARSE", "PREALLOCATED"):
        problem("%s.meta FORMAT/TYPE %s/%s" % (vol, md.get("FORMAT"), md.get("TYPE")))
    if md.get("LEGALITY") not in ("LEGAL", "ILLEGAL", "FAKE"):
        problem("%s.meta LEGALITY %s" % (vol, md.get("LEGALITY")))
    if not 0 <= int(md.get("GEN", "0")) <= 999:
        problem("%s.meta GEN out of range" % vol)
    fmt = {"RAW": "raw", "COW": "qcow2"}.get(md.get("FORMAT"))
    path = os.path.join(dir, vol)
    if fmt and os.path.isfile(path):
        out = subprocess.run(["qemu-img", "info", "--output", "json", "-U", "-f", fmt, path],
                             capture_output=True, text=True)
        if out.returncode != 0:
            problem("qemu-img info %s: %s" % (vol, out.stderr.strip()))
        else:
            info = json.loads(out.stdout)
            cap = int(md["CAP"]) if "CAP" in md else int(md.get("SIZE", "0")) * 512
            if info["virtual-size"] != cap:
                problem("%s: virtual size %d, metadata says %d" % (vol, info["virtual-size"], cap))
            backing = info.get("backing-filename")
            parent = md.get("PUUID")
            if (parent == BLANK) != (backing is None) or (backing and backing != parent):
                problem("%s: qcow2 backing %r does not match PUUID %s" % (vol, backing, parent))
    return md


if __name__ == "__main__":
    check_domain(sys.argv[1])
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print("ok")
