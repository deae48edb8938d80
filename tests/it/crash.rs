//! The failpoint walk: for every step of every mutating verb, crash cairnd
//! there (exit without cleanup) or fail there, restart, and check that the
//! task reports a final state, the volume is whole or gone, and nothing is
//! left over.

use std::path::Path;

use serde_json::{json, Value};

use crate::common::*;

#[derive(Clone, Copy, Debug)]
enum Op {
    CreateImage,
    CreateSnapshot,
    DeleteLeaf,
    DeleteImage,
    UpdateVolume,
    Extend,
    CloneTemplate,
    CopyData,
    Sparsify,
    Amend,
    AddBitmap,
    RemoveBitmap,
    ClearBitmaps,
    PrepareMerge,
    Merge,
    FinalizeMerge,
    FinalizeMergeInternal,
}

impl Op {
    const ALL: [Op; 17] = [
        Op::CreateImage,
        Op::CreateSnapshot,
        Op::DeleteLeaf,
        Op::DeleteImage,
        Op::UpdateVolume,
        Op::Extend,
        Op::CloneTemplate,
        Op::CopyData,
        Op::Sparsify,
        Op::Amend,
        Op::AddBitmap,
        Op::RemoveBitmap,
        Op::ClearBitmaps,
        Op::PrepareMerge,
        Op::Merge,
        Op::FinalizeMerge,
        Op::FinalizeMergeInternal,
    ];

    /// Host jobs (SDM verbs) rather than SPM tasks.
    fn is_job(self) -> bool {
        matches!(
            self,
            Op::UpdateVolume
                | Op::CopyData
                | Op::Sparsify
                | Op::Amend
                | Op::AddBitmap
                | Op::RemoveBitmap
                | Op::ClearBitmaps
                | Op::Merge
        )
    }

    fn is_merge(self) -> bool {
        matches!(
            self,
            Op::PrepareMerge | Op::Merge | Op::FinalizeMerge | Op::FinalizeMergeInternal
        )
    }
}

/// What a case starts from: the embedded pool, an image with a base volume
/// and a snapshot on top.
struct Setup {
    sp: String,
    sd: String,
    img: String,
    base: String,
    top: String,
    /// The volume or image the operation creates or deletes.
    target: String,
    /// The image of `target` when it is not `img` (a copy's destination).
    target_img: String,
    /// The top's child (an internal merge).
    child: String,
    /// The top's generation once set up.
    generation: u64,
}

fn setup(d: &Daemon, op: Op) -> Setup {
    let (sp, sd) = d.embedded();
    let (img, base, top) = (uuid(), uuid(), uuid());
    d.create_volume(
        &sp,
        &sd,
        &img,
        &base,
        json!({"volFormat": "RAW", "size": "1048576"}),
    );
    // A merged top is larger than its base, so preparing grows the base.
    let top_size = if op.is_merge() { "2097152" } else { "1048576" };
    d.create_volume(
        &sp,
        &sd,
        &img,
        &top,
        json!({"srcImgUUID": img, "srcVolUUID": base, "size": top_size}),
    );
    if let Op::CloneTemplate = op {
        // A template of its own, in another image.
        let (timg, tvol) = d.new_image(&sp, &sd, json!({"size": "1048576"}));
        d.make_template(&sd, &timg, &tvol);
        return Setup {
            sp,
            sd,
            img: timg,
            base: tvol.clone(),
            top: tvol,
            target: uuid(),
            target_img: String::new(),
            child: String::new(),
            generation: 0,
        };
    }
    let mut target_img = String::new();
    let mut child = String::new();
    let vol_info = json!({"sd_id": sd, "img_id": img, "vol_id": top});
    let subchain = json!({"sd_id": sd, "img_id": img, "top_id": top, "base_id": base});
    let top_path = d.domain_dir(&sd).join("images").join(&img).join(&top);
    if let Op::Sparsify = op {
        qemu_io(&top_path, "qcow2", "write -P 0 0 512k");
        qemu_io(&top_path, "qcow2", "write -P 0x5a 512k 64k");
    }
    if op.is_merge() {
        if let Op::FinalizeMergeInternal = op {
            child = uuid();
            d.create_volume(
                &sp,
                &sd,
                &img,
                &child,
                json!({"srcImgUUID": img, "srcVolUUID": top, "size": "2097152"}),
            );
        }
        qemu_io(&top_path, "qcow2", "write -P 0x5a 1M 64k");
    }
    if let Op::Merge | Op::FinalizeMerge | Op::FinalizeMergeInternal = op {
        let t = d.call(
            "StoragePool.prepareMerge",
            json!({"storagepoolID": sp, "subchainInfo": subchain}),
        );
        d.task_ok(&t);
    }
    if let Op::FinalizeMerge | Op::FinalizeMergeInternal = op {
        d.job_ok("SDM.merge", json!({"subchain_info": subchain}));
    }
    if let Op::RemoveBitmap | Op::ClearBitmaps = op {
        d.job_ok(
            "SDM.add_bitmap",
            json!({"vol_info": vol_info, "bitmap": "b1"}),
        );
    }
    let generation = d.volume_info(&sp, &sd, &img, &top)["generation"]
        .as_u64()
        .unwrap();
    let target = match op {
        Op::CreateImage | Op::CreateSnapshot | Op::CloneTemplate => uuid(),
        Op::DeleteLeaf
        | Op::UpdateVolume
        | Op::Extend
        | Op::Sparsify
        | Op::Amend
        | Op::AddBitmap
        | Op::RemoveBitmap
        | Op::ClearBitmaps => top.clone(),
        Op::PrepareMerge | Op::Merge | Op::FinalizeMerge | Op::FinalizeMergeInternal => {
            base.clone()
        }
        Op::DeleteImage => img.clone(),
        Op::CopyData => {
            let (dimg, dvol) =
                d.new_image(&sp, &sd, json!({"volFormat": "RAW", "size": "1048576"}));
            target_img = dimg;
            dvol
        }
    };
    Setup {
        sp,
        sd,
        img,
        base,
        top,
        target,
        target_img,
        child,
        generation,
    }
}

