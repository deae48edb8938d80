//! Real file systems on loop devices: POSIXFS mounts and full disks.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// A daemon without the embedded pool, with `path` connected as LOCALFS and
/// a v5 domain on it as master of a new pool, SPM started.
fn pool_on(d: &Daemon, kind: &str, conn: serde_json::Value, remote: &str) -> (String, String) {
    let st = d.call(
        "StoragePool.connectStorageServer",
        json!({"storagepoolID": BLANK, "domainType": kind, "connectionParams": [conn]}),
    );
    assert_eq!(st[0]["status"], 0, "connect failed: {st}\n{}", d.log());
    let (sp, sd) = (uuid(), uuid());
    d.call("StorageDomain.create", json!({"storagedomainID": sd, "domainType": kind, "typeArgs": remote, "name": "loop", "domainClass": "Data", "version": 5, "blockSize": 0}));
    d.call("StoragePool.create", json!({"storagepoolID": sp, "name": "p", "masterSdUUID": sd, "masterVersion": 1, "domainList": [sd]}));
    d.call("StoragePool.connect", json!({"storagepoolID": sp, "hostID": 1, "scsiKey": "", "masterSdUUID": sd, "masterVersion": 1}));
    d.spm_start(&sp);
    (sp, sd)
}

/// Stops being SPM, disconnects the pool and its POSIXFS storage (unmounts).
fn leave_and_unmount(d: &Daemon, sp: &str, conn: serde_json::Value) {
    d.leave_pool(sp);
    let st = d.call(
        "StoragePool.disconnectStorageServer",
        json!({"storagepoolID": BLANK, "domainType": "POSIXFS", "connectionParams": [conn]}),
    );
    assert_eq!(st[0]["status"], 0);
}

#[test]
fn posixfs_mounts_a_real_xfs() {
    let Some(fs) = LoopFs::new(300, "xfs", false) else {
        return;
    };
    let d = Daemon::start_bare();
    let conn =
        json!({"id": "loop", "connection": fs.device, "vfs_type": "xfs", "mnt_options": "noatime"});
    let (sp, sd) = pool_on(&d, "POSIXFS", conn.clone(), &fs.device);
    let mnt = d.data().join("mnt").join(fs.device.replace('/', "_"));
    assert!(is_mounted(&mnt), "{} is not mounted", mnt.display());
    // Connecting again is a no-op.
    let st = d.call("StoragePool.connectStorageServer", json!({"storagepoolID": BLANK, "domainType": "POSIXFS", "connectionParams": [conn.clone()]}));
    assert_eq!(st[0]["status"], 0);

    let info = d.call("StorageDomain.getInfo", json!({"storagedomainID": sd}));
    assert_eq!(info["type"], "SHAREDFS");
    let md = std::fs::read_to_string(mnt.join(&sd).join("dom_md/metadata")).unwrap();
    assert!(md.contains("TYPE=POSIXFS\n"), "{md}");
    let stats = d.call("StorageDomain.getStats", json!({"storagedomainID": sd}));
    assert!(
        stats["disktotal"].as_u64().unwrap() < 300 << 20,
        "stats come from the loop fs: {stats}"
    );

    let (img, vol) = d.new_image(&sp, &sd, json!({"size": (1u64 << 40).to_string()}));
    let path = mnt.join(&sd).join("images").join(&img).join(&vol);
    assert_eq!(
        qemu_img_json(&[
            "check",
            "--output",
            "json",
            "-f",
            "qcow2",
            path.to_str().unwrap()
        ])["check-errors"],
        0
    );

    leave_and_unmount(&d, &sp, conn);
    assert!(!is_mounted(&mnt));
    assert!(!mnt.exists());
}

