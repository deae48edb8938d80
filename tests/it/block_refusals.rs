//! Bad input for block domains (issue 11, section 5): each gets VDSM's
//! code and a message, and leaves the VG as it was.

use std::path::Path;
use std::process::Command;

use cairn::primitives::lvm::Lvm;
use serde_json::{json, Value};

use crate::common::*;

const MIB: u64 = 1 << 20;

/// The lvm cairnd runs, for changes made behind its back.
pub fn outside_lvm() -> Lvm {
    if real_device_mapper() {
        Lvm::with_program("lvm")
    } else {
        crate::lvm::stand_in_lvm()
    }
}

fn devices(luns: &TestLuns) -> Vec<std::path::PathBuf> {
    luns.luns.iter().map(|l| l.path.clone()).collect()
}

/// What a refusal must leave unchanged: the VG's metadata sequence number
/// (any change bumps it) and the domain's images.
fn vg_state(d: &Daemon, luns: &TestLuns, sd: &str) -> (u64, Value) {
    let seqno = outside_lvm().vg(&devices(luns), sd).unwrap().seqno;
    let images = d.call("StorageDomain.getImages", json!({"storagedomainID": sd}));
    (seqno, images)
}

/// A LUN's partitions, known to the kernel until this is dropped (a loop
/// device reused by the next test would still show them).
struct Partitioned(std::path::PathBuf);

impl Drop for Partitioned {
    fn drop(&mut self) {
        let _ = Command::new("partx").arg("-d").arg(&self.0).status();
    }
}