fn start_op(d: &Daemon, s: &Setup, op: Op) -> Result<Value, cairn::client::ClientError> {
    let p = match op {
        Op::CreateImage => (
            "Volume.create",
            volume_params(&s.sp, &s.sd, &uuid(), &s.target, json!({})),
        ),
        Op::CreateSnapshot => (
            "Volume.create",
            volume_params(
                &s.sp,
                &s.sd,
                &s.img,
                &s.target,
                json!({"srcImgUUID": s.img, "srcVolUUID": s.top, "size": "1048576"}),
            ),
        ),
        Op::DeleteLeaf => (
            "Volume.delete",
            json!({"volumeID": s.top, "storagepoolID": s.sp, "storagedomainID": s.sd, "imageID": s.img, "postZero": false, "force": false}),
        ),
        Op::DeleteImage => (
            "Image.delete",
            json!({"imageID": s.img, "storagepoolID": s.sp, "storagedomainID": s.sd, "postZero": false, "force": false}),
        ),
        Op::CloneTemplate => (
            "Volume.create",
            volume_params(
                &s.sp,
                &s.sd,
                &uuid(),
                &s.target,
                json!({"srcImgUUID": s.img, "srcVolUUID": s.base, "size": "1048576"}),
            ),
        ),
        Op::Extend => (
            "Volume.extendSize",
            json!({"storagepoolID": s.sp, "storagedomainID": s.sd, "imageID": s.img, "volumeID": s.top, "newSize": "2097152"}),
        ),
        Op::CopyData => {
            let job = uuid();
            let params = json!({"job_id": job, "source": {"sd_id": s.sd, "img_id": s.img, "vol_id": s.top},
                                "destination": {"sd_id": s.sd, "img_id": s.target_img, "vol_id": s.target}});
            return d.client.call("SDM.copy_data", params).map(|_| json!(job));
        }
        Op::PrepareMerge | Op::FinalizeMerge | Op::FinalizeMergeInternal => (
            if let Op::PrepareMerge = op {
                "StoragePool.prepareMerge"
            } else {
                "StoragePool.finalizeMerge"
            },
            json!({"storagepoolID": s.sp, "subchainInfo": subchain(s)}),
        ),
        Op::UpdateVolume
        | Op::Sparsify
        | Op::Amend
        | Op::AddBitmap
        | Op::RemoveBitmap
        | Op::ClearBitmaps
        | Op::Merge => {
            let job = uuid();
            let vol_info = json!({"sd_id": s.sd, "img_id": s.img, "vol_id": s.top, "generation": s.generation});
            let (method, params) = match op {
                Op::UpdateVolume => (
                    "SDM.update_volume",
                    json!({"vol_info": vol_info, "vol_attr": {"description": "updated"}}),
                ),
                Op::Amend => (
                    "SDM.amend_volume",
                    json!({"vol_info": vol_info, "qcow2_attr": {"compat": "0.10"}}),
                ),
                Op::AddBitmap => (
                    "SDM.add_bitmap",
                    json!({"vol_info": vol_info, "bitmap": "b2"}),
                ),
                Op::RemoveBitmap => (
                    "SDM.remove_bitmap",
                    json!({"vol_info": vol_info, "bitmap": "b1"}),
                ),
                Op::ClearBitmaps => ("SDM.clear_bitmaps", json!({"vol_info": vol_info})),
                Op::Sparsify => ("SDM.sparsify_volume", json!({"vol_info": vol_info})),
                _ => ("SDM.merge", json!({"subchain_info": subchain(s)})),
            };
            let mut params = params;
            params["job_id"] = json!(job);
            return d.client.call(method, params).map(|_| json!(job));
        }
    };
    d.client.call(p.0, p.1)
}

fn subchain(s: &Setup) -> Value {
    json!({"sd_id": s.sd, "img_id": s.img, "top_id": s.top, "base_id": s.base})
}

