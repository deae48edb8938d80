//! On-storage compatibility with VDSM, both ways: domains Cairn writes pass
//! an independent checker of VDSM's rules (tests/tools/vdsm_check.py), and
//! domains laid out by VDSM (hand-written fixtures) are read and extended.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::common::*;

const SD4: &str = "7d6b2c4e-3f1a-4b8e-9c2d-5e6f7a8b9c0d";
const IMG4: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
const V4_BASE: &str = "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e";
const V4_LEAF: &str = "3c4d5e6f-7a8b-4c9d-8e1f-2a3b4c5d6e7f";
const SD5: &str = "4d5e6f7a-8b9c-4d0e-9f2a-3b4c5d6e7f80";
const SP5: &str = "5e6f7a8b-9c0d-4e1f-8a3b-4c5d6e7f8091";
const IMG5: &str = "6f7a8b9c-0d1e-4f2a-9b4c-5d6e7f809102";
const V5: &str = "7a8b9c0d-1e2f-4a3b-8c5d-6e7f80910213";

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Installs a fixture domain under `storage`, adding what VDSM would have
/// next to the metadata: lease and mailbox files, master dirs, volume data.
fn install_fixture(name: &str, sd: &str, storage: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .join(sd);
    let root = storage.join(sd);
    copy_tree(&src, &root);
    let md = root.join("dom_md");
    for f in ["ids", "leases"] {
        std::fs::File::create(md.join(f)).unwrap();
    }
    // VDSM formats the external leases index at domain creation.
    let (offset, index) = cairn::format::xleases::format_index(sd, 1_600_000_000, 1 << 20);
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::File::create(md.join("xleases")).unwrap(),
        &index,
        offset,
    )
    .unwrap();
    for f in ["inbox", "outbox"] {
        std::fs::File::create(md.join(f))
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
    }
    root
}

fn qemu_img(args: &[&str]) {
    let st = Command::new("qemu-img").args(args).status().unwrap();
    assert!(st.success(), "qemu-img {args:?}");
}

#[test]
fn cairn_domains_follow_vdsm_rules() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let (img, base, top) = (uuid(), uuid(), uuid());
    d.create_volume(
        &sp,
        &sd,
        &img,
        &base,
        json!({"volFormat": "RAW", "preallocate": "PREALLOCATED", "size": "1048576"}),
    );
    d.create_volume(
        &sp,
        &sd,
        &img,
        &top,
        json!({"srcImgUUID": img, "srcVolUUID": base, "desc": "d\u{e9}j\u{e0} vu"}),
    );
    d.create_volume(
        &sp,
        &sd,
        &uuid(),
        &uuid(),
        json!({"volFormat": "COW", "preallocate": "PREALLOCATED", "size": "1048576"}),
    );
    vdsm_check(&d.domain_dir(&sd));

    // Version 4 too, with a non-ASCII name (checksummed as &#NNN;).
    let dir = d.local_storage("v4");
    let sd4 = uuid();
    d.call(
        "StorageDomain.create",
        json!({"storagedomainID": sd4, "domainType": "LOCALFS", "typeArgs": dir.to_str().unwrap(), "name": "v4 d\u{f6}main", "domainClass": "Data", "version": 4}),
    );
    vdsm_check(&dir.join(&sd4));
}

