#!/usr/bin/env python3
"""Independent check that a file storage domain follows VDSM's on-disk rules.

Written from the format description (domain metadata sealed with SHA-1 over
sorted KEY=VALUE lines; volume metadata as sorted lines ending with EOF,
at most 512 bytes; CAP/SEQ on version 5, SIZE/MTIME before), not from
Cairn's code, so that Cairn's writer is checked by a second reader.

Usage: vdsm_check.py DOMAIN_DIR   -> prints "ok" or the problems, exit 1.
       vdsm_check.py --block SDUUID DEVICE...
           a block domain: the VG SDUUID on those devices, read with lvm's
           reports and, for the LVs' contents, straight from the PVs
           through the extent mapping (nothing needs to be activated).
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
    # VDSM's 4 -> 5 conversion adds CAP to version 4 files first.
    if set(md) - want - ({"CAP"} if version == 4 else set()):
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


# --- Block domains (VG tags, special LVs, LV tags, metadata slots) --------

MIB = 1 << 20
SPECIAL = {"metadata": 128, "ids": 8, "inbox": 16, "outbox": 16, "leases": 2048, "master": 1024}


def lvm_report(devices, args, kind):
    accept = "".join('"a|^%s$|", ' % d for d in devices)
    config = 'devices { filter=[%s"r|.*|"] obtain_device_list_from_udev=0 hints="none" } global { activation=0 }' % accept
    out = subprocess.run(["lvm"] + args[:1] + ["--config", config, "--reportformat", "json",
                          "--units", "b", "--nosuffix"] + args[1:],
                         capture_output=True, text=True, env=dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1"))
    if out.returncode != 0:
        problem("lvm %s: %s" % (args[0], out.stderr.strip()))
        return []
    rows = []
    for part in json.loads(out.stdout)["report"]:
        rows += part.get(kind, [])
    return rows


def decode_tag(text):
    def sub(m):
        return chr(int(m.group(1)))
    if re.search(r"[^a-zA-Z0-9_+.\-/=!:#&]", text):
        problem("tag text %r has characters LVM tags do not allow" % text)
    return re.sub(r"&(\d+)&", sub, text)


class Pv:
    def __init__(self, devices, sd):
        self.pvs = {r["pv_name"]: int(r["pe_start"]) for r in
                    lvm_report(devices, ["pvs", "-o", "pv_name,pe_start,vg_name"], "pv")
                    if r["vg_name"] == sd}

    def read(self, lv, offset, length):
        """Bytes of an LV, through its one segment on its PV."""
        dev, first = lv["segments"][0]
        extent = lv["extent"]
        with open(dev, "rb") as f:
            f.seek(self.pvs[dev] + first * extent + offset)
            return f.read(length)


def check_block(sd, devices):
    vgs = [r for r in lvm_report(devices, ["vgs", "-o", "vg_name,vg_uuid,vg_tags,vg_extent_size", sd], "vg")]
    if not vgs:
        problem("no VG %s" % sd)
        return
    vg = vgs[0]
    tags = [t for t in vg["vg_tags"].split(",") if t]
    if "RHAT_storage_domain" not in tags or "RHAT_storage_domain_UNREADY" in tags:
        problem("VG tags %s do not say it is a domain" % tags)
    if int(vg["vg_extent_size"]) != 128 * MIB:
        problem("extent size %s, VDSM uses 128 MiB" % vg["vg_extent_size"])
    md = {}
    for t in tags:
        if t.startswith("MDT_"):
            k, _, v = t[4:].partition("=")
            md[decode_tag(k)] = decode_tag(v)
    declared = md.pop("_SHA_CKSUM", None)
    h = hashlib.sha1()
    for k in sorted(md):
        h.update(("%s=%s" % (k, md[k])).encode("ascii", "xmlcharrefreplace"))
    if declared != h.hexdigest():
        problem("VG tag metadata checksum %s, expected %s" % (declared, h.hexdigest()))
    version = int(md.get("VERSION", "0"))
    want = (DOMAIN_KEYS - {"REMOTE_PATH"}) | {"VGUUID", "PV0"}
    want |= {"BLOCK_SIZE", "ALIGNMENT"} if version >= 5 else {"LOGBLKSIZE", "PHYBLKSIZE"}
    if want - set(md):
        problem("domain metadata lacks %s" % sorted(want - set(md)))
    if "REMOTE_PATH" in md:
        problem("a block domain has no REMOTE_PATH")
    if md.get("SDUUID") != sd or md.get("VGUUID") != vg["vg_uuid"]:
        problem("SDUUID/VGUUID %s/%s do not name this VG" % (md.get("SDUUID"), md.get("VGUUID")))
    if md.get("TYPE") not in ("ISCSI", "FCP"):
        problem("TYPE %r is not a VDSM block domain type" % md.get("TYPE"))
    for k, v in md.items():
        if re.match(r"^PV\d+$", k) and not re.match(r"^pv:[^,]+,uuid:[^,]+,pestart:0,pecount:\d+,mapoffset:\d+$", v):
            problem("%s=%s is not VDSM's PV mapping" % (k, v))
    extent = int(vg["vg_extent_size"])
    lvs = {}
    for r in lvm_report(devices, ["lvs", "-o", "lv_name,lv_size,lv_tags,seg_pe_ranges", sd], "lv"):
        segs = []
        for rng in r["seg_pe_ranges"].split():
            dev, _, span = rng.rpartition(":")
            segs.append((dev, int(span.split("-")[0])))
        lv = lvs.setdefault(r["lv_name"], {"size": int(r["lv_size"]), "extent": extent,
                                          "tags": [t for t in r["lv_tags"].split(",") if t], "segments": []})
        lv["segments"] += segs
    special = dict(SPECIAL, **({"xleases": 1024} if version >= 4 else {}))
    for name, mib in special.items():
        if name not in lvs:
            problem("special LV %s is missing" % name)
        elif lvs[name]["size"] < mib * MIB:
            problem("special LV %s is %d bytes, VDSM asks %d MiB" % (name, lvs[name]["size"], mib))
    for name in lvs:
        if name not in special and not UUID.match(name):
            problem("LV %s is neither special nor a volume" % name)
    pv = Pv(devices, sd)
    align = int(md.get("ALIGNMENT", MIB))
    if version >= 4 and "xleases" in lvs:
        head = pv.read(lvs["xleases"], align, 512)
        magic, ver, ls = struct.unpack(">i x 4s x 48s", head[:58])
        if magic != 0x12152016 or ver != b"0001" or ls.rstrip(b"\0").decode() != sd:
            problem("xleases index header is wrong")
    slots = {}
    volumes = {}
    for name, lv in sorted(lvs.items()):
        if not UUID.match(name):
            continue
        tags = lv["tags"]
        if "OVIRT_VOL_INITIALIZING" in tags:
            problem("%s is still being created" % name)
            continue
        img = [t[3:] for t in tags if t.startswith("IU_")]
        parent = [t[3:] for t in tags if t.startswith("PU_")]
        slot = [t[3:] for t in tags if t.startswith("MD_")]
        if len(img) != 1 or len(parent) != 1 or len(slot) != 1 or not slot[0].isdigit():
            problem("%s tags %s: VDSM needs one IU_, PU_ and MD_ each" % (name, tags))
            continue
        if img[0].startswith("_remove_me_"):
            continue
        slot = int(slot[0])
        if slot in slots:
            problem("slot %d is held by %s and %s" % (slot, slots[slot], name))
        slots[slot] = name
        if slot < (1 if version >= 5 else 4):
            problem("%s uses reserved slot %d" % (name, slot))
        offset = MIB + slot * 8192 if version >= 5 else slot * 512
        raw = pv.read(lvs["metadata"], offset, 512)
        text = raw.rstrip(b"\0").decode("utf-8", "replace")
        if not text.endswith("EOF\n"):
            problem("%s: slot %d does not end with EOF" % (name, slot))
            continue
        lines = text.split("\n")[:-2]
        if lines != sorted(lines):
            problem("%s: slot lines are not sorted" % name)
        vmd = dict(l.split("=", 1) for l in lines)
        want = set(VOLUME_KEYS) | ({"CAP", "SEQ"} if version >= 5 else {"SIZE", "MTIME"})
        if want ^ set(vmd):
            problem("%s: slot keys differ from VDSM's by %s" % (name, sorted(want ^ set(vmd))))
        if vmd.get("DOMAIN") != sd or vmd.get("IMAGE") != img[0] or vmd.get("PUUID") != parent[0]:
            problem("%s: slot names %s/%s/%s, tags %s/%s" % (name, vmd.get("DOMAIN"), vmd.get("IMAGE"),
                                                          vmd.get("PUUID"), img[0], parent[0]))
        if vmd.get("FORMAT") == "RAW" and vmd.get("TYPE") != "PREALLOCATED":
            problem("%s: RAW %s on block storage" % (name, vmd.get("TYPE")))
        cap = int(vmd["CAP"]) if "CAP" in vmd else int(vmd.get("SIZE", "0")) * 512
        if vmd.get("FORMAT") == "RAW" and lv["size"] < cap:
            problem("%s: LV of %d bytes is smaller than its capacity %d" % (name, lv["size"], cap))
        if vmd.get("FORMAT") == "COW" and len(lv["segments"]) == 1:
            dev, first = lv["segments"][0]
            spec = {"driver": "qcow2", "file": {"driver": "raw", "offset": pv.pvs[dev] + first * extent,
                    "size": lv["size"], "file": {"driver": "host_device", "filename": dev}}}
            out = subprocess.run(["qemu-img", "info", "--output", "json", "-U", "json:" + json.dumps(spec)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                problem("qemu-img info %s: %s" % (name, out.stderr.strip()))
            else:
                info = json.loads(out.stdout)
                if info["virtual-size"] != cap:
                    problem("%s: virtual size %d, metadata says %d" % (name, info["virtual-size"], cap))
                backing = info.get("backing-filename")
                if (parent[0] == BLANK) != (backing is None) or (backing and backing != parent[0]):
                    problem("%s: qcow2 backing %r does not match PU_ %s" % (name, backing, parent[0]))
        volumes[name] = vmd
    for vol, vmd in volumes.items():
        children = [v for v, m in volumes.items() if m.get("PUUID") == vol]
        if vmd.get("PUUID") != BLANK and vmd.get("PUUID") not in volumes:
            problem("%s: parent %s is missing" % (vol, vmd.get("PUUID")))
        if vmd.get("VOLTYPE") == "LEAF" and children:
            problem("%s is LEAF but has children %s" % (vol, children))
        if vmd.get("VOLTYPE") == "INTERNAL" and not children:
            problem("%s is INTERNAL without children" % vol)


if __name__ == "__main__":
    if sys.argv[1] == "--block":
        check_block(sys.argv[2], sys.argv[3:])
    else:
        check_domain(sys.argv[1])
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print("ok")