/// Failpoints each operation passes, and whether the operation has taken
/// effect once that failpoint is reached (past its commit point).
fn failpoints(op: Op) -> Vec<(&'static str, bool)> {
    let create = |with_parent: bool| {
        let mut v = vec![
            ("volume.create.planned", false),
            ("volume.create.after_dir", false),
            ("volume.create.after_data", false),
            ("volume.create.after_lease", false),
        ];
        if with_parent {
            v.push(("volume.create.after_parent", false));
        }
        v.extend([
            ("volume.create.after_metadata", true),
            ("volume.create.done", true),
        ]);
        v
    };
    match op {
        Op::CloneTemplate => {
            let mut v = create(false);
            v.insert(2, ("volume.create.after_links", false));
            v
        }
        Op::CreateImage => create(false),
        Op::CreateSnapshot => create(true),
        Op::DeleteLeaf => vec![
            ("volume.delete.planned", false),
            ("volume.delete.after_metadata", true),
            ("volume.delete.after_data", true),
            ("volume.delete.after_parent", true),
            ("volume.delete.done", true),
        ],
        Op::DeleteImage => vec![
            ("image.delete.planned", false),
            ("image.delete.after_rename", true),
            ("image.delete.done", true),
        ],
        Op::CopyData => vec![
            ("copy.planned", false),
            ("copy.after_illegal", false),
            ("copy.after_data", false),
            ("copy.done", true),
        ],
        Op::Extend => vec![
            ("volume.extend.planned", false),
            ("volume.extend.after_illegal", false),
            ("volume.extend.after_resize", false),
            ("volume.extend.done", true),
        ],
        Op::UpdateVolume => job("volume.update"),
        Op::Amend => job("amend"),
        Op::Sparsify => job("sparsify"),
        Op::AddBitmap => job("bitmap.add"),
        Op::RemoveBitmap => job("bitmap.remove"),
        Op::ClearBitmaps => job("bitmap.clear"),
        Op::PrepareMerge => vec![
            ("merge.prepare.planned", false),
            ("merge.prepare.after_illegal", false),
            ("merge.prepare.after_resize", false),
            ("merge.prepare.done", true),
        ],
        Op::Merge => vec![
            ("merge.planned", false),
            ("merge.after_illegal", false),
            ("merge.after_commit", false),
            ("merge.done", true),
        ],
        Op::FinalizeMerge | Op::FinalizeMergeInternal => {
            let mut v = vec![
                ("merge.finalize.planned", false),
                ("merge.finalize.after_metadata", false),
                ("merge.finalize.after_top_metadata", true),
                ("merge.finalize.done", true),
            ];
            if let Op::FinalizeMergeInternal = op {
                v.insert(1, ("merge.finalize.after_rebase", false));
            }
            v
        }
    }
}

/// The failpoints of a one-volume host job.
fn job(prefix: &'static str) -> Vec<(&'static str, bool)> {
    let name = |step: &str| -> &'static str { format!("{prefix}.{step}").leak() };
    vec![
        (name("planned"), false),
        (name("after_illegal"), false),
        (name("after_change"), false),
        (name("done"), true),
    ]
}

fn run_case(op: Op, fp: &str, action: &str, takes_effect: bool) {
    let d = Daemon::start();
    let s = setup(&d, op);
    let setup_jobs: Vec<String> = d
        .call("Host.getJobs", json!({}))
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let d = d.restart_armed(&format!("{fp}={action}"), true);
    let started = start_op(&d, &s, op);
    let d = if action == "crash" {
        d.restart_after_crash(true)
    } else {
        d
    };
    // The task is known after the restart even if its id never reached us.
    if op.is_job() {
        let job = match started {
            Ok(j) => j,
            Err(_) => {
                let all = d.call("Host.getJobs", json!({}));
                let ids: Vec<&String> = all
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter(|id| !setup_jobs.contains(*id))
                    .collect();
                assert_eq!(ids.len(), 1, "{op:?} {fp}: one new job expected: {all}");
                json!(ids[0])
            }
        };
        let status = d.wait_job(job.as_str().unwrap());
        let want = if takes_effect { "done" } else { "failed" };
        assert_eq!(
            status["status"],
            want,
            "{op:?} {fp} {action}: {status}\n{}",
            d.log()
        );
    } else {
        let task = match started {
            Ok(t) => t,
            Err(_) => {
                let all = d.call("Host.getAllTasksStatuses", json!({}));
                let ids: Vec<&String> = all.as_object().unwrap().keys().collect();
                assert_eq!(ids.len(), 1, "{op:?} {fp}: one task expected: {all}");
                json!(ids[0])
            }
        };
        let st = d.wait_task(&task);
        let want = if takes_effect {
            "success"
        } else {
            "cleanSuccess"
        };
        assert_eq!(
            st["taskResult"],
            want,
            "{op:?} {fp} {action}: {st}\n{}",
            d.log()
        );
        d.call("Task.clear", json!({"taskID": task}));
    }
    // For an injected error this is the in-process rollback, before any
    // restart could garbage-collect what it missed.
    check_outcome(&d, &s, op, takes_effect, &format!("{op:?} {fp} {action}"));
    // The pool keeps working (unarmed).
    let d = Daemon::start_in(d.stop(false), Opts::default());
    d.create_volume(&s.sp, &s.sd, &uuid(), &uuid(), json!({"size": "1048576"}));
}