#[test]
fn reads_and_extends_a_vdsm_v4_domain() {
    let d = Daemon::start_bare();
    let storage = d.data().join("vdsm4");
    let root = install_fixture("vdsm-v4", SD4, &storage);
    let imgdir = root.join("images").join(IMG4);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "raw",
        imgdir.join(V4_BASE).to_str().unwrap(),
        "1G",
    ]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=1.1",
        "-b",
        V4_BASE,
        "-F",
        "raw",
        imgdir.join(V4_LEAF).to_str().unwrap(),
        "1G",
    ]);
    for v in [V4_BASE, V4_LEAF] {
        std::fs::File::create(imgdir.join(format!("{v}.lease"))).unwrap();
    }
    vdsm_check(&root);
    d.connect_local(&storage);

    assert_eq!(d.call("Host.getStorageDomains", json!({})), json!([SD4]));
    let info = d.call("StorageDomain.getInfo", json!({"storagedomainID": SD4}));
    assert_eq!(info["version"], 4);
    assert_eq!(info["name"], "vdsm v4 fixture");
    assert_eq!(info["block_size"], 512);
    let mut vols = vec![V4_BASE, V4_LEAF];
    vols.sort();
    assert_eq!(d.image_volumes(BLANK, SD4, IMG4), json!(vols));
    let base = d.volume_info(BLANK, SD4, IMG4, V4_BASE);
    assert_eq!(
        base["capacity"],
        json!(1u64 << 30),
        "SIZE in blocks read as bytes"
    );
    assert_eq!(base["disktype"], "DATA", "legacy DISKTYPE=2");
    assert_eq!(base["generation"], 2);
    assert_eq!(base["voltype"], "INTERNAL");
    assert_eq!(base["description"], "base from vdsm");

    // Make it the master of a new pool and snapshot the VDSM leaf.
    let sp = uuid();
    d.call("StoragePool.create", json!({"storagepoolID": sp, "name": "adopted", "masterSdUUID": SD4, "masterVersion": 1, "domainList": [SD4]}));
    d.call("StoragePool.connect", json!({"storagepoolID": sp, "hostID": 3, "scsiKey": "", "masterSdUUID": SD4, "masterVersion": 1}));
    d.spm_start(&sp);
    let top = uuid();
    d.create_volume(
        &sp,
        SD4,
        IMG4,
        &top,
        json!({"srcImgUUID": IMG4, "srcVolUUID": V4_LEAF}),
    );
    let meta = std::fs::read_to_string(imgdir.join(format!("{top}.meta"))).unwrap();
    assert!(
        meta.contains("SIZE=2097152\n") && meta.contains("MTIME=0\n") && !meta.contains("CAP="),
        "v4 metadata: {meta}"
    );
    vdsm_check(&root);
}

#[test]
fn joins_a_pool_created_by_vdsm() {
    let d = Daemon::start_bare();
    let storage = d.data().join("vdsm5");
    let root = install_fixture("vdsm-v5-master", SD5, &storage);
    std::fs::create_dir_all(root.join("master/tasks")).unwrap();
    std::fs::create_dir_all(root.join("master/vms")).unwrap();
    let imgdir = root.join("images").join(IMG5);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=1.1",
        imgdir.join(V5).to_str().unwrap(),
        "1G",
    ]);
    std::fs::File::create(imgdir.join(format!("{V5}.lease"))).unwrap();
    d.connect_local(&storage);

    // The master version must match.
    let (code, _) = d.call_err("StoragePool.connect", json!({"storagepoolID": SP5, "hostID": 2, "scsiKey": "", "masterSdUUID": SD5, "masterVersion": 6}));
    assert_eq!(code, 324);
    d.call("StoragePool.connect", json!({"storagepoolID": SP5, "hostID": 2, "scsiKey": "", "masterSdUUID": SD5, "masterVersion": 7}));
    let info = d.call("StoragePool.getInfo", json!({"storagepoolID": SP5}));
    assert_eq!(info["info"]["name"], "vdsm dc");
    assert_eq!(info["info"]["type"], "SHAREDFS");
    assert_eq!(info["info"]["master_ver"], 7);
    d.spm_start(SP5);
    assert_eq!(
        d.call("StoragePool.getSpmStatus", json!({"storagepoolID": SP5})),
        json!({"spmId": 2, "spmStatus": "SPM", "spmLver": 13})
    );
    let v = d.volume_info(SP5, SD5, IMG5, V5);
    assert_eq!(
        v["description"],
        "{\"DiskAlias\":\"vm1_Disk1\",\"DiskDescription\":\"\"}"
    );
    assert_eq!(v["generation"], 5);
    let top = uuid();
    d.create_volume(
        SP5,
        SD5,
        IMG5,
        &top,
        json!({"srcImgUUID": IMG5, "srcVolUUID": V5, "sequence": 2}),
    );
    vdsm_check(&root);
}

