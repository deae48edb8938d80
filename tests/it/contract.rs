//! The backend contract: the same scenarios, through the API only, against
//! every kind of storage domain. A scenario is a function of a [`Pool`] (a
//! cairnd with an SPM pool of two domains of one backend); `contract!`
//! instantiates each in a module per backend (`contract::file::` today,
//! `contract::block::` when block domains land), so nextest filters select
//! a backend.
//! Assertions read only what the API returns and what a VM would open (the
//! path `Image.prepare` gives), never a backend's layout: tests that check
//! the file layout on purpose live beside the file-specific features.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::common::*;

/// Kinds of storage domain the contract runs against.
#[derive(Clone, Copy, Debug)]
enum Backend {
    /// LOCALFS directories under the test's data directory.
    File,
    /// ISCSI domains on loop-device LUNs (the lvm stand-in activates).
    Block,
}

/// A cairnd that is SPM of a pool of two domains of one backend.
struct Pool {
    d: Daemon,
    sp: String,
    /// The master domain, where scenarios make their images.
    sd: String,
    /// Another data domain of the pool, for copies and moves.
    other: String,
    /// Dropped after the daemon: the LUNs of block domains.
    _luns: Option<TestLuns>,
}

impl Pool {
    fn new(backend: Backend) -> Pool {
        match backend {
            Backend::File => {
                let (d, sp, sd, other) = Daemon::two_domain_pool();
                Pool {
                    d,
                    sp,
                    sd,
                    other,
                    _luns: None,
                }
            }
            Backend::Block => {
                let luns = TestLuns::new(2).expect("loop devices for LUNs");
                let (d, sp, sd, other) = Daemon::block_pool(&luns);
                Pool {
                    d,
                    sp,
                    sd,
                    other,
                    _luns: Some(luns),
                }
            }
        }
    }

    fn ids(&self, sd: &str, img: &str, vol: &str) -> Value {
        json!({"storagepoolID": self.sp, "storagedomainID": sd, "imageID": img, "volumeID": vol})
    }

    fn info(&self, sd: &str, img: &str, vol: &str) -> Value {
        self.d.volume_info(&self.sp, sd, img, vol)
    }

    /// A new image on the master domain with one volume of `size` bytes.
    fn image(&self, format: &str, size: u64) -> (String, String) {
        let alloc = if format == "RAW" {
            "PREALLOCATED"
        } else {
            "SPARSE"
        };
        self.d.new_image(
            &self.sp,
            &self.sd,
            json!({"volFormat": format, "preallocate": alloc, "size": size.to_string()}),
        )
    }

    fn snapshot(&self, img: &str, parent: &str, size: u64) -> String {
        let vol = uuid();
        self.d.create_volume(
            &self.sp,
            &self.sd,
            img,
            &vol,
            json!({"srcImgUUID": img, "srcVolUUID": parent, "size": size.to_string()}),
        );
        vol
    }

    /// What a VM opens for the chain below `vol`.
    fn prepare(&self, sd: &str, img: &str, vol: &str) -> PathBuf {
        let p = self.d.call("Image.prepare", self.ids(sd, img, vol));
        PathBuf::from(p["path"].as_str().expect("a prepared path"))
    }

    fn teardown(&self, sd: &str, img: &str) {
        self.d.call(
            "Image.teardown",
            json!({"storagepoolID": self.sp, "storagedomainID": sd, "imageID": img}),
        );
    }

    fn volumes(&self, sd: &str, img: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .d
            .image_volumes(&self.sp, sd, img)
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    }