fn volume_status(d: &Daemon, s: &Setup, vol: &str) -> Option<Value> {
    d.client
        .call("Volume.getInfo", json!({"volumeID": vol, "storagepoolID": s.sp, "storagedomainID": s.sd, "imageID": s.img}))
        .ok()
}

fn check_outcome(d: &Daemon, s: &Setup, op: Op, took_effect: bool, case: &str) {
    let domain = d.domain_dir(&s.sd);
    no_leftovers(&domain, case);
    vdsm_check(&domain);
    let dump = d.call("StorageDomain.dump", json!({"sd_id": s.sd}));
    let vols = dump["volumes"].as_object().unwrap();
    // Only the volume the operation fences may be left ILLEGAL; its exact
    // state is checked below.
    let fenced = match op {
        Op::Amend | Op::RemoveBitmap | Op::ClearBitmaps => Some(&s.top),
        _ if op.is_merge() => Some(&s.base),
        _ => None,
    };
    for (id, v) in vols {
        let ok = v["status"] == "OK" || (Some(id) == fenced && v["status"] == "ILLEGAL");
        assert!(ok, "{case}: {id} is {}: {dump}", v["status"]);
    }
    let present = |v: &str| vols.contains_key(v);
    match op {
        Op::CreateImage => assert_eq!(present(&s.target), took_effect, "{case}"),
        Op::CreateSnapshot => {
            assert_eq!(present(&s.target), took_effect, "{case}");
            let top = volume_status(d, s, &s.top).unwrap();
            assert_eq!(
                top["voltype"],
                if took_effect { "INTERNAL" } else { "LEAF" },
                "{case}"
            );
        }
        Op::DeleteLeaf => {
            assert_eq!(present(&s.top), !took_effect, "{case}");
            let base = volume_status(d, s, &s.base).unwrap();
            assert_eq!(
                base["voltype"],
                if took_effect { "LEAF" } else { "INTERNAL" },
                "{case}"
            );
        }
        Op::CopyData => {
            let dst = d.volume_info(&s.sp, &s.sd, &s.target_img, &s.target);
            if took_effect {
                assert_eq!(
                    (dst["legality"].as_str(), dst["generation"].as_u64()),
                    (Some("LEGAL"), Some(1)),
                    "{case}: {dst}"
                );
                same_contents(
                    &domain.join("images").join(&s.img).join(&s.top),
                    "qcow2",
                    &domain.join("images").join(&s.target_img).join(&s.target),
                    "raw",
                );
            } else {
                // A failed copy leaves the destination fenced (or untouched
                // if it failed before fencing it), never half-copied and LEGAL
                // at a new generation.
                assert_eq!(dst["generation"], 0, "{case}: {dst}");
            }
        }
        Op::CloneTemplate => {
            assert_eq!(present(&s.target), took_effect, "{case}");
            let t = volume_status(d, s, &s.base).unwrap();
            assert_eq!(t["voltype"], "SHARED", "{case}");
            // Linked into exactly the clones that exist.
            let links = std::fs::metadata(domain.join("images").join(&s.img).join(&s.base))
                .map(|m| std::os::unix::fs::MetadataExt::nlink(&m))
                .unwrap();
            assert_eq!(links, if took_effect { 2 } else { 1 }, "{case}");
        }
        Op::Extend => {
            let top = volume_status(d, s, &s.top).unwrap();
            let size = if took_effect { 2 << 20 } else { 1 << 20 };
            assert_eq!(
                (top["capacity"].as_u64(), top["legality"].as_str()),
                (Some(size), Some("LEGAL")),
                "{case}: {top}"
            );
            let qi = d.call("Volume.getQemuImageInfo", json!({"volumeID": s.top, "storagepoolID": s.sp, "storagedomainID": s.sd, "imageID": s.img}));
            assert_eq!(
                qi["virtualsize"].as_u64(),
                Some(size),
                "{case}: data and metadata agree"
            );
        }
        Op::UpdateVolume => {
            let top = volume_status(d, s, &s.top).unwrap();
            assert_eq!(top["legality"], "LEGAL", "{case}\n{}", d.log());
            assert_eq!(
                top["description"] == "updated",
                took_effect,
                "{case}: {top}"
            );
            assert_eq!(
                top["generation"],
                if took_effect { 1 } else { 0 },
                "{case}: {top}"
            );
        }
        Op::Amend | Op::AddBitmap | Op::RemoveBitmap | Op::ClearBitmaps => {
            let top = volume_status(d, s, &s.top).unwrap();
            let generation = top["generation"].as_u64().unwrap();
            let legal = top["legality"] == "LEGAL";
            let path = domain.join("images").join(&s.img).join(&s.top);
            let info = qemu_img_json(&[
                "info",
                "--output=json",
                "-f",
                "qcow2",
                path.to_str().unwrap(),
            ]);
            let data = &info["format-specific"]["data"];
            let bitmaps: Vec<&str> = data["bitmaps"]
                .as_array()
                .map(|a| a.iter().map(|b| b["name"].as_str().unwrap()).collect())
                .unwrap_or_default();
            // (changed, unchanged): what the volume shows in each case.
            let (changed, unchanged) = match op {
                Op::Amend => (data["compat"] == "0.10", data["compat"] == "1.1"),
                Op::AddBitmap => (bitmaps.contains(&"b2"), !bitmaps.contains(&"b2")),
                Op::RemoveBitmap | Op::ClearBitmaps => (bitmaps.is_empty(), bitmaps == ["b1"]),
                _ => unreachable!(),
            };
            if took_effect {
                assert!(legal && changed, "{case}: {top} {info}");
                assert_eq!(generation, s.generation + 1, "{case}: {top}");
            } else {
                assert_eq!(generation, s.generation, "{case}: {top}");
                // Adding rolls back whole; the others leave the volume
                // fenced once they may have changed it.
                assert!(!legal || unchanged, "{case}: {top} {info}");
                if let Op::AddBitmap = op {
                    assert!(legal && unchanged, "{case}: {top} {info}");
                }
            }
        }
        Op::Sparsify => {
            let top = volume_status(d, s, &s.top).unwrap();
            let generation = if took_effect { 1 } else { 0 };
            assert_eq!(
                (top["legality"].as_str(), top["generation"].as_u64()),
                (Some("LEGAL"), Some(generation)),
                "{case}: {top}"
            );
            let path = domain.join("images").join(&s.img).join(&s.top);
            qemu_io(&path, "qcow2", "read -P 0 0 512k");
            qemu_io(&path, "qcow2", "read -P 0x5a 512k 64k");
        }
        Op::PrepareMerge => {
            let base = volume_status(d, s, &s.base).unwrap();
            let (legality, size) = if took_effect {
                ("ILLEGAL", 2 << 20)
            } else {
                ("LEGAL", 1 << 20)
            };
            assert_eq!(
                (base["legality"].as_str(), base["capacity"].as_u64()),
                (Some(legality), Some(size)),
                "{case}: {base}"
            );
            let path = domain.join("images").join(&s.img).join(&s.base);
            assert_eq!(std::fs::metadata(path).unwrap().len(), size, "{case}");
        }
        Op::Merge => {
            let base = volume_status(d, s, &s.base).unwrap();
            assert_eq!(base["legality"], "ILLEGAL", "{case}: {base}");
            assert_eq!(
                base["generation"],
                if took_effect { 1 } else { 0 },
                "{case}: {base}"
            );
            if took_effect {
                let path = domain.join("images").join(&s.img).join(&s.base);
                qemu_io(&path, "raw", "read -P 0x5a 1M 64k");
            }
        }
        Op::FinalizeMerge | Op::FinalizeMergeInternal => {
            let base = volume_status(d, s, &s.base).unwrap();
            assert_eq!(present(&s.top), !took_effect, "{case}");
            let internal = matches!(op, Op::FinalizeMergeInternal);
            let images = domain.join("images").join(&s.img);
            if took_effect {
                let role = if internal { "INTERNAL" } else { "LEAF" };
                assert_eq!(
                    (base["legality"].as_str(), base["voltype"].as_str()),
                    (Some("LEGAL"), Some(role)),
                    "{case}: {base}"
                );
                assert!(!images.join(&s.top).exists(), "{case}: top data left");
            } else {
                assert_eq!(base["legality"], "ILLEGAL", "{case}: {base}");
            }
            if internal {
                let parent = if took_effect { &s.base } else { &s.top };
                let child = volume_status(d, s, &s.child).unwrap();
                assert_eq!(child["parent"], **parent, "{case}: {child}");
                let path = images.join(&s.child);
                let info = qemu_img_json(&["info", "--output=json", "-U", path.to_str().unwrap()]);
                assert_eq!(info["backing-filename"], **parent, "{case}: {info}");
                qemu_io(&path, "qcow2", "read -P 0x5a 1M 64k");
            } else {
                let leaf = if took_effect { &s.base } else { &s.top };
                let fmt = if took_effect { "raw" } else { "qcow2" };
                qemu_io(&images.join(leaf), fmt, "read -P 0x5a 1M 64k");
            }
        }
        Op::DeleteImage => {
            assert_eq!(present(&s.base) && present(&s.top), !took_effect, "{case}");
            assert_eq!(present(&s.base) || present(&s.top), !took_effect, "{case}");
        }
    }
}