#[test]
fn broken_seal_is_reported() {
    let d = Daemon::start_bare();
    let storage = d.data().join("broken");
    let root = install_fixture("vdsm-v4", SD4, &storage);
    let md = root.join("dom_md/metadata");
    let text = std::fs::read_to_string(&md)
        .unwrap()
        .replace("vdsm v4 fixture", "tampered");
    std::fs::write(&md, text).unwrap();
    d.connect_local(&storage);
    let (code, msg) = d.call_err("StorageDomain.getInfo", json!({"storagedomainID": SD4}));
    assert_eq!(code, 752, "{msg}");
    assert!(msg.contains("seal"), "{msg}");
}

/// A block domain laid out on a LUN as VDSM lays it out, by an independent
/// tool (tests/tools/vdsm_block_domain.py: lvm commands and plain writes,
/// no Cairn code): Cairn reads its volumes, makes it the master of a new
/// pool (mounting the master file system VDSM made), reads the data VDSM
/// wrote through the chain, and extends it with a snapshot and an image.
#[test]
fn reads_joins_and_extends_a_block_domain_laid_out_as_vdsm_does() {
    let luns = TestLuns::new(1).expect("a loop device for a LUN");
    let sd = uuid();
    let tmp = tempfile::tempdir().unwrap();
    let pattern = tmp.path().join("pattern");
    std::fs::write(
        &pattern,
        (0..1 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/vdsm_block_domain.py");
    let out = Command::new("python3")
        .arg(tool)
        .arg(&sd)
        .arg(&luns.luns[0].path)
        .arg(luns.guid(0))
        .arg(&pattern)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    luns.track_vg(&sd);
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let [a_img, a_vol, b_img, b_base, b_top] = <[String; 5]>::try_from(ids).unwrap();
    vdsm_check_block(&sd, &luns);

    let d = Daemon::start_with_luns(&luns);
    let listed = d.call("Host.getStorageDomains", json!({}));
    assert!(listed.as_array().unwrap().contains(&json!(sd)), "{listed}");
    let info = d.call("StorageDomain.getInfo", json!({"storagedomainID": sd}));
    assert_eq!(
        (info["type"].as_str(), info["version"].as_u64()),
        (Some("ISCSI"), Some(5)),
        "{info}"
    );
    assert_eq!(info["name"], "vdsm, by hand");
    let mut images: Vec<String> = d
        .call("StorageDomain.getImages", json!({"storagedomainID": sd}))
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect();
    images.sort();
    let mut want = vec![a_img.clone(), b_img.clone()];
    want.sort();
    assert_eq!(images, want);

    // Joined: the master of a new pool, this host its SPM.
    let sp = d.spm_of_pool(&[&sd]);
    let top = d.volume_info(&sp, &sd, &b_img, &b_top);
    assert_eq!(
        (top["format"].as_str(), top["voltype"].as_str()),
        (Some("COW"), Some("LEAF")),
        "{top}"
    );
    assert_eq!(top["parent"], b_base.as_str());
    assert_eq!(top["capacity"], json!(1u64 << 30));
    let base = d.volume_info(&sp, &sd, &b_img, &b_base);
    assert_eq!(base["voltype"], "INTERNAL");

    // What VDSM wrote reads back, through the chain and from the RAW volume.
    let read = |img: &str, vol: &str, fmt: &str| {
        d.with_prepared((&sp, &sd), img, vol, |path| {
            // The pattern is the volume's first MiB; compare reads the
            // rest of the larger image as zeros.
            let out = Command::new("qemu-img")
                .args(["compare", "-f", fmt, "-F", "raw"])
                .arg(path)
                .arg(&pattern)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        })
    };
    read(&b_img, &b_top, "qcow2");
    read(&a_img, &a_vol, "raw");

    // Extended: a snapshot on VDSM's chain and an image of Cairn's own.
    let snap = uuid();
    d.create_volume(
        &sp,
        &sd,
        &b_img,
        &snap,
        json!({"srcImgUUID": b_img, "srcVolUUID": b_top, "size": (1u64 << 30).to_string()}),
    );
    assert_eq!(
        d.volume_info(&sp, &sd, &b_img, &b_top)["voltype"],
        "INTERNAL"
    );
    d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "COW", "preallocate": "SPARSE", "size": (1u64 << 30).to_string()}),
    );
    vdsm_check_block(&sd, &luns);
}
