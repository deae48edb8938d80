//! Block domains beyond the backend contract: VDSM's on-disk rules checked
//! by an independent reader, and VDSM's rules for block volumes.

use serde_json::json;

use crate::common::*;

const MIB: u64 = 1 << 20;

/// Every kind of volume Cairn makes on a block domain passes the checker
/// of VDSM's rules (`tests/tools/vdsm_check.py --block`), which reads the
/// VG through lvm's reports and the LVs' bytes straight from the PVs.
#[test]
fn block_domains_follow_vdsm_rules() {
    let luns = TestLuns::new(2).expect("loop devices for LUNs");
    let (d, sp, sd, other) = Daemon::block_pool(&luns);
    let (img, base) = d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "COW", "preallocate": "SPARSE", "size": (64 * MIB).to_string()}),
    );
    let top = uuid();
    d.create_volume(
        &sp,
        &sd,
        &img,
        &top,
        json!({"srcImgUUID": img, "srcVolUUID": base, "size": (64 * MIB).to_string()}),
    );
    d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "RAW", "preallocate": "PREALLOCATED", "size": (200 * MIB).to_string()}),
    );
    d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "COW", "preallocate": "SPARSE", "size": (1u64 << 30).to_string(), "initialSize": (300 * MIB).to_string()}),
    );
    let (timg, tvol) = d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "COW", "preallocate": "SPARSE", "size": (64 * MIB).to_string()}),
    );
    d.make_template(&sd, &timg, &tvol);
    d.create_volume(
        &sp,
        &sd,
        &uuid(),
        &uuid(),
        json!({"srcImgUUID": timg, "srcVolUUID": tvol, "size": (64 * MIB).to_string()}),
    );
    vdsm_check_block(&sd, &luns);
    vdsm_check_block(&other, &luns);
}

/// VDSM's rules for block volumes: no RAW SPARSE, no initialSize for RAW;
/// a bad request changes nothing.
#[test]
fn block_volume_requests_vdsm_refuses_are_refused() {
    let luns = TestLuns::new(2).expect("loop devices for LUNs");
    let (d, sp, sd, _) = Daemon::block_pool(&luns);
    for (extra, code) in [
        (json!({"volFormat": "RAW", "preallocate": "SPARSE"}), 202),
        (
            json!({"volFormat": "RAW", "preallocate": "PREALLOCATED", "initialSize": "1048576"}),
            1000,
        ),
    ] {
        let mut extra = extra;
        extra["size"] = json!((64 * MIB).to_string());
        let (got, msg) = d.call_err(
            "Volume.create",
            volume_params(&sp, &sd, &uuid(), &uuid(), extra),
        );
        assert_eq!(got, code, "{msg}");
    }
    assert_eq!(
        d.call("StorageDomain.getImages", json!({"storagedomainID": sd})),
        json!([])
    );
    vdsm_check_block(&sd, &luns);
}