/// No file without metadata, no temporary, no image being removed.
fn no_leftovers(domain: &Path, case: &str) {
    let images = domain.join("images");
    for entry in std::fs::read_dir(&images).unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap();
        assert!(!name.starts_with("_remove_me_"), "{case}: leftover {name}");
        let files: Vec<String> = std::fs::read_dir(entry.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        assert!(!files.is_empty(), "{case}: empty image directory {name}");
        for f in &files {
            assert!(!f.ends_with(".new"), "{case}: leftover {name}/{f}");
            let vol = f.split('.').next().unwrap();
            assert!(
                files.contains(&format!("{vol}.meta")),
                "{case}: {name}/{f} has no metadata"
            );
        }
    }
}

fn walk(op: Op) {
    for (fp, takes_effect) in failpoints(op) {
        for action in ["crash", "error"] {
            run_case(op, fp, action, takes_effect);
        }
    }
}

#[test]
fn walk_volume_create_new_image() {
    walk(Op::CreateImage);
}

#[test]
fn walk_volume_create_snapshot() {
    walk(Op::CreateSnapshot);
}

#[test]
fn walk_volume_delete() {
    walk(Op::DeleteLeaf);
}

#[test]
fn walk_image_delete() {
    walk(Op::DeleteImage);
}

#[test]
fn walk_copy_data() {
    walk(Op::CopyData);
}

