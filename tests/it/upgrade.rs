//! Domain format upgrades (VDSM's formatConverter): version 3 and 4
//! domains, file and block, brought to version 5 at SPM start (`domVersion`)
//! and when attached to a newer pool, each step crash-safe.

use std::path::Path;

use cairn::format::domain_md::DomainMetadata;
use cairn::format::vg_tags;
use serde_json::{json, Value};

use crate::common::*;

const MIB: u64 = 1 << 20;

fn version(d: &Daemon, sd: &str) -> u64 {
    d.call("StorageDomain.getInfo", json!({"storagedomainID": sd}))["version"]
        .as_u64()
        .unwrap()
}

fn spm_start_at(d: &Daemon, sp: &str, dom_version: u32) {
    let t = d.call(
        "StoragePool.spmStart",
        json!({"storagepoolID": sp, "prevID": -1, "prevLver": "-1", "enableScsiFencing": "false", "domVersion": dom_version.to_string()}),
    );
    d.task_ok(&t);
}

/// What a domain's volumes say of themselves, to compare across upgrades.
fn volumes(d: &Daemon, sp: &str, sd: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let images = d.call("StorageDomain.getImages", json!({"storagedomainID": sd}));
    for img in images.as_array().unwrap() {
        let img = img.as_str().unwrap();
        for vol in d.image_volumes(sp, sd, img).as_array().unwrap() {
            let mut info = d.volume_info(sp, sd, img, vol.as_str().unwrap());
            for volatile in [
                "mtime",
                "generation",
                "status",
                "lease",
                "truesize",
                "apparentsize",
            ] {
                info.as_object_mut().unwrap().remove(volatile);
            }
            out.push(info);
        }
    }
    out.sort_by_key(|v| v["uuid"].as_str().unwrap().to_string());
    out
}

/// Volumes of each kind on `sd`, with a snapshot and data in the chain.
fn populate(d: &Daemon, sp: &str, sd: &str) {
    let (img, _, top) = d.base_and_snapshot(
        sp,
        sd,
        json!({"volFormat": "COW", "preallocate": "SPARSE", "size": (64 * MIB).to_string()}),
    );
    d.with_prepared((sp, sd), &img, &top, |path| {
        qemu_io(path, "qcow2", "write -P 5 0 1M");
    });
    d.new_image(
        sp,
        sd,
        json!({"volFormat": "RAW", "preallocate": "PREALLOCATED", "size": (8 * MIB).to_string()}),
    );
}

/// The chain still holds what was written.
fn data_intact(d: &Daemon, sp: &str, sd: &str) {
    for v in volumes(d, sp, sd) {
        if v["voltype"] != "LEAF" || v["format"] != "COW" {
            continue;
        }
        let (img, vol) = (v["image"].as_str().unwrap(), v["uuid"].as_str().unwrap());
        d.with_prepared((sp, sd), img, vol, |path| {
            qemu_io(path, "qcow2", "read -P 5 0 1M");
        });
    }
}

/// A LOCALFS domain of `version` on a new directory.
fn file_domain(d: &Daemon, name: &str, version: u32) -> String {
    let sd = uuid();
    let dir = d.local_storage(name);
    d.call(
        "StorageDomain.create",
        json!({"storagedomainID": sd, "domainType": "LOCALFS", "typeArgs": dir.to_str().unwrap(), "name": name, "domainClass": "Data", "version": version.to_string(), "blockSize": 512}),
    );
    sd
}

/// Turns a version 4 file domain into what VDSM's version 3 was: no
/// external leases, `VERSION=3`, sealed again.
fn file_domain_to_v3(dir: &Path) {
    let md_path = dir.join("dom_md/metadata");
    let mut md = DomainMetadata::parse(&std::fs::read(&md_path).unwrap()).unwrap();
    md.set("VERSION", "3");
    std::fs::write(&md_path, md.render()).unwrap();
    std::fs::remove_file(dir.join("dom_md/xleases")).unwrap();
}