/// `Host.getDeviceList` shows the LUNs with VDSM's fields; a LUN that
/// holds a VG is `used`, with its PV and VG; `LVMVolumeGroup.create`
/// refuses it, and a GUID the host does not see, with VDSM's codes.
#[test]
fn device_list_and_luns_in_use() {
    let luns = TestLuns::new(2).expect("loop devices for LUNs");
    let d = Daemon::start_with_luns(&luns);
    let list = d.call("Host.getDeviceList", json!({"checkStatus": true}));
    let find = |list: &serde_json::Value, guid: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|dev| dev["GUID"] == guid)
            .cloned()
            .unwrap_or_else(|| panic!("{guid} not in {list}"))
    };
    let first = find(&list, &luns.guid(0));
    assert_eq!(first["status"], "free", "{first}");
    assert_eq!(first["capacity"], (12u64 << 30).to_string());
    assert_eq!(first["logicalblocksize"], "512");
    assert_eq!(first["pvUUID"], "");
    let sd = d.block_domain(&luns, 0, "one");
    let list = d.call(
        "Host.getDeviceList",
        json!({"guids": [luns.guid(0), luns.guid(1)], "checkStatus": true}),
    );
    let used = find(&list, &luns.guid(0));
    assert_eq!(used["status"], "used", "{used}");
    assert_ne!(used["vgUUID"], "");
    assert_eq!(find(&list, &luns.guid(1))["status"], "free");
    let unchecked = d.call("Host.getDeviceList", json!({"checkStatus": false}));
    assert_eq!(find(&unchecked, &luns.guid(1))["status"], "unknown");

    // The LUN of a domain, and a LUN the host does not see.
    for (guid, needle) in [
        (luns.guid(0), "belongs to volume group"),
        ("36001405deadbeef".to_string(), "not among"),
    ] {
        let (code, msg) = d.call_err(
            "LVMVolumeGroup.create",
            json!({"name": uuid(), "devlist": [guid], "force": false}),
        );
        assert_eq!(code, 606, "{msg}");
        assert!(msg.contains(needle), "{msg}");
    }
    // A VG that is a domain already cannot take a second one.
    let vg = used["vgUUID"].as_str().unwrap().to_string();
    let (code, msg) = d.call_err(
        "StorageDomain.create",
        json!({"storagedomainID": sd, "domainType": "ISCSI", "typeArgs": vg, "name": "again", "domainClass": "Data"}),
    );
    assert_eq!(code, 365, "{msg}");
    let (code, msg) = d.call_err(
        "StorageDomain.create",
        json!({"storagedomainID": uuid(), "domainType": "ISCSI", "typeArgs": vg, "name": "other", "domainClass": "Data"}),
    );
    assert_eq!(code, 515, "{msg}");
    vdsm_check_block(&sd, &luns);
}

/// The CLI makes a block domain from a LUN it lists, and the domain is
/// listed like any other.
#[test]
fn the_cli_makes_block_domains() {
    let luns = TestLuns::new(1).expect("a loop device for a LUN");
    let d = Daemon::start_with_luns(&luns);
    let listed = crate::cli::json_out(&d, &["domain", "luns"]);
    let guid = luns.guid(0);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["GUID"] == guid.as_str() && l["status"] == "free"),
        "{listed}"
    );
    let made = crate::cli::json_out(&d, &["domain", "create-block", &guid, "--name", "san"]);
    let sd = made["storagedomainID"].as_str().unwrap().to_string();
    luns.track_vg(&sd);
    let domains = crate::cli::json_out(&d, &["domain", "list"]);
    let entry = domains
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["info"]["uuid"] == sd.as_str())
        .unwrap_or_else(|| panic!("{domains}"));
    assert_eq!(entry["info"]["type"], "ISCSI");
    assert_eq!(entry["info"]["name"], "san");
    let vg = crate::cli::json_out(&d, &["domain", "vg", &sd]);
    assert_eq!(vg["name"], sd.as_str(), "{vg}");
    assert_eq!(vg["pvlist"][0]["GUID"], guid.as_str(), "{vg}");
    vdsm_check_block(&sd, &luns);
}