#[test]
fn walk_clone_from_template() {
    walk(Op::CloneTemplate);
}

#[test]
fn walk_volume_extend() {
    walk(Op::Extend);
}

#[test]
fn walk_update_volume() {
    walk(Op::UpdateVolume);
}

#[test]
fn walk_sparsify_volume() {
    walk(Op::Sparsify);
}

#[test]
fn walk_amend_volume() {
    walk(Op::Amend);
}

#[test]
fn walk_add_bitmap() {
    walk(Op::AddBitmap);
}

#[test]
fn walk_remove_bitmap() {
    walk(Op::RemoveBitmap);
}

#[test]
fn walk_clear_bitmaps() {
    walk(Op::ClearBitmaps);
}

#[test]
fn walk_prepare_merge() {
    walk(Op::PrepareMerge);
}

#[test]
fn walk_merge() {
    walk(Op::Merge);
}

#[test]
fn walk_finalize_leaf_merge() {
    walk(Op::FinalizeMerge);
}

#[test]
fn walk_finalize_internal_merge() {
    walk(Op::FinalizeMergeInternal);
}

/// Every failpoint in the code is exercised by the walk above.
#[test]
fn walk_covers_every_failpoint() {
    let mut walked: Vec<&str> = Op::ALL
        .into_iter()
        .flat_map(failpoints)
        .map(|(fp, _)| fp)
        .collect();
    walked.extend([
        // Walked by contract::block::crash_walk.
        "block.volume.after_lvcreate",
        "block.volume.after_record",
        // Walked by block::block_domains_grow_onto_luns_and_unused_vgs_go
        // (and the thin extend's by contract::block::crash_walk).
        "block.extend.after_vgextend",
        "thin.extend.planned",
        "thin.extend.after_lvextend",
        // Walked by cinder::a_crash_in_the_middle_of_a_change_leaves_nothing_in_flight.
        "catalog.volume.recorded",
        "catalog.volume.finishing",
        "catalog.transfer.accepted",
        "catalog.backup.written",
        "catalog.restore.cleared",
        // Walked by upgrade::upgrade_crash_walk.
        "domain.upgrade.prepared",
        "domain.upgrade.committed",
        "domain.create.staged",
        "domain.create.done",
        "domain.format.after_rename",
        "pool.create.after_members",
        "pool.create.done",
        "pool.switch_master.after_lease",
        "pool.switch_master.after_copy",
        "pool.switch_master.after_commit",
        "task.revert.marked",
        "image.move.planned",
        "image.move.after_copy",
        "image.move.after_commit",
        "image.move.done",
    ]);
    walked.sort();
    walked.dedup();
    let mut all = cairn::failpoint::ALL.to_vec();
    all.sort();
    assert_eq!(walked, all);
}

/// Domain create and format: crash at each failpoint, restart, and check
/// the domain is whole or gone, and that aged leftovers are collected.
#[test]
fn walk_domain_create_and_format() {
    for (fp, created) in [
        ("domain.create.staged", false),
        ("domain.create.done", true),
    ] {
        let d = Daemon::start_bare();
        let storage = d.local_storage("storage2");
        let d = d.restart_armed(&format!("{fp}=crash"), false);
        let sd = uuid();
        let _ = d.client.call(
            "StorageDomain.create",
            json!({"storagedomainID": sd, "domainType": "LOCALFS", "typeArgs": storage.to_str().unwrap(), "name": "x", "domainClass": "Data"}),
        );
        let d = d.restart_after_crash(false);
        let listed = d.call("Host.getStorageDomains", json!({}));
        assert_eq!(
            listed.as_array().unwrap().iter().any(|v| v == &json!(sd)),
            created,
            "{fp}"
        );
        if created {
            vdsm_check(&storage.join(&sd));
        } else {
            // The same create simply works again.
            d.call(
                "StorageDomain.create",
                json!({"storagedomainID": sd, "domainType": "LOCALFS", "typeArgs": storage.to_str().unwrap(), "name": "x", "domainClass": "Data"}),
            );
            vdsm_check(&storage.join(&sd));
        }
        // Format, crashing after the rename: the domain is gone at once.
        let d = d.restart_armed("domain.format.after_rename=crash", false);
        let _ = d.client.call(
            "StorageDomain.format",
            json!({"storagedomainID": sd, "autoDetach": false}),
        );
        let leftover = storage.join(format!("_remove_me_{sd}"));
        let d = d.restart_after_crash(false);
        assert!(leftover.exists());
        // A young leftover is left alone (another host may own it); an old one goes.
        assert_eq!(
            d.call_err("StorageDomain.getInfo", json!({"storagedomainID": sd}))
                .0,
            358
        );
        assert!(leftover.exists());
        let st = std::process::Command::new("touch")
            .args(["-d", "1 hour ago"])
            .arg(&leftover)
            .status()
            .unwrap();
        assert!(st.success());
        let d = Daemon::start_in(
            d.stop(false),
            Opts {
                embedded: false,
                ..Default::default()
            },
        );
        assert!(!leftover.exists(), "old leftover collected at start-up");
        drop(d);
    }
}