#[test]
fn mount_failure_is_reported_per_connection() {
    let d = Daemon::start_bare();
    let st = d.call(
        "StoragePool.connectStorageServer",
        json!({"storagepoolID": BLANK, "domainType": "POSIXFS", "connectionParams": [
            {"id": "a", "connection": "/dev/does-not-exist", "vfs_type": "ext4"},
            {"id": "b", "spec": "/dev/also-missing", "vfstype": "xfs", "options": "ro"}
        ]}),
    );
    assert_eq!(
        st,
        json!([{"id": "a", "status": 477}, {"id": "b", "status": 477}])
    );
    assert_eq!(
        std::fs::read_dir(d.data().join("mnt")).unwrap().count(),
        0,
        "no mount point left behind"
    );
}

/// Fills a file system until it refuses to take more.
fn fill(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let big = vec![0xa5u8; 1 << 20];
    while f.write_all(&big).is_ok() {}
    let small = vec![0xa5u8; 4096];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    p
}

#[test]
fn full_disk_fails_the_task_cleanly() {
    let Some(fs) = LoopFs::new(64, "ext4", true) else {
        return;
    };
    let d = Daemon::start_bare();
    let remote = fs.mount.to_str().unwrap().to_string();
    let (sp, sd) = pool_on(
        &d,
        "LOCALFS",
        json!({"id": 1, "connection": remote}),
        &remote,
    );
    let images = fs.mount.join(&sd).join("images");
    let before = tree(&fs.mount);

    // Preallocating more than the file system holds.
    let (img, vol) = (uuid(), uuid());
    let t = d.call(
        "Volume.create",
        volume_params(&sp, &sd, &img, &vol, json!({"volFormat": "RAW", "preallocate": "PREALLOCATED", "size": (256u64 << 20).to_string()})),
    );
    let st = d.wait_task(&t);
    assert_eq!(st["taskResult"], "cleanSuccess", "{st}");
    assert_eq!(st["code"], 397, "{st}");
    assert!(st["message"].as_str().unwrap().contains("no space"), "{st}");
    d.call("Task.clear", json!({"taskID": t}));
    assert_eq!(tree(&fs.mount), before, "rollback left files behind");

    // A completely full disk: the task cannot even be recorded, or its
    // first write fails; either way a clear error and nothing left.
    let filler = fill(&fs.mount);
    match d.client.call(
        "Volume.create",
        volume_params(&sp, &sd, &uuid(), &uuid(), json!({})),
    ) {
        Err(cairn::client::ClientError::Rpc { code, message }) => {
            assert_eq!(code, 397, "{message}")
        }
        Ok(t) => {
            let st = d.wait_task(&t);
            assert_eq!(
                (st["code"].as_i64(), st["taskResult"].as_str()),
                (Some(397), Some("cleanSuccess")),
                "{st}"
            );
            d.call("Task.clear", json!({"taskID": t}));
        }
        Err(e) => panic!("{e}"),
    }
    assert_eq!(
        std::fs::read_dir(&images).unwrap().count(),
        0,
        "no image dir left behind"
    );

    // The daemon stays up and works again once space is freed.
    std::fs::remove_file(filler).unwrap();
    d.create_volume(
        &sp,
        &sd,
        &img,
        &vol,
        json!({"size": (16u64 << 20).to_string()}),
    );
    assert_eq!(d.image_volumes(&sp, &sd, &img), json!([vol]));
}