    fn images(&self, sd: &str) -> Vec<String> {
        let v = self
            .d
            .call("StorageDomain.getImages", json!({"storagedomainID": sd}));
        v.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    fn delete_volume(&self, img: &str, vol: &str) {
        let mut p = self.ids(&self.sd, img, vol);
        p["postZero"] = json!(false);
        p["force"] = json!(false);
        let t = self.d.call("Volume.delete", p);
        self.d.task_ok(&t);
    }

    fn delete_image(&self, sd: &str, img: &str) {
        let t = self.d.call(
            "Image.delete",
            json!({"imageID": img, "storagepoolID": self.sp, "storagedomainID": sd, "postZero": true, "force": false}),
        );
        self.d.task_ok(&t);
    }
}

const MIB: u64 = 1 << 20;

/// Volumes of both formats appear with VDSM's fields and go again.
fn create_and_delete(backend: Backend) {
    let p = Pool::new(backend);
    for (format, alloc) in [("RAW", "PREALLOCATED"), ("COW", "SPARSE")] {
        let (img, vol) = p.image(format, 4 * MIB);
        let info = p.info(&p.sd, &img, &vol);
        assert_eq!(
            (
                info["format"].as_str(),
                info["type"].as_str(),
                info["voltype"].as_str(),
                info["legality"].as_str(),
                info["status"].as_str(),
                info["capacity"].as_u64()
            ),
            (
                Some(format),
                Some(alloc),
                Some("LEAF"),
                Some("LEGAL"),
                Some("OK"),
                Some(4 * MIB)
            ),
            "{info}"
        );
        assert_eq!(p.volumes(&p.sd, &img), vec![vol.clone()]);
        p.delete_volume(&img, &vol);
        assert!(!p.images(&p.sd).contains(&img), "an emptied image goes");
    }
}

/// A snapshot shows the parent's data; the parent becomes INTERNAL and a
/// LEAF again when the snapshot goes.
fn snapshot(backend: Backend) {
    let p = Pool::new(backend);
    let (img, base) = p.image("COW", 4 * MIB);
    let path = p.prepare(&p.sd, &img, &base);
    qemu_io(&path, "qcow2", "write -P 0x11 0 1M");
    p.teardown(&p.sd, &img);
    let top = p.snapshot(&img, &base, 4 * MIB);
    assert_eq!(p.info(&p.sd, &img, &base)["voltype"], "INTERNAL");
    assert_eq!(p.info(&p.sd, &img, &top)["parent"], base.as_str());
    let path = p.prepare(&p.sd, &img, &top);
    qemu_io(&path, "qcow2", "read -P 0x11 0 1M");
    qemu_io(&path, "qcow2", "write -P 0x22 1M 1M");
    p.teardown(&p.sd, &img);
    p.delete_volume(&img, &top);
    assert_eq!(p.info(&p.sd, &img, &base)["voltype"], "LEAF");
    assert_eq!(p.volumes(&p.sd, &img), vec![base]);
}

/// A template is cloned thin into new images and cannot go while used.
fn template_clone(backend: Backend) {
    let p = Pool::new(backend);
    let (timg, tvol) = p.image("COW", 4 * MIB);
    let path = p.prepare(&p.sd, &timg, &tvol);
    qemu_io(&path, "qcow2", "write -P 0x33 0 1M");
    p.teardown(&p.sd, &timg);
    p.d.make_template(&p.sd, &timg, &tvol);
    let (clone, vol) = (uuid(), uuid());
    p.d.create_volume(
        &p.sp,
        &p.sd,
        &clone,
        &vol,
        json!({"srcImgUUID": timg, "srcVolUUID": tvol, "size": (4 * MIB).to_string()}),
    );
    assert_eq!(
        p.volumes(&p.sd, &clone),
        vec![vol.clone()],
        "the template is listed in its own image"
    );
    let path = p.prepare(&p.sd, &clone, &vol);
    qemu_io(&path, "qcow2", "read -P 0x33 0 1M");
    p.teardown(&p.sd, &clone);
    let (code, _) = p.d.call_err(
        "Image.delete",
        json!({"imageID": timg, "storagepoolID": p.sp, "storagedomainID": p.sd, "postZero": false, "force": false}),
    );
    assert_eq!(code, 223, "a template in use stays");
    p.delete_image(&p.sd, &clone);
    p.delete_image(&p.sd, &timg);
    assert!(p.images(&p.sd).is_empty());
}

/// Both formats grow; the data stays.
fn extend(backend: Backend) {
    let p = Pool::new(backend);
    for format in ["RAW", "COW"] {
        let (img, vol) = p.image(format, 4 * MIB);
        let fmt = if format == "RAW" { "raw" } else { "qcow2" };
        let path = p.prepare(&p.sd, &img, &vol);
        qemu_io(&path, fmt, "write -P 0x44 3M 1M");
        p.teardown(&p.sd, &img);
        let mut params = p.ids(&p.sd, &img, &vol);
        params["newSize"] = json!((8 * MIB).to_string());
        let t = p.d.call("Volume.extendSize", params);
        p.d.task_ok(&t);
        assert_eq!(
            p.info(&p.sd, &img, &vol)["capacity"].as_u64(),
            Some(8 * MIB)
        );
        let path = p.prepare(&p.sd, &img, &vol);
        qemu_io(&path, fmt, "read -P 0x44 3M 1M");
        qemu_io(&path, fmt, "read -P 0 4M 4M");
        p.teardown(&p.sd, &img);
    }
}

/// A cold merge of the top into its base keeps what the top wrote.
fn merge(backend: Backend) {
    let p = Pool::new(backend);
    let (img, base) = p.image("COW", 4 * MIB);
    let top = p.snapshot(&img, &base, 4 * MIB);
    let path = p.prepare(&p.sd, &img, &top);
    qemu_io(&path, "qcow2", "write -P 0x55 2M 1M");
    p.teardown(&p.sd, &img);
    let subchain = json!({"sd_id": p.sd, "img_id": img, "top_id": top, "base_id": base});
    let t = p.d.call(
        "StoragePool.prepareMerge",
        json!({"storagepoolID": p.sp, "subchainInfo": subchain}),
    );
    p.d.task_ok(&t);
    p.d.job_ok("SDM.merge", json!({"subchain_info": subchain}));
    let t = p.d.call(
        "StoragePool.finalizeMerge",
        json!({"storagepoolID": p.sp, "subchainInfo": subchain}),
    );
    p.d.task_ok(&t);
    assert_eq!(p.volumes(&p.sd, &img), vec![base.clone()]);
    let info = p.info(&p.sd, &img, &base);
    assert_eq!(
        (info["voltype"].as_str(), info["legality"].as_str()),
        (Some("LEAF"), Some("LEGAL"))
    );
    let path = p.prepare(&p.sd, &img, &base);
    qemu_io(&path, "qcow2", "read -P 0x55 2M 1M");
    p.teardown(&p.sd, &img);
}

/// Data crosses domains: a volume's data by `SDM.copy_data` onto a volume
/// of the other domain, and whole images by `Image.move` (COPY, MOVE).
fn copy_between_domains(backend: Backend) {
    let p = Pool::new(backend);
    let (img, base) = p.image("COW", 4 * MIB);
    let path = p.prepare(&p.sd, &img, &base);
    qemu_io(&path, "qcow2", "write -P 0x66 0 2M");
    p.teardown(&p.sd, &img);
    let top = p.snapshot(&img, &base, 4 * MIB);

    let (dimg, dvol) = (uuid(), uuid());
    p.d.create_volume(
        &p.sp,
        &p.other,
        &dimg,
        &dvol,
        json!({"volFormat": "RAW", "preallocate": "PREALLOCATED", "size": (4 * MIB).to_string()}),
    );
    let job = uuid();
    p.d.call(
        "SDM.copy_data",
        json!({"job_id": job, "source": {"endpoint_type": "div", "sd_id": p.sd, "img_id": img, "vol_id": top},
               "destination": {"endpoint_type": "div", "sd_id": p.other, "img_id": dimg, "vol_id": dvol}}),
    );
    assert_eq!(p.d.wait_job(&job)["status"], "done");
    let (src, dst) = (
        p.prepare(&p.sd, &img, &top),
        p.prepare(&p.other, &dimg, &dvol),
    );
    same_contents(&src, "qcow2", &dst, "raw");
    p.teardown(&p.other, &dimg);

    let mv = |op: &str| {
        let t = p.d.call(
            "Image.move",
            json!({"imageID": img, "storagepoolID": p.sp, "storagedomainID": p.sd, "dstSdUUID": p.other,
                   "operation": op, "postZero": false, "force": false}),
        );
        p.d.task_ok(&t);
    };
    mv("COPY");
    let copied = p.prepare(&p.other, &img, &top);
    same_contents(&src, "qcow2", &copied, "qcow2");
    p.teardown(&p.other, &img);
    p.teardown(&p.sd, &img);
    assert_eq!(p.volumes(&p.other, &img), p.volumes(&p.sd, &img));
    p.delete_image(&p.other, &img);
    mv("MOVE");
    assert!(!p.images(&p.sd).contains(&img), "a moved image leaves");
    assert_eq!(p.info(&p.other, &img, &top)["parent"], base.as_str());
}

/// A crash in the middle of a create, a delete and an image delete leaves
/// each whole or gone once cairnd is back (the full failpoint walk is
/// `crash.rs`).
fn crash_recovery(backend: Backend) {
    let p = Pool::new(backend);
    let (img, base) = p.image("COW", 4 * MIB);
    let Pool {
        d,
        sp,
        sd,
        other,
        _luns,
    } = p;
    let d = d.restart_armed("volume.create.after_lease=crash", false);
    let vol = uuid();
    let _ = d.client.call(
        "Volume.create",
        volume_params(
            &sp,
            &sd,
            &img,
            &vol,
            json!({"srcImgUUID": img, "srcVolUUID": base, "size": (4 * MIB).to_string()}),
        ),
    );
    let d = d.restart_after_crash(false);
    finish_all_tasks(&d);
    let p = Pool {
        d,
        sp,
        sd,
        other,
        _luns,
    };
    assert_eq!(p.volumes(&p.sd, &img), vec![base.clone()], "rolled back");
    assert_eq!(p.info(&p.sd, &img, &base)["voltype"], "LEAF");

    let Pool {
        d,
        sp,
        sd,
        other,
        _luns,
    } = p;
    let d = d.restart_armed("image.delete.after_rename=crash", false);
    let _ = d.client.call(
        "Image.delete",
        json!({"imageID": img, "storagepoolID": sp, "storagedomainID": sd, "postZero": false, "force": false}),
    );
    let d = d.restart_after_crash(false);
    finish_all_tasks(&d);
    let p = Pool {
        d,
        sp,
        sd,
        other,
        _luns,
    };
    assert!(!p.images(&p.sd).contains(&img), "finished");
}

/// The failpoint walk: a crash at each step of a snapshot's create and of
/// a volume's delete, then a restart, leaves the image as it was before or
/// as it is after the operation, never in between.
fn crash_walk(backend: Backend) {
    let mut p = Pool::new(backend);
    let (img, base) = p.image("COW", 4 * MIB);
    let mut create = vec![
        "volume.create.planned",
        "volume.create.after_dir",
        "volume.create.after_data",
        "volume.create.after_lease",
        "volume.create.after_parent",
        "volume.create.after_metadata",
        "volume.create.done",
    ];
    if matches!(backend, Backend::Block) {
        create.extend(["block.volume.after_lvcreate", "block.volume.after_record"]);
    }
    for fp in create {
        let vol = uuid();
        p = p.crash_at(fp, |d, sp, sd| {
            d.client.call(
                "Volume.create",
                volume_params(
                    sp,
                    sd,
                    &img,
                    &vol,
                    json!({"srcImgUUID": img, "srcVolUUID": base, "size": (4 * MIB).to_string()}),
                ),
            )
        });
        if p.volumes(&p.sd, &img).contains(&vol) {
            assert_eq!(p.info(&p.sd, &img, &base)["voltype"], "INTERNAL", "{fp}");
            assert_eq!(p.info(&p.sd, &img, &vol)["voltype"], "LEAF", "{fp}");
            p.delete_volume(&img, &vol);
        }
        assert_eq!(p.volumes(&p.sd, &img), vec![base.clone()], "{fp}");
        assert_eq!(p.info(&p.sd, &img, &base)["voltype"], "LEAF", "{fp}");
    }
    for fp in [
        "volume.delete.planned",
        "volume.delete.after_metadata",
        "volume.delete.after_data",
        "volume.delete.after_parent",
        "volume.delete.done",
    ] {
        let top = p.snapshot(&img, &base, 4 * MIB);
        p = p.crash_at(fp, |d, sp, sd| {
            let mut params = json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": top});
            params["postZero"] = json!(false);
            params["force"] = json!(false);
            d.client.call("Volume.delete", params)
        });
        if p.volumes(&p.sd, &img).contains(&top) {
            p.delete_volume(&img, &top);
        }
        assert_eq!(p.volumes(&p.sd, &img), vec![base.clone()], "{fp}");
        assert_eq!(p.info(&p.sd, &img, &base)["voltype"], "LEAF", "{fp}");
    }
    if matches!(backend, Backend::Block) {
        // A thin volume's extend, cut before or after its lvextend: the
        // LV is as it was or grown, and asking again finishes it.
        let (timg, tvol) = p.image("COW", 4 << 30);
        for (fp, size) in [
            ("thin.extend.planned", 1536u64 << 20),
            ("thin.extend.after_lvextend", 2048 << 20),
        ] {
            let mut ask = p.ids(&p.sd, &timg, &tvol);
            ask["newSize"] = json!(size.to_string());
            let again = ask.clone();
            p = p.crash_at(fp, |d, _, _| d.client.call("Volume.requestExtend", ask));
            let r = p.d.call("Volume.requestExtend", again);
            assert!(r["size"].as_u64().unwrap() >= size, "{fp}: {r}");
        }
        let path = p.prepare(&p.sd, &timg, &tvol);
        qemu_io(&path, "qcow2", "write -P 7 3G 1M");
        qemu_io(&path, "qcow2", "read -P 7 3G 1M");
        p.teardown(&p.sd, &timg);
    }
    // The snapshot chain still reads: nothing was left half-made.
    let path = p.prepare(&p.sd, &img, &base);
    qemu_io(&path, "qcow2", "read -P 0 0 1M");
    p.teardown(&p.sd, &img);
}

impl Pool {
    /// Restarts cairnd armed to crash at `fp`, runs `op`, restarts it after
    /// the crash and waits for recovery.
    fn crash_at<T>(self, fp: &str, op: impl FnOnce(&Daemon, &str, &str) -> T) -> Pool {
        let Pool {
            d,
            sp,
            sd,
            other,
            _luns,
        } = self;
        let d = d.restart_armed(&format!("{fp}=crash"), false);
        let _ = op(&d, &sp, &sd);
        let d = d.restart_after_crash(false);
        finish_all_tasks(&d);
        Pool {
            d,
            sp,
            sd,
            other,
            _luns,
        }
    }
}

/// Waits for every task cairnd knows (the recovered ones after a restart).
fn finish_all_tasks(d: &Daemon) {
    let all = d.call("Host.getAllTasksStatuses", json!({}));
    for task in all.as_object().unwrap().keys() {
        d.wait_task(&json!(task));
    }
}

macro_rules! contract {
    ($($(#[$attr:meta])* $backend:ident: $variant:expr, [$($scenario:ident),*];)*) => {
        $(
            mod $backend {
                use super::*;
                contract!(@tests ($(#[$attr])*) $variant; $($scenario),*);
            }
        )*
    };
    (@tests $attrs:tt $variant:expr; $($scenario:ident),*) => {
        $(contract!(@one $attrs $variant; $scenario);)*
    };
    (@one ($(#[$attr:meta])*) $variant:expr; $scenario:ident) => {
        #[test]
        $(#[$attr])*
        fn $scenario() {
            super::$scenario($variant)
        }
    };
}

contract! {
    file: Backend::File, [create_and_delete, snapshot, template_clone, extend, merge,
        copy_between_domains, crash_recovery, crash_walk];
    block: Backend::Block, [create_and_delete, snapshot, template_clone, extend, merge,
        copy_between_domains, crash_recovery, crash_walk];
    // With the real lvm and device-mapper: the scenarios that activate,
    // refresh and extend LVs the most (in a TCG VM each takes about two
    // minutes; the others run on the fast tier only).
    #[ignore = "needs device-mapper: run by the VM tier (scripts/vm-tier)"]
    block_vm: Backend::Block, [snapshot, extend];
}

/// Scenarios only a real device-mapper can run (the stand-in maps one
/// segment): a volume whose LV lies in two pieces of the VG.
mod segments_vm {
    use super::*;

    #[test]
    #[ignore = "needs device-mapper: run by the VM tier (scripts/vm-tier)"]
    fn a_volume_over_two_segments_reads_and_writes_across_them() {
        let p = Pool::new(Backend::Block);
        let (img_a, a) = p.image("RAW", 128 * MIB);
        // B takes all free space but 256 MiB: with A gone, the VG's free
        // space is A's extent and the two after B, apart.
        let free = |p: &Pool| {
            let stats =
                p.d.call("StorageDomain.getStats", json!({"storagedomainID": p.sd}));
            stats["diskfree"]
                .as_str()
                .map(|s| s.parse::<u64>().unwrap())
                .or_else(|| stats["diskfree"].as_u64())
                .unwrap()
        };
        let b_size = free(&p) - 256 * MIB;
        p.d.new_image(
            &p.sp,
            &p.sd,
            json!({"volFormat": "COW", "preallocate": "PREALLOCATED", "size": b_size.to_string()}),
        );
        p.delete_volume(&img_a, &a);
        assert_eq!(free(&p), 384 * MIB);
        let (img, c) = p.image("RAW", 384 * MIB);
        let out = std::process::Command::new("lvm")
            .args(["lvs", "--noheadings", "-o", "seg_count"])
            .arg(format!("{}/{c}", p.sd))
            .output()
            .unwrap();
        let segments: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(
            segments >= 2,
            "the LV should have several segments: {segments}"
        );
        let path = p.prepare(&p.sd, &img, &c);
        qemu_io(&path, "raw", "write -P 0x77 0 1M");
        qemu_io(&path, "raw", "write -P 0x78 300M 1M");
        qemu_io(&path, "raw", "read -P 0x77 0 1M");
        qemu_io(&path, "raw", "read -P 0x78 300M 1M");
        qemu_io(&path, "raw", "read -P 0 200M 1M");
        p.teardown(&p.sd, &img);
    }
}