/// Pool create with a master and a regular member: crash after the member
/// is attached (the master not yet written) or at the end; the same create
/// then completes or is a no-op, and the pool connects.
#[test]
fn walk_pool_create() {
    for fp in ["pool.create.after_members", "pool.create.done"] {
        let d = Daemon::start_bare();
        let (sp, master, member) = (uuid(), uuid(), uuid());
        for (sd, name) in [(&master, "m"), (&member, "r")] {
            let dir = d.local_storage(name);
            d.call(
                "StorageDomain.create",
                json!({"storagedomainID": sd, "domainType": "LOCALFS", "typeArgs": dir.to_str().unwrap(), "name": name, "domainClass": "Data"}),
            );
        }
        let create = json!({"storagepoolID": sp, "name": "p", "masterSdUUID": master, "masterVersion": 1, "domainList": [master, member]});
        let d = d.restart_armed(&format!("{fp}=crash"), false);
        let _ = d.client.call("StoragePool.create", create.clone());
        let d = d.restart_after_crash(false);
        d.call("StoragePool.create", create);
        d.call("StoragePool.connect", json!({"storagepoolID": sp, "hostID": 1, "scsiKey": "", "masterSdUUID": master, "masterVersion": 1}));
        let info = d.call("StoragePool.getInfo", json!({"storagepoolID": sp}));
        assert_eq!(
            info["info"]["domains"],
            json!(format!("{master}:Active,{member}:Attached")),
            "{fp}"
        );
        vdsm_check(&d.data().join("m").join(&master));
    }
}

/// Image.move (COPY and MOVE) between two domains: crash or fail at each
/// step; the image is then on the destination whole (and, for MOVE, gone
/// from the source) or not there at all, with no staging left behind.
#[test]
fn walk_image_move() {
    let steps = [
        ("image.move.planned", false),
        ("image.move.after_copy", false),
        ("image.move.after_commit", true),
        ("image.move.done", true),
    ];
    for op in ["COPY", "MOVE"] {
        for (fp, takes_effect) in steps {
            for action in ["crash", "error"] {
                let case = format!("{op} {fp} {action}");
                let (d, sp, sd1, sd2) = Daemon::two_domain_pool();
                let (img, base, top) = (uuid(), uuid(), uuid());
                d.create_volume(&sp, &sd1, &img, &base, json!({"size": "1048576"}));
                d.create_volume(
                    &sp,
                    &sd1,
                    &img,
                    &top,
                    json!({"srcImgUUID": img, "srcVolUUID": base, "size": "1048576"}),
                );
                let src_dir = d.domain_dir(&sd1).join("images").join(&img);
                qemu_io(&src_dir.join(&top), "qcow2", "write -P 0x5a 0 64k");
                let d = d.restart_armed(&format!("{fp}={action}"), false);
                let started = d.client.call(
                    "Image.move",
                    json!({"imageID": img, "storagepoolID": sp, "storagedomainID": sd1, "dstSdUUID": sd2,
                           "operation": op, "postZero": op == "MOVE", "force": false}),
                );
                let d = if action == "crash" {
                    d.restart_after_crash(false)
                } else {
                    d
                };
                let task = match started {
                    Ok(t) => t,
                    Err(_) => {
                        let all = d.call("Host.getAllTasksStatuses", json!({}));
                        json!(all.as_object().unwrap().keys().next().expect("a task"))
                    }
                };
                let st = d.wait_task(&task);
                let want = if takes_effect {
                    "success"
                } else {
                    "cleanSuccess"
                };
                assert_eq!(st["taskResult"], want, "{case}: {st}\n{}", d.log());
                let dst_dir = d.domain_dir(&sd2).join("images").join(&img);
                assert_eq!(dst_dir.exists(), takes_effect, "{case}");
                let src_kept = !(takes_effect && op == "MOVE");
                assert_eq!(src_dir.exists(), src_kept, "{case}");
                for dir in [&dst_dir, &src_dir].into_iter().filter(|d| d.exists()) {
                    qemu_io(&dir.join(&top), "qcow2", "read -P 0x5a 0 64k");
                }
                for sd in [&sd1, &sd2] {
                    no_leftovers(&d.domain_dir(sd), &case);
                    vdsm_check(&d.domain_dir(sd));
                }
            }
        }
    }
}

/// Task.revert crashing after it marked the task as reverting: recovery
/// finishes the revert.
#[test]
fn walk_task_revert() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let (img, base, top) = (uuid(), uuid(), uuid());
    d.create_volume(&sp, &sd, &img, &base, json!({"size": "1048576"}));
    let t = d.call(
        "Volume.create",
        volume_params(
            &sp,
            &sd,
            &img,
            &top,
            json!({"srcImgUUID": img, "srcVolUUID": base, "size": "1048576"}),
        ),
    );
    d.wait_task(&t);
    let d = d.restart_armed("task.revert.marked=crash", true);
    let _ = d.client.call("Task.revert", json!({"taskID": t}));
    let d = d.restart_after_crash(true);
    let st = d.call("Task.getStatus", json!({"taskID": t}));
    assert_eq!(st["taskResult"], "cleanSuccess", "{st}");
    assert!(st["message"].as_str().unwrap().contains("reverted"), "{st}");
    assert_eq!(d.image_volumes(&sp, &sd, &img), json!([base]));
    let info = d.volume_info(&sp, &sd, &img, &base);
    assert_eq!(info["voltype"], "LEAF");
    vdsm_check(&d.domain_dir(&sd));
}