#[test]
fn file_domains_upgrade_from_versions_3_and_4_to_5() {
    let d = Daemon::start_bare();
    let master = file_domain(&d, "master", 4);
    let sp = d.spm_of_pool(&[&master]);
    populate(&d, &sp, &master);
    let before = volumes(&d, &sp, &master);
    let meta = |d: &Daemon, sd: &str| -> Vec<String> {
        let mut out = Vec::new();
        for e in walkdir(&d.domain_dir(sd).join("images")) {
            if e.extension().is_some_and(|x| x == "meta") {
                out.push(std::fs::read_to_string(e).unwrap());
            }
        }
        out
    };
    assert!(meta(&d, &master).iter().all(|m| m.contains("SIZE=")));

    // SPM start with the version the caller wants.
    d.call("StoragePool.spmStop", json!({"storagepoolID": sp}));
    spm_start_at(&d, &sp, 5);
    assert_eq!(version(&d, &master), 5);
    assert_eq!(volumes(&d, &sp, &master), before);
    for m in meta(&d, &master) {
        assert!(m.contains("CAP=") && m.contains("SEQ="), "{m}");
        assert!(!m.contains("SIZE=") && !m.contains("MTIME="), "{m}");
    }
    let info = d.call("StorageDomain.getInfo", json!({"storagedomainID": master}));
    assert_eq!(
        (info["block_size"].as_u64(), info["alignment"].as_u64()),
        (Some(512), Some(1 << 20))
    );
    data_intact(&d, &sp, &master);
    vdsm_check(&d.domain_dir(&master));

    // A version 3 domain attached to the version 5 pool: 3 -> 4 -> 5.
    let old = file_domain(&d, "old", 4);
    let old_dir = d.domain_dir(&old);
    file_domain_to_v3(&old_dir);
    assert_eq!(version(&d, &old), 3);
    d.call(
        "StorageDomain.attach",
        json!({"storagedomainID": old, "storagepoolID": sp}),
    );
    assert_eq!(version(&d, &old), 5);
    assert!(old_dir.join("dom_md/xleases").exists());
    vdsm_check(&old_dir);
    // Volumes work on it as on any version 5 domain.
    d.call(
        "StorageDomain.activate",
        json!({"storagedomainID": old, "storagepoolID": sp}),
    );
    populate(&d, &sp, &old);
    vdsm_check(&old_dir);
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A block domain of `version` on LUN `i`.
fn block_domain(d: &Daemon, luns: &TestLuns, i: usize, version: u32) -> String {
    let sd = uuid();
    let vg = d.call(
        "LVMVolumeGroup.create",
        json!({"name": sd, "devlist": [luns.guid(i)], "force": false}),
    );
    luns.track_vg(&sd);
    d.call(
        "StorageDomain.create",
        json!({"storagedomainID": sd, "domainType": "ISCSI", "typeArgs": vg, "name": "b", "domainClass": "Data", "version": version.to_string()}),
    );
    sd
}

/// Turns a version 4 block domain into what VDSM's version 3 was: no
/// `xleases` LV, `VERSION=3` in the VG tags, sealed again.
fn block_domain_to_v3(luns: &TestLuns, sd: &str) {
    let lvm = crate::block_refusals::outside_lvm();
    let devs: Vec<_> = luns.luns.iter().map(|l| l.path.clone()).collect();
    let tags = lvm.vg(&devs, sd).unwrap().tags;
    let mut md = vg_tags::from_tags(tags.iter().map(String::as_str)).unwrap();
    md.set("VERSION", "3");
    let old: Vec<String> = tags
        .iter()
        .filter(|t| t.starts_with("MDT_"))
        .cloned()
        .collect();
    let (del, add) = vg_tags::diff(&old, &vg_tags::to_tags(&md));
    lvm.change_vg_tags(&devs, sd, &add, &del).unwrap();
    lvm.set_active(&devs, sd, &["xleases"], false).unwrap();
    lvm.lvremove(&devs, sd, &["xleases"]).unwrap();
}

#[test]
fn block_domains_upgrade_from_versions_3_and_4_to_5() {
    let luns = TestLuns::new(2).expect("loop devices for LUNs");
    let d = Daemon::start_with_luns(&luns);
    let master = block_domain(&d, &luns, 0, 4);
    let sp = d.spm_of_pool(&[&master]);
    populate(&d, &sp, &master);
    let before = volumes(&d, &sp, &master);
    vdsm_check_block(&master, &luns);

    d.call("StoragePool.spmStop", json!({"storagepoolID": sp}));
    spm_start_at(&d, &sp, 5);
    assert_eq!(version(&d, &master), 5);
    assert_eq!(volumes(&d, &sp, &master), before);
    data_intact(&d, &sp, &master);
    vdsm_check_block(&master, &luns);

    let old = block_domain(&d, &luns, 1, 4);
    // The domain must be reachable by cairnd's cache after the change.
    block_domain_to_v3(&luns, &old);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(version(&d, &old), 3);
    d.call(
        "StorageDomain.attach",
        json!({"storagedomainID": old, "storagepoolID": sp}),
    );
    assert_eq!(version(&d, &old), 5);
    d.call(
        "StorageDomain.activate",
        json!({"storagedomainID": old, "storagepoolID": sp}),
    );
    populate(&d, &sp, &old);
    vdsm_check_block(&old, &luns);
}

/// A crash at each step of an upgrade (file and block): the domain is
/// valid at its old or new version after the restart, and the next SPM
/// start with the same `domVersion` finishes the upgrade.
#[test]
fn upgrade_crash_walk() {
    let luns = TestLuns::new(1).expect("a loop device for a LUN");
    let mut d = Daemon::start_with_luns(&luns);
    for fp in ["domain.upgrade.prepared", "domain.upgrade.committed"] {
        let file = file_domain(&d, &format!("f-{}", fp.len()), 4);
        let block = block_domain(&d, &luns, 0, 4);
        let sp = d.spm_of_pool(&[&file, &block]);
        d.call(
            "StorageDomain.activate",
            json!({"storagedomainID": block, "storagepoolID": sp}),
        );
        populate(&d, &sp, &file);
        populate(&d, &sp, &block);
        let before = (volumes(&d, &sp, &file), volumes(&d, &sp, &block));
        d.call("StoragePool.spmStop", json!({"storagepoolID": sp}));

        d = d.restart_armed(&format!("{fp}=crash"), false);
        let _ = d.client.call(
            "StoragePool.spmStart",
            json!({"storagepoolID": sp, "prevID": -1, "prevLver": "-1", "enableScsiFencing": "false", "domVersion": "5"}),
        );
        d = d.restart_after_crash(false);
        let crashed = version(&d, &file);
        assert!(crashed == 4 || crashed == 5, "{fp}: {crashed}");
        if crashed == 4 {
            // Version 4, its volumes' metadata with CAP added (VDSM's own
            // intermediate state). After the commit the volumes keep the
            // older keys beside the new until the SPM start's garbage
            // collection rewrites them, as VDSM's readers allow.
            vdsm_check(&d.domain_dir(&file));
        }
        spm_start_at(&d, &sp, 5);
        for sd in [&file, &block] {
            assert_eq!(version(&d, sd), 5, "{fp}");
        }
        assert_eq!(
            (volumes(&d, &sp, &file), volumes(&d, &sp, &block)),
            before,
            "{fp}"
        );
        data_intact(&d, &sp, &file);
        data_intact(&d, &sp, &block);
        vdsm_check(&d.domain_dir(&file));
        vdsm_check_block(&block, &luns);

        // Leave the pool and free the LUN for the next round.
        d.leave_pool(&sp);
        d.call(
            "StorageDomain.format",
            json!({"storagedomainID": block, "autoDetach": true}),
        );
    }
}