/// Remounts; retried because ext4 refuses to go read-only while a file is
/// open for writing, so the switch lands between two steps of a task.
fn remount(dir: &Path, mode: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(dir)
            .output()
            .unwrap();
        if out.status.success() {
            return;
        }
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(
            std::time::Instant::now() < deadline,
            "remount {mode}: {why}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A pool whose master lives in the data dir, with a second domain on a
/// loop-mounted ext4 that tests can make read-only.
fn pool_with_loop_domain(d: &Daemon, fs: &LoopFs) -> (String, String, String) {
    let master_dir = d.local_storage("master-storage");
    d.connect_local(&fs.mount);
    let (sp, master, sd) = (uuid(), uuid(), uuid());
    for (id, path) in [(&master, &master_dir), (&sd, &fs.mount)] {
        d.call(
            "StorageDomain.create",
            json!({"storagedomainID": id, "domainType": "LOCALFS", "typeArgs": path.to_str().unwrap(), "name": "d", "domainClass": "Data"}),
        );
    }
    d.call("StoragePool.create", json!({"storagepoolID": sp, "name": "p", "masterSdUUID": master, "masterVersion": 1, "domainList": [master, sd]}));
    d.call("StoragePool.connect", json!({"storagepoolID": sp, "hostID": 1, "scsiKey": "", "masterSdUUID": master, "masterVersion": 1}));
    d.spm_start(&sp);
    (sp, master, sd)
}

#[test]
fn read_only_storage_fails_cleanly_and_other_domains_keep_working() {
    let Some(fs) = LoopFs::new(64, "ext4", true) else {
        return;
    };
    let d = Daemon::start_bare();
    let (sp, master, sd) = pool_with_loop_domain(&d, &fs);
    let (img, base) = d.new_image(&sp, &sd, json!({"size": "1048576"}));
    let before = tree(&fs.mount);

    remount(&fs.mount, "ro");
    for params in [
        volume_params(&sp, &sd, &uuid(), &uuid(), json!({})),
        volume_params(
            &sp,
            &sd,
            &img,
            &uuid(),
            json!({"srcImgUUID": img, "srcVolUUID": base}),
        ),
    ] {
        let t = d.call("Volume.create", params);
        let st = d.wait_task(&t);
        assert_ne!(st["taskResult"], "success", "{st}");
        assert!(
            st["message"]
                .as_str()
                .unwrap()
                .contains("Read-only file system"),
            "{st}"
        );
        d.call("Task.clear", json!({"taskID": t}));
    }
    let t = d.call("Volume.delete", json!({"volumeID": base, "storagepoolID": sp, "storagedomainID": sd, "imageID": img, "postZero": false, "force": false}));
    let st = d.wait_task(&t);
    assert_eq!(st["taskResult"], "cleanSuccess", "{st}");
    d.call("Task.clear", json!({"taskID": t}));
    assert_eq!(
        tree(&fs.mount),
        before,
        "nothing changed on the read-only domain"
    );

    // The daemon is up and the master domain works.
    d.create_volume(&sp, &master, &uuid(), &uuid(), json!({"size": "1048576"}));
    remount(&fs.mount, "rw");
    d.create_volume(&sp, &sd, &uuid(), &uuid(), json!({"size": "1048576"}));
    vdsm_check(&fs.mount.join(&sd));
}

#[test]
fn storage_going_read_only_mid_operation_is_repaired() {
    let Some(fs) = LoopFs::new(64, "ext4", true) else {
        return;
    };
    let d = Daemon::start_bare();
    let (sp, _master, sd) = pool_with_loop_domain(&d, &fs);
    d.new_image(&sp, &sd, json!({"size": "1048576"}));
    // Remount while snapshots are being made: each task either succeeds or
    // fails with a clear error; whatever a failed rollback could not remove
    // on read-only storage is collected once it is writable again.
    for round in 0..6 {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let p = volume_params(&sp, &sd, &uuid(), &uuid(), json!({"size": "1048576"}));
            tasks.push(d.call("Volume.create", p));
        }
        std::thread::sleep(Duration::from_micros(300 * round));
        remount(&fs.mount, "ro");
        for t in &tasks {
            let st = d.wait_task(t);
            if st["taskResult"] != "success" {
                assert!(
                    st["message"].as_str().unwrap().contains("Read-only"),
                    "{st}"
                );
            }
            d.call("Task.clear", json!({"taskID": t}));
        }
        remount(&fs.mount, "rw");
    }
    // A restart takes the SPM role again: recovery and garbage collection.
    let d = Daemon::start_in(d.stop(false), Opts::default());
    let dump = d.call("StorageDomain.dump", json!({"sd_id": sd}));
    assert!(
        dump["volumes"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v["status"] == "OK"),
        "{dump}"
    );
    vdsm_check(&fs.mount.join(&sd));
    for entry in std::fs::read_dir(fs.mount.join(&sd).join("images"))
        .unwrap()
        .flatten()
    {
        let files: Vec<String> = std::fs::read_dir(entry.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        for f in &files {
            let vol = f.split('.').next().unwrap();
            assert!(
                files.contains(&format!("{vol}.meta")),
                "{f} has no metadata after garbage collection"
            );
        }
    }
}

/// The image operations of issue 4 on a POSIXFS domain (a real xfs, with
/// reflink): copy, merge, sparsify, bitmaps, NBD export, HTTP transfer.
#[test]
fn image_operations_on_a_posixfs_xfs_domain() {
    let Some(fs) = LoopFs::new(600, "xfs", false) else {
        return;
    };
    let d = Daemon::start_bare();
    let conn = json!({"id": "loop", "connection": fs.device, "vfs_type": "xfs"});
    let (sp, sd) = pool_on(&d, "POSIXFS", conn.clone(), &fs.device);
    let images = d
        .data()
        .join("mnt")
        .join(fs.device.replace('/', "_"))
        .join(&sd)
        .join("images");
    let size = (64u64 << 20).to_string();
    let (img, base, top) = d.raw_base_and_snapshot(&sp, &sd, &size);
    let (bpath, tpath) = (images.join(&img).join(&base), images.join(&img).join(&top));
    qemu_io(&bpath, "raw", "write -P 0x11 0 8M");
    qemu_io(&bpath, "raw", "write -P 0 16M 8M");
    qemu_io(&tpath, "qcow2", "write -P 0x22 4M 4M");
    let vol_info = |img: &str, vol: &str| json!({"sd_id": sd, "img_id": img, "vol_id": vol});

    // copy_data: the chain collapsed into a RAW volume; a RAW volume
    // cloned by reflink.
    for (src, fmt) in [(&top, "qcow2"), (&base, "raw")] {
        let (dimg, dvol) = d.new_image(&sp, &sd, json!({"volFormat": "RAW", "size": size}));
        d.job_ok(
            "SDM.copy_data",
            json!({"source": vol_info(&img, src), "destination": vol_info(&dimg, &dvol)}),
        );
        same_contents(
            &images.join(&img).join(src),
            fmt,
            &images.join(&dimg).join(&dvol),
            "raw",
        );
    }

    // NBD: the chain, read-only, is the same disk.
    let server = uuid();
    let url = d.call(
        "NBD.start_server",
        json!({"server_id": server, "config": {"sd_id": sd, "img_id": img, "vol_id": top, "readonly": true}}),
    );
    same_contents(Path::new(url.as_str().unwrap()), "raw", &tpath, "qcow2");
    d.call("NBD.stop_server", json!({"server_id": server}));

    // Cold merge, then sparsify the merged base: the disk reads the same.
    let flat = d.data().join("flat.raw");
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-U", "-f", "qcow2", "-O", "raw"])
        .arg(&tpath)
        .arg(&flat)
        .status()
        .unwrap();
    assert!(st.success());
    let sc = json!({"sd_id": sd, "img_id": img, "top_id": top, "base_id": base});
    d.task_ok(&d.call(
        "StoragePool.prepareMerge",
        json!({"storagepoolID": sp, "subchainInfo": sc}),
    ));
    d.job_ok("SDM.merge", json!({"subchain_info": sc}));
    d.task_ok(&d.call(
        "StoragePool.finalizeMerge",
        json!({"storagepoolID": sp, "subchainInfo": sc}),
    ));
    d.job_ok(
        "SDM.sparsify_volume",
        json!({"vol_info": vol_info(&img, &base)}),
    );
    same_contents(&bpath, "raw", &flat, "raw");
    let used = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&bpath).unwrap()) * 512;
    assert!(used <= 13 << 20, "zeros freed: {used} bytes used");

    // Bitmaps and amend on a qcow2 volume.
    let (qimg, qvol) = d.new_image(&sp, &sd, json!({"size": size}));
    d.job_ok(
        "SDM.add_bitmap",
        json!({"vol_info": vol_info(&qimg, &qvol), "bitmap": "b"}),
    );
    d.job_ok(
        "SDM.clear_bitmaps",
        json!({"vol_info": vol_info(&qimg, &qvol)}),
    );
    d.job_ok(
        "SDM.amend_volume",
        json!({"vol_info": vol_info(&qimg, &qvol), "qcow2_attr": {"compat": "0.10"}}),
    );

    // Upload and download through a ticket.
    let local = d.data().join("local.raw");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&local).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[0x5a; 1 << 20], 9 << 20).unwrap();
    }
    let client = cairn::client::Client::new(cairn::client::Target::Unix(d.socket.clone()));
    let ticket = uuid();
    d.call(
        "Host.add_image_ticket",
        json!({"ticket": {"uuid": ticket, "size": 64u64 << 20, "url": format!("file://{}", bpath.display()), "timeout": 60, "ops": ["read", "write"]}}),
    );
    let f = std::fs::File::open(&local).unwrap();
    cairn::transfer::upload(&client, &ticket, &f, |_, _| {}).unwrap();
    same_contents(&bpath, "raw", &local, "raw");
    let back = d.data().join("back.raw");
    let out = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&back)
        .unwrap();
    cairn::transfer::download(&client, &ticket, &out, |_, _| {}).unwrap();
    same_contents(&back, "raw", &local, "raw");
    d.call("Host.remove_image_ticket", json!({"uuid": ticket}));
    vdsm_check(images.parent().unwrap());

    leave_and_unmount(&d, &sp, conn);
}