/// Task records written by version 1 (file paths in their steps), captured
/// from that cairnd at a crash (`tests/fixtures/task-records-v1/`), are
/// still recovered after an upgrade: each is planted on the master domain
/// beside the storage state its crash left, and cairnd started again.
#[test]
fn version_1_task_records_still_recover() {
    const IMG: &str = "11111111-1111-4111-8111-111111111111";
    const BASE: &str = "22222222-2222-4222-8222-222222222222";
    const TOP: &str = "33333333-3333-4333-8333-333333333333";
    const NEW_IMG: &str = "44444444-4444-4444-8444-444444444444";
    const NEW_VOL: &str = "55555555-5555-4555-8555-555555555555";

    // Each case: the fixture, the state before the crash, what the crash
    // left, the task's result, and the image's files after recovery.
    type Case = (
        &'static str,
        fn(&Daemon, &str, &str),
        fn(&Path),
        &'static str,
        &'static [&'static str],
    );
    let cases: [Case; 5] = [
        (
            // Crashed before the new volume's metadata: rolled back.
            "create-image",
            |d, sp, sd| d.create_volume(sp, sd, NEW_IMG, NEW_VOL, json!({"size": "1048576"})),
            |dom| {
                let meta = dom.join(format!("images/{NEW_IMG}/{NEW_VOL}.meta"));
                std::fs::remove_file(meta).unwrap();
            },
            "cleanSuccess",
            &[],
        ),
        (
            // Crashed after the rename: the image is purged.
            "delete-image",
            |d, sp, sd| d.create_volume(sp, sd, IMG, BASE, json!({"size": "1048576"})),
            |dom| {
                std::fs::rename(
                    dom.join(format!("images/{IMG}")),
                    dom.join(format!("images/_remove_me_{IMG}")),
                )
                .unwrap();
            },
            "success",
            &[],
        ),
        (
            // Crashed after the leaf's metadata went: data and lease follow.
            "delete-leaf",
            snapshot_of_base,
            |dom| std::fs::remove_file(dom.join(format!("images/{IMG}/{TOP}.meta"))).unwrap(),
            "success",
            &[BASE],
        ),
        (
            // Crashed after the parent became INTERNAL: rolled back.
            "snapshot",
            snapshot_of_base,
            |dom| std::fs::remove_file(dom.join(format!("images/{IMG}/{TOP}.meta"))).unwrap(),
            "cleanSuccess",
            &[BASE],
        ),
        (
            // Crashed after the top's metadata went: its files follow.
            "finalize-merge",
            snapshot_of_base,
            |dom| std::fs::remove_file(dom.join(format!("images/{IMG}/{TOP}.meta"))).unwrap(),
            "success",
            &[BASE],
        ),
    ];
    fn snapshot_of_base(d: &Daemon, sp: &str, sd: &str) {
        d.create_volume(sp, sd, IMG, BASE, json!({"size": "1048576"}));
        d.create_volume(
            sp,
            sd,
            IMG,
            TOP,
            json!({"size": "1048576", "srcImgUUID": IMG, "srcVolUUID": BASE}),
        );
    }

    for (fixture, before, crash, result, left) in cases {
        let d = Daemon::start();
        let (sp, sd) = d.embedded();
        before(&d, &sp, &sd);
        let dom = d.domain_dir(&sd);
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/task-records-v1/{fixture}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .replace("@SD@", &sd);
        let record: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(record["version"], 1);
        let task = record["id"].as_str().unwrap().to_string();
        let data = d.stop(false);
        crash(&dom);
        let dir = dom.join("master/tasks").join(&task);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("task.json"), &text).unwrap();

        let d = Daemon::start_in(data, Opts::default());
        let st = d.wait_task(&json!(task));
        assert_eq!(st["taskResult"], result, "{fixture}: {st}\n{}", d.log());
        let img = if fixture == "create-image" {
            NEW_IMG
        } else {
            IMG
        };
        let mut files: Vec<String> = tree(&dom.join("images"))
            .into_iter()
            .filter(|f| f != img)
            .collect();
        let want: Vec<String> = left
            .iter()
            .flat_map(|v| {
                [
                    format!("{img}/{v}"),
                    format!("{img}/{v}.lease"),
                    format!("{img}/{v}.meta"),
                ]
            })
            .collect();
        files.sort();
        assert_eq!(files, want, "{fixture}\n{}", d.log());
        if let [base] = left {
            let info = d.volume_info(&sp, &sd, img, base);
            assert_eq!(info["voltype"], "LEAF", "{fixture}: {info}");
        }
    }
}
