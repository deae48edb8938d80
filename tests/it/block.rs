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