/// The review's trap: a full master domain (holding the data dir too) left
/// a restarted host without the SPM role, unable to take it or to delete
/// anything. The space reserve keeps recovery going.
#[test]
fn a_full_domain_can_still_be_recovered() {
    let Some(fs) = LoopFs::new(128, "ext4", true) else {
        return;
    };
    let d = Daemon::start_in(tempfile::tempdir_in(&fs.mount).unwrap(), Opts::default());
    let (sp, sd) = d.embedded();
    let (img, vol) = d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "RAW", "preallocate": "PREALLOCATED", "size": (32u64 << 20).to_string()}),
    );
    let filler = fill(&fs.mount);
    let (code, _) = d.call_err(
        "Volume.create",
        volume_params(&sp, &sd, &uuid(), &uuid(), json!({})),
    );
    assert_eq!(code, 397, "new volumes stop before the reserve");

    // Restarted on the full disk, it is SPM again.
    let d = Daemon::start_in(d.stop(false), Opts::default());
    let spm = |d: &Daemon| {
        d.call("StoragePool.getSpmStatus", json!({"storagepoolID": sp}))["spmStatus"].clone()
    };
    assert_eq!(spm(&d), "SPM", "{}", d.log());
    // It can hand the role over and take it again.
    d.call("StoragePool.spmStop", json!({"storagepoolID": sp}));
    d.spm_start(&sp);
    assert_eq!(spm(&d), "SPM");
    // And delete what fills the domain.
    let t = d.call(
        "Volume.delete",
        json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img, "postZero": false, "force": false}),
    );
    d.task_ok(&t);
    let free = d.call("StorageDomain.getInfo", json!({"storagedomainID": sd}));
    assert!(
        d.log().contains("released the space reserve"),
        "{}",
        d.log()
    );
    let stats = d.call("StorageDomain.getStats", json!({"storagedomainID": sd}));
    assert!(
        stats["diskfree"].as_u64().unwrap() >= 24 << 20,
        "{stats} {free}"
    );
    std::fs::remove_file(filler).unwrap();
}