/// A block domain grows onto another LUN (`StorageDomain.extend`) and
/// onto what its LUN gained (`StorageDomain.resizePV`); the domain
/// metadata maps both PVs as VDSM does; `LVMVolumeGroup.getInfo` shows
/// them; an unused VG is removed and frees its LUN.
#[test]
fn block_domains_grow_onto_luns_and_unused_vgs_go() {
    let luns = TestLuns::new(3).expect("loop devices for LUNs");
    let (d, sp, sd, other) = Daemon::block_pool(&luns);
    let info = d.call("StorageDomain.getInfo", json!({"storagedomainID": sd}));
    assert_eq!(info["metadataDevice"], luns.guid(0), "{info}");
    let vg = info["vguuid"].as_str().expect("vguuid").to_string();
    let vg_info = |d: &Daemon| d.call("LVMVolumeGroup.getInfo", json!({"lvmvolumegroupID": vg}));
    let before = vg_info(&d);
    assert_eq!(before["name"], sd);
    assert_eq!(before["state"], "OK");
    assert_eq!(before["attr"]["permission"], "w", "{before}");
    assert_eq!(before["pvlist"].as_array().unwrap().len(), 1);
    assert_eq!(before["pvlist"][0]["GUID"], luns.guid(0));
    assert_eq!(
        before["pvlist"][0]["devcapacity"],
        (12u64 << 30).to_string()
    );
    let total = |d: &Daemon| -> u64 {
        d.call("StorageDomain.getStats", json!({"storagedomainID": sd}))["disktotal"]
            .as_u64()
            .unwrap()
    };
    let total_before = total(&d);

    // Refused, changing nothing: a LUN of another domain, one the host
    // does not see, force, no LUN; then a pool the domain is not in.
    for (devlist, force, code) in [
        (json!([luns.guid(1)]), false, 606),
        (json!(["36001405deadbeef"]), false, 606),
        (json!([luns.guid(2)]), true, -32602),
        (json!([]), false, 1000),
    ] {
        let (got, msg) = d.call_err(
            "StorageDomain.extend",
            json!({"storagedomainID": sd, "storagepoolID": sp, "devlist": devlist, "force": force}),
        );
        assert_eq!(got, code, "{msg}");
    }
    let (got, msg) = d.call_err(
        "StorageDomain.extend",
        json!({"storagedomainID": sd, "storagepoolID": uuid(), "devlist": [luns.guid(2)]}),
    );
    assert!(got == 309 || got == 654, "{got} {msg}");
    assert_eq!(vg_info(&d)["pvlist"], before["pvlist"]);

    // A crash between the vgextend and the metadata: the PV is in the VG,
    // and extending again finishes the work.
    let extend = json!({"storagedomainID": sd, "storagepoolID": sp, "devlist": [luns.guid(2)], "force": false});
    let d = d.restart_armed("block.extend.after_vgextend=crash", false);
    let _ = d.client.call("StorageDomain.extend", extend.clone());
    let d = d.restart_after_crash(false);
    assert_eq!(vg_info(&d)["pvlist"].as_array().unwrap().len(), 2);
    d.call("StorageDomain.extend", extend.clone());
    let after = vg_info(&d);
    let guids: Vec<&str> = after["pvlist"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["GUID"].as_str().unwrap())
        .collect();
    assert_eq!(guids.len(), 2, "{after}");
    assert!(guids.contains(&luns.guid(2).as_str()), "{after}");
    assert!(total(&d) > total_before + (10u64 << 30), "{after}");
    // Run again: nothing more.
    d.call("StorageDomain.extend", extend);
    assert_eq!(vg_info(&d)["pvlist"].as_array().unwrap().len(), 2);
    vdsm_check_block(&sd, &luns);

    // The storage grows LUN 2 by 4 GiB; resizePV gives the domain that.
    let grown_from = total(&d);
    luns.luns[2].grow(16 << 30);
    let size = d.call(
        "StorageDomain.resizePV",
        json!({"storagedomainID": sd, "storagepoolID": sp, "guid": luns.guid(2)}),
    );
    assert!(size.as_u64().unwrap() > (15u64 << 30), "{size}");
    assert!(total(&d) >= grown_from + (4u64 << 30) - (256 << 20));
    // A LUN of another domain is not this domain's PV.
    let (code, msg) = d.call_err(
        "StorageDomain.resizePV",
        json!({"storagedomainID": sd, "storagepoolID": sp, "guid": luns.guid(1)}),
    );
    assert_eq!(code, 619, "{msg}");
    vdsm_check_block(&sd, &luns);
    // A volume larger than the first LUN could hold now fits.
    d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "RAW", "preallocate": "PREALLOCATED", "size": (12u64 << 30).to_string()}),
    );

    // LVMVolumeGroup.remove refuses a domain's VG and an unknown one.
    let (code, msg) = d.call_err("LVMVolumeGroup.remove", json!({"lvmvolumegroupID": vg}));
    assert_eq!(code, 515, "{msg}");
    let (code, msg) = d.call_err(
        "LVMVolumeGroup.remove",
        json!({"lvmvolumegroupID": "no-such-vg"}),
    );
    assert_eq!(code, 506, "{msg}");
    let _ = other;
}