/// Writes an MBR with one partition and makes the kernel read it, as a
/// LUN someone partitioned.
fn partition(dev: &Path) -> Partitioned {
    let mut mbr = vec![0u8; 512];
    // One Linux partition from sector 2048, 64 MiB long.
    let entry = &mut mbr[446..462];
    entry[4] = 0x83;
    entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
    entry[12..16].copy_from_slice(&((64 * MIB / 512) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    std::fs::write(dev, &mbr).unwrap();
    let ok = Command::new("partx")
        .arg("-a")
        .arg(dev)
        .status()
        .unwrap()
        .success();
    assert!(ok, "partx -a {}", dev.display());
    Partitioned(dev.to_path_buf())
}

/// LUNs VDSM refuses, for a new VG and for a domain's extension: one with
/// partitions, one of 4096-byte sectors; a VG name in use; a volume
/// larger than the VG's free space.
#[test]
fn luns_and_sizes_vdsm_refuses_leave_the_vg_as_it_was() {
    let luns = TestLuns::new(5).expect("loop devices for LUNs");
    let (d, sp, sd, _) = Daemon::block_pool(&luns);
    let _partitioned = partition(&luns.luns[2].path);
    let ok = Command::new("losetup")
        .args(["--sector-size", "4096"])
        .arg(&luns.luns[3].path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "losetup --sector-size 4096");
    let before = vg_state(&d, &luns, &sd);

    let (partitioned, four_k) = (luns.guid(2), luns.guid(3));
    for (guid, code, needle) in [(&partitioned, 606, "partitions"), (&four_k, 518, "4096")] {
        let (got, msg) = d.call_err(
            "LVMVolumeGroup.create",
            json!({"name": uuid(), "devlist": [guid], "force": false}),
        );
        assert_eq!(got, code, "{msg}");
        assert!(msg.contains(needle), "{msg}");
        let (got, msg) = d.call_err(
            "StorageDomain.extend",
            json!({"storagedomainID": sd, "storagepoolID": sp, "devlist": [guid], "force": false}),
        );
        assert_eq!(got, code, "{msg}");
    }
    let list = d.call(
        "Host.getDeviceList",
        json!({"guids": [partitioned], "checkStatus": true}),
    );
    assert_eq!(list[0]["status"], "used", "{list}");
    assert_eq!(list[0]["partitioned"], true, "{list}");

    // The VG name of a domain: 502, and the LUN stays free.
    let free = luns.guid(4);
    let (got, msg) = d.call_err(
        "LVMVolumeGroup.create",
        json!({"name": sd, "devlist": [free], "force": false}),
    );
    assert_eq!(got, 502, "{msg}");
    let list = d.call(
        "Host.getDeviceList",
        json!({"guids": [free], "checkStatus": true}),
    );
    assert_eq!(list[0]["status"], "free", "{list}");

    // More than the VG has free: the task fails with 397, nothing is made.
    let vg_free = outside_lvm().vg(&devices(&luns), &sd).unwrap().free;
    let t = d.call(
        "Volume.create",
        volume_params(
            &sp,
            &sd,
            &uuid(),
            &uuid(),
            json!({"volFormat": "RAW", "preallocate": "PREALLOCATED", "size": (vg_free + (1 << 30)).to_string()}),
        ),
    );
    let st = d.wait_task(&t);
    assert_eq!(st["code"], 397, "{st}");
    d.call("Task.clear", json!({"taskID": t}));
    let after = vg_state(&d, &luns, &sd);
    assert_eq!(after.1, before.1, "no image appeared");
    let lvs = outside_lvm().lvs(&devices(&luns), &sd).unwrap();
    assert_eq!(lvs.len(), 7, "only the special LVs remain: {lvs:?}");
    vdsm_check_block(&sd, &luns);
}

/// Two clients make a VG on one LUN at once, then a domain in it at once:
/// one of each wins, the other gets VDSM's code, and the domain is whole.
#[test]
fn concurrent_creation_on_one_lun_has_one_winner() {
    let luns = TestLuns::new(1).expect("a loop device for a LUN");
    let d = Daemon::start_with_luns(&luns);
    let guid = luns.guid(0);
    let names = [uuid(), uuid()];
    for n in &names {
        luns.track_vg(n);
    }
    let results: Vec<Result<Value, (i64, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let (d, guid) = (&d, &guid);
                s.spawn(move || {
                    d.client
                        .call(
                            "LVMVolumeGroup.create",
                            json!({"name": name, "devlist": [guid], "force": false}),
                        )
                        .map_err(rpc_error)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let lost = &results[1 - won[0]];
    let (code, msg) = lost.as_ref().unwrap_err();
    assert!(*code == 606 || *code == 502, "{code} {msg}");
    let (sd, vg) = (&names[won[0]], results[won[0]].as_ref().unwrap().clone());

    let results: Vec<Result<Value, (i64, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = ["first", "second"]
            .iter()
            .map(|name| {
                let (d, vg) = (&d, &vg);
                s.spawn(move || {
                    d.client
                        .call(
                            "StorageDomain.create",
                            json!({"storagedomainID": sd, "domainType": "ISCSI", "typeArgs": vg, "name": name, "domainClass": "Data"}),
                        )
                        .map_err(rpc_error)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    let (code, msg) = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!([365, 509, 515].contains(code), "{code} {msg}");
    vdsm_check_block(sd, &luns);
}

fn rpc_error(e: cairn::client::ClientError) -> (i64, String) {
    match e {
        cairn::client::ClientError::Rpc { code, message } => (code, message),
        other => panic!("{other}"),
    }
}

/// An LV removed behind cairnd's back, and a metadata slot that names
/// another volume than its LV's tags: both are reported with VDSM's
/// codes, neither stops the rest of the domain, and nothing is changed
/// by looking.
#[test]
fn a_vanished_lv_and_a_disagreeing_slot_are_reported_not_trusted() {
    let luns = TestLuns::new(2).expect("loop devices for LUNs");
    let (d, sp, sd, _) = Daemon::block_pool(&luns);
    let cow = json!({"volFormat": "COW", "preallocate": "SPARSE", "size": (64 * MIB).to_string()});
    let (img_a, a) = d.new_image(&sp, &sd, cow.clone());
    let (img_b, b) = d.new_image(&sp, &sd, cow.clone());
    let (_, c) = d.new_image(&sp, &sd, cow.clone());
    let lvm = outside_lvm();
    let devs = devices(&luns);

    // A's LV goes; cairnd sees it within a second (the VG's seqno).
    lvm.lvremove(&devs, &sd, &[&a]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, msg) = d.call_err(
        "Volume.getInfo",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img_a, "volumeID": a}),
    );
    // Its image had no other volume: the image is gone too.
    assert!([201, 268].contains(&code), "{code} {msg}");
    let (code, msg) = d.call_err(
        "Image.prepare",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img_a, "volumeID": a}),
    );
    assert!([201, 268].contains(&code), "{code} {msg}");
    let images = d.call("StorageDomain.getImages", json!({"storagedomainID": sd}));
    assert!(
        !images.as_array().unwrap().contains(&json!(img_a)),
        "{images}"
    );

    // B's slot now holds C's record (another image's).
    let slot = |vol: &str| -> u64 {
        let lv = lvm.lv(&devs, &sd, vol).unwrap();
        lv.tags
            .iter()
            .find_map(|t| t.strip_prefix("MD_")?.parse().ok())
            .unwrap()
    };
    let metadata = format!("/dev/{sd}/metadata");
    let record = |slot: u64| 1024 * 1024 + slot * 8192;
    let mut c_record = vec![0u8; 512];
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&metadata).unwrap();
        f.read_exact_at(&mut c_record, record(slot(&c))).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&metadata)
            .unwrap();
        f.write_all_at(&c_record, record(slot(&b))).unwrap();
        f.sync_all().unwrap();
    }
    let seqno = lvm.vg(&devs, &sd).unwrap().seqno;
    let (code, msg) = d.call_err(
        "Volume.getInfo",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img_b, "volumeID": b}),
    );
    assert_eq!(code, 207, "{msg}");
    assert!(msg.contains("tagged for"), "{msg}");
    let (code, msg) = d.call_err(
        "Image.prepare",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img_b, "volumeID": b}),
    );
    assert_ne!(code, 0, "{msg}");
    // Looking changed nothing; the rest of the domain works.
    assert_eq!(lvm.vg(&devs, &sd).unwrap().seqno, seqno);
    d.call("StorageDomain.dump", json!({"sd_id": sd}));
    d.new_image(&sp, &sd, cow);
}