/// A VG that never became a domain is removed, and its LUN is free again.
#[test]
fn an_unused_vg_is_removed_and_its_lun_freed() {
    let luns = TestLuns::new(1).expect("loop devices for LUNs");
    let d = Daemon::start_with_luns(&luns);
    let name = uuid();
    let vg = d.call(
        "LVMVolumeGroup.create",
        json!({"name": name, "devlist": [luns.guid(0)], "force": false}),
    );
    luns.track_vg(&name);
    let info = d.call("LVMVolumeGroup.getInfo", json!({"lvmvolumegroupID": vg}));
    assert_eq!(info["name"], name);
    d.call("LVMVolumeGroup.remove", json!({"lvmvolumegroupID": vg}));
    let list = d.call(
        "Host.getDeviceList",
        json!({"guids": [luns.guid(0)], "checkStatus": true}),
    );
    assert_eq!(list[0]["status"], "free", "{list}");
    assert_eq!(list[0]["pvUUID"], "", "{list}");
    let (code, msg) = d.call_err("LVMVolumeGroup.getInfo", json!({"lvmvolumegroupID": vg}));
    assert_eq!(code, 506, "{msg}");
}

/// FC connections need no login: each succeeds once the HBAs have
/// rescanned (this machine has none, so nothing is scanned), and
/// disconnecting leaves the fabric's LUNs as they are.
#[test]
fn fc_connections_rescan_and_succeed() {
    let d = Daemon::start_bare();
    for verb in [
        "StoragePool.connectStorageServer",
        "StoragePool.disconnectStorageServer",
    ] {
        let st = d.call(
            verb,
            json!({"storagepoolID": BLANK, "domainType": "FCP", "connectionParams": [{"id": "fc1", "connection": ""}, {"id": "fc2", "connection": "fabric"}]}),
        );
        assert_eq!(
            st,
            json!([{"id": "fc1", "status": 0}, {"id": "fc2", "status": 0}]),
            "{verb}"
        );
    }
}

/// Block domains through the pool verbs file domains have (monitoring,
/// deactivate/detach/attach/activate, switchMaster, reconstructMaster) and
/// the image operations beyond the contract: bitmaps, an NBD export,
/// upload and download, and copies between a block and a file domain in
/// both directions.
#[test]
fn block_domains_through_pool_verbs_and_image_operations() {
    let luns = TestLuns::new(2).expect("loop devices for LUNs");
    let (d, sp, sd, other) = Daemon::block_pool(&luns);

    // Monitoring reads the domain's metadata LV.
    d.call(
        "Host.startMonitoringDomain",
        json!({"sdUUID": other, "hostID": 1}),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let stats = d.call("Host.getStorageRepoStats", json!({"domains": [other]}));
        if stats[&other]["valid"] == true && stats[&other]["actual"] == true {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stats}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    d.call("Host.stopMonitoringDomain", json!({"sdUUID": other}));

    // Membership: out of the pool and back.
    let ids = json!({"storagedomainID": other, "storagepoolID": sp});
    for verb in [
        "StorageDomain.deactivate",
        "StorageDomain.detach",
        "StorageDomain.attach",
        "StorageDomain.activate",
    ] {
        d.call(verb, ids.clone());
    }

    // A file domain in the same pool, for copies between kinds.
    let file = uuid();
    let dir = d.local_storage("file");
    d.call(
        "StorageDomain.create",
        json!({"storagedomainID": file, "domainType": "LOCALFS", "typeArgs": dir.to_str().unwrap(), "name": "file", "domainClass": "Data"}),
    );
    let file_ids = json!({"storagedomainID": file, "storagepoolID": sp});
    d.call("StorageDomain.attach", file_ids.clone());
    d.call("StorageDomain.activate", file_ids);

    // A qcow2 volume with data and a bitmap, exported over NBD.
    let cow = json!({"volFormat": "COW", "preallocate": "SPARSE", "size": (64 * MIB).to_string()});
    let (img, vol) = d.new_image(&sp, &sd, cow.clone());
    d.with_prepared((&sp, &sd), &img, &vol, |path| {
        qemu_io(path, "qcow2", "write -P 0x3c 1M 2M")
    });
    d.job_ok(
        "SDM.add_bitmap",
        json!({"vol_info": {"sd_id": sd, "img_id": img, "vol_id": vol}, "bitmap": "b1"}),
    );
    assert_eq!(d.bitmaps(&sp, &sd, &img, &vol), ["b1"]);
    let id = uuid();
    let url = d
        .call(
            "NBD.start_server",
            json!({"server_id": id, "config": {"sd_id": sd, "img_id": img, "vol_id": vol, "readonly": true}}),
        )
        .as_str()
        .unwrap()
        .to_string();
    d.with_prepared((&sp, &sd), &img, &vol, |path| {
        same_contents(std::path::Path::new(&url), "raw", path, "qcow2")
    });
    d.call("NBD.stop_server", json!({"server_id": id}));

    // Block -> file -> block copies keep the data.
    let (fimg, fvol) = d.new_image(&sp, &file, cow.clone());
    d.job_ok(
        "SDM.copy_data",
        json!({"source": {"sd_id": sd, "img_id": img, "vol_id": vol}, "destination": {"sd_id": file, "img_id": fimg, "vol_id": fvol}}),
    );
    let (bimg, bvol) = d.new_image(&sp, &other, cow);
    d.job_ok(
        "SDM.copy_data",
        json!({"source": {"sd_id": file, "img_id": fimg, "vol_id": fvol}, "destination": {"sd_id": other, "img_id": bimg, "vol_id": bvol}}),
    );
    d.with_prepared((&sp, &sd), &img, &vol, |src| {
        d.with_prepared((&sp, &file), &fimg, &fvol, |mid| {
            same_contents(src, "qcow2", mid, "qcow2")
        });
        d.with_prepared((&sp, &other), &bimg, &bvol, |dst| {
            same_contents(src, "qcow2", dst, "qcow2")
        });
    });

    // Upload and download of a RAW block volume (the CLI works on the
    // master domain).
    let (rimg, rvol) = d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "RAW", "preallocate": "PREALLOCATED", "size": (32 * MIB).to_string()}),
    );
    let local = d.data().join("disk.raw");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&local).unwrap();
        f.set_len(32 * MIB).unwrap();
        f.write_all_at(&[0x42; 65536], 5 << 20).unwrap();
    }
    crate::cli::json_out(
        &d,
        &["image", "upload", local.to_str().unwrap(), &rimg, &rvol],
    );
    let back = d.data().join("back.raw");
    // A device has no holes to skip: all of it moves.
    let down = crate::cli::json_out(
        &d,
        &["image", "download", &rimg, &rvol, back.to_str().unwrap()],
    );
    assert_eq!(down["data"], 32 * MIB, "{down}");
    let (b, l) = (
        std::fs::read(&back).unwrap(),
        std::fs::read(&local).unwrap(),
    );
    assert!(
        b == l,
        "the download differs at {:?}",
        b.iter().zip(&l).position(|(x, y)| x != y)
    );
    // Image.move across kinds: the RAW image to the file domain (its zero
    // blocks become holes there, not written zeros) and back.
    let mv = |from: &str, to: &str, op: &str| {
        d.task_ok(&d.call(
            "Image.move",
            json!({"imageID": rimg, "storagepoolID": sp, "storagedomainID": from, "dstSdUUID": to,
                   "operation": op, "postZero": false, "force": false}),
        ));
    };
    mv(&sd, &file, "MOVE");
    let moved = d.domain_dir(&file).join("images").join(&rimg).join(&rvol);
    let allocated = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&moved).unwrap().blocks() * 512
    };
    assert!(
        allocated < 4 * MIB,
        "{allocated} bytes allocated for 64 KiB of data"
    );
    same_contents(&moved, "raw", &local, "raw");
    mv(&file, &other, "MOVE");
    d.with_prepared((&sp, &other), &rimg, &rvol, |path| {
        same_contents(path, "raw", &local, "raw")
    });
    vdsm_check(&d.domain_dir(&file));

    // A qcow2 volume downloads as its LV holds it: a qcow2 image that
    // reads as the volume does.
    let qcow = d.data().join("back.qcow2");
    crate::cli::json_out(
        &d,
        &["image", "download", &img, &vol, qcow.to_str().unwrap()],
    );
    d.with_prepared((&sp, &sd), &img, &vol, |path| {
        same_contents(&qcow, "qcow2", path, "qcow2")
    });

    // The master moves to the other block domain, and is rebuilt on the
    // first after it is lost.
    d.task_ok(&d.call(
        "StoragePool.switchMaster",
        json!({"storagepoolID": sp, "oldMasterUUID": sd, "newMasterUUID": other, "masterVersion": 2}),
    ));
    let info = d.call("StoragePool.getInfo", json!({"storagepoolID": sp}));
    assert_eq!(info["info"]["master_uuid"], other.as_str(), "{info}");
    d.leave_pool(&sp);
    d.call(
        "StoragePool.reconstructMaster",
        json!({"storagepoolID": sp, "hostId": 1, "name": "rebuilt", "masterSdUUID": sd,
               "masterVersion": 3, "domainDict": {sd.clone(): "active"},
               "lockRenewalIntervalSec": 5, "leaseTimeSec": 60, "ioOpTimeoutSec": 10, "leaseRetries": 3}),
    );
    d.call(
        "StoragePool.connect",
        json!({"storagepoolID": sp, "hostID": 1, "scsiKey": "", "masterSdUUID": sd, "masterVersion": 3}),
    );
    d.spm_start(&sp);
    assert_eq!(d.volume_info(&sp, &sd, &img, &vol)["status"], "OK");
    d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "COW", "preallocate": "SPARSE", "size": (8 * MIB).to_string()}),
    );
    vdsm_check_block(&sd, &luns);
    vdsm_check_block(&other, &luns);
}

/// A block domain monitored before this host sees it (its LUN not yet
/// connected, or the domain not yet made) turns valid once its metadata
/// LV is mapped here, as a file domain does once mounted.
#[test]
fn a_block_domain_monitored_before_it_exists_is_found_when_it_does() {
    let luns = TestLuns::new(1).expect("a loop device for a LUN");
    let d = Daemon::start_with_luns_and(
        &luns,
        &[
            ("CAIRN_MONITOR_INTERVAL", "0.05"),
            ("CAIRN_MONITOR_TIMEOUT", "0.5"),
        ],
    );
    let sd = uuid();
    d.call(
        "Host.startMonitoringDomain",
        json!({"sdUUID": sd, "hostID": 1}),
    );
    let vitals =
        |d: &Daemon| d.call("Host.getStorageRepoStats", json!({"domains": [sd]}))[&sd].clone();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(vitals(&d)["valid"], false, "{}", vitals(&d));
    let vg = d.call(
        "LVMVolumeGroup.create",
        json!({"name": sd, "devlist": [luns.guid(0)], "force": false}),
    );
    luns.track_vg(&sd);
    d.call(
        "StorageDomain.create",
        json!({"storagedomainID": sd, "domainType": "ISCSI", "typeArgs": vg, "name": "late", "domainClass": "Data"}),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while vitals(&d)["valid"] != true {
        assert!(std::time::Instant::now() < deadline, "{}", vitals(&d));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    d.call("Host.stopMonitoringDomain", json!({"sdUUID": sd}));
}

/// An image prepared twice stays mapped until its last teardown, even when
/// a storage connection in between makes cairnd open its domains anew.
#[test]
fn prepares_are_counted_across_reconnects() {
    let luns = TestLuns::new(2).expect("loop devices for LUNs");
    let (d, sp, sd, _) = Daemon::block_pool(&luns);
    let (img, vol) = d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "COW", "preallocate": "SPARSE", "size": (8 * MIB).to_string()}),
    );
    let ids = json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": vol});
    let mapped = || std::path::Path::new("/dev").join(&sd).join(&vol).exists();
    d.call("Image.prepare", ids.clone());
    d.local_storage("elsewhere");
    d.call("Image.prepare", ids.clone());
    d.call("Image.teardown", ids.clone());
    assert!(mapped(), "one prepare is left");
    d.call("Image.teardown", ids);
    assert!(!mapped(), "the last teardown unmaps");
}
