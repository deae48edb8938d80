//! Cold merge, qcow2 amend and bitmaps through the API, with the data seen
//! through the chain checked by qemu-img before and after.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::common::*;

/// The whole virtual disk seen through `leaf`, as a raw file.
fn flatten(leaf: &Path, out: &Path) {
    let st = Command::new("qemu-img")
        .args(["convert", "-U", "-f", "qcow2", "-O", "raw"])
        .arg(leaf)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
}

struct Chain {
    sp: String,
    sd: String,
    img: String,
    dir: PathBuf,
}

impl Chain {
    fn subchain(&self, top: &str, base: &str) -> Value {
        json!({"sd_id": self.sd, "img_id": self.img, "top_id": top, "base_id": base})
    }

    /// prepareMerge, SDM.merge, finalizeMerge.
    fn merge(&self, d: &Daemon, top: &str, base: &str) {
        let sc = self.subchain(top, base);
        let t = d.call(
            "StoragePool.prepareMerge",
            json!({"storagepoolID": self.sp, "subchainInfo": sc}),
        );
        d.task_ok(&t);
        let j = d.run_job("SDM.merge", json!({"subchain_info": sc}));
        assert_eq!(
            (j["status"].as_str(), j["progress"].as_u64()),
            (Some("done"), Some(100)),
            "{j}"
        );
        let t = d.call(
            "StoragePool.finalizeMerge",
            json!({"storagepoolID": self.sp, "subchainInfo": sc}),
        );
        d.task_ok(&t);
    }
}

#[test]
fn cold_merge_internal_then_leaf_keeps_the_disk_contents() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let img = uuid();
    let dir = d.domain_dir(&sd).join("images").join(&img);
    let c = Chain { sp, sd, img, dir };
    let (base, mid, leaf) = (uuid(), uuid(), uuid());
    d.create_volume(
        &c.sp,
        &c.sd,
        &c.img,
        &base,
        json!({"volFormat": "RAW", "size": (8u64 << 20).to_string()}),
    );
    // Each layer larger than the one below: merging grows the base.
    d.create_volume(
        &c.sp,
        &c.sd,
        &c.img,
        &mid,
        json!({"srcImgUUID": c.img, "srcVolUUID": base, "size": (16u64 << 20).to_string()}),
    );
    qemu_io(&c.dir.join(&base), "raw", "write -P 0x11 0 2M");
    qemu_io(&c.dir.join(&mid), "qcow2", "write -P 0x22 1M 2M");
    qemu_io(&c.dir.join(&mid), "qcow2", "write -P 0x23 12M 1M");
    d.create_volume(
        &c.sp,
        &c.sd,
        &c.img,
        &leaf,
        json!({"srcImgUUID": c.img, "srcVolUUID": mid, "size": (16u64 << 20).to_string()}),
    );
    qemu_io(&c.dir.join(&leaf), "qcow2", "write -P 0x33 2M 512k");
    qemu_io(&c.dir.join(&leaf), "qcow2", "write -z 12M 64k");
    let before = d.data().join("before.raw");
    flatten(&c.dir.join(&leaf), &before);

    // Bad subchains are refused before anything changes.
    let refuse = |method: &str, sc: Value, code: i64| {
        let params = if method.starts_with("SDM") {
            json!({"job_id": uuid(), "subchain_info": sc})
        } else {
            json!({"storagepoolID": c.sp, "subchainInfo": sc})
        };
        let (got, msg) = d.call_err(method, params);
        assert_eq!(got, code, "{method}: {msg}");
    };
    refuse("StoragePool.prepareMerge", c.subchain(&leaf, &base), 1000);
    refuse("StoragePool.prepareMerge", c.subchain(&base, &mid), 1000);
    refuse("StoragePool.prepareMerge", c.subchain(&uuid(), &mid), 201);
    refuse("SDM.merge", c.subchain(&mid, &base), 1000);
    refuse("StoragePool.finalizeMerge", c.subchain(&mid, &base), 1000);
    let mut stale = c.subchain(&mid, &base);
    stale["base_generation"] = json!(5);
    refuse("StoragePool.prepareMerge", stale, 911);
    let prepare =
        json!({"storagepoolID": c.sp, "storagedomainID": c.sd, "imageID": c.img, "volumeID": leaf});
    d.call("Image.prepare", prepare.clone());
    refuse("StoragePool.prepareMerge", c.subchain(&mid, &base), 203);
    d.call("Image.teardown", prepare);
    assert_eq!(
        d.volume_info(&c.sp, &c.sd, &c.img, &base)["legality"],
        "LEGAL"
    );

    // Internal merge: mid into base; the leaf is rebased onto base.
    c.merge(&d, &mid, &base);
    let vols = d.image_volumes(&c.sp, &c.sd, &c.img);
    let mut ids: Vec<&str> = vols
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![base.as_str(), leaf.as_str()];
    want.sort();
    assert_eq!(ids, want);
    assert!(!c.dir.join(&mid).exists());
    let b = d.volume_info(&c.sp, &c.sd, &c.img, &base);
    assert_eq!(
        (
            b["legality"].as_str(),
            b["voltype"].as_str(),
            b["capacity"].as_u64()
        ),
        (Some("LEGAL"), Some("INTERNAL"), Some(16 << 20)),
        "{b}"
    );
    assert_eq!(d.volume_info(&c.sp, &c.sd, &c.img, &leaf)["parent"], base);
    let info = qemu_img_json(&[
        "info",
        "--output=json",
        "-U",
        c.dir.join(&leaf).to_str().unwrap(),
    ]);
    assert_eq!(info["backing-filename"], base);
    same_contents(&c.dir.join(&leaf), "qcow2", &before, "raw");

    // Leaf merge: the leaf into base, which becomes the only volume.
    c.merge(&d, &leaf, &base);
    let b = d.volume_info(&c.sp, &c.sd, &c.img, &base);
    assert_eq!(
        (b["legality"].as_str(), b["voltype"].as_str()),
        (Some("LEGAL"), Some("LEAF")),
        "{b}"
    );
    assert_eq!(d.image_volumes(&c.sp, &c.sd, &c.img), json!([base.clone()]));
    same_contents(&c.dir.join(&base), "raw", &before, "raw");
    vdsm_check(&d.domain_dir(&c.sd));
}

#[test]
fn merge_into_a_template_clone_and_bitmaps_follow() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let images = d.domain_dir(&sd).join("images");
    // A template may not be merged into.
    let (timg, tvol) = d.new_image(&sp, &sd, json!({"size": "4194304"}));
    d.make_template(&sd, &timg, &tvol);
    let (img, base, top) = (uuid(), uuid(), uuid());
    d.create_volume(
        &sp,
        &sd,
        &img,
        &base,
        json!({"srcImgUUID": timg, "srcVolUUID": tvol, "size": "4194304"}),
    );
    let dir = images.join(&img);
    let c = Chain {
        sp: sp.clone(),
        sd: sd.clone(),
        img: img.clone(),
        dir: dir.clone(),
    };
    let (code, _) = d.call_err(
        "StoragePool.prepareMerge",
        json!({"storagepoolID": sp, "subchainInfo": c.subchain(&base, &tvol)}),
    );
    assert_eq!(code, 1000);

    // A qcow2 base (the clone) with a bitmap, a top with another.
    let vol_info = |vol: &str| json!({"sd_id": sd, "img_id": img, "vol_id": vol});
    d.job_ok(
        "SDM.add_bitmap",
        json!({"vol_info": vol_info(&base), "bitmap": "full"}),
    );
    d.create_volume(
        &sp,
        &sd,
        &img,
        &top,
        json!({"srcImgUUID": img, "srcVolUUID": base, "size": "4194304"}),
    );
    d.job_ok(
        "SDM.add_bitmap",
        json!({"vol_info": vol_info(&top), "bitmap": "incr"}),
    );
    qemu_io(&dir.join(&top), "qcow2", "write -P 0x44 1M 64k");
    let before = d.data().join("before.raw");
    flatten(&dir.join(&top), &before);

    let sc = c.subchain(&top, &base);
    let t = d.call(
        "StoragePool.prepareMerge",
        json!({"storagepoolID": sp, "subchainInfo": sc}),
    );
    d.task_ok(&t);
    d.job_ok(
        "SDM.merge",
        json!({"subchain_info": sc, "merge_bitmaps": true}),
    );
    let t = d.call(
        "StoragePool.finalizeMerge",
        json!({"storagepoolID": sp, "subchainInfo": sc}),
    );
    d.task_ok(&t);
    same_contents(&dir.join(&base), "qcow2", &before, "raw");
    assert_eq!(d.bitmaps(&sp, &sd, &img, &base), ["full", "incr"]);
    // The template is untouched and still backs the merged clone.
    let info = qemu_img_json(&[
        "info",
        "--output=json",
        "-U",
        dir.join(&base).to_str().unwrap(),
    ]);
    assert_eq!(info["backing-filename"], tvol);
    vdsm_check(&d.domain_dir(&sd));
}

#[test]
fn bitmaps_amend_and_copy_with_bitmaps() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let images = d.domain_dir(&sd).join("images");
    let (img, vol, raw) = (uuid(), uuid(), uuid());
    d.create_volume(&sp, &sd, &img, &vol, json!({"size": "8388608"}));
    let rimg = uuid();
    d.create_volume(
        &sp,
        &sd,
        &rimg,
        &raw,
        json!({"volFormat": "RAW", "size": "8388608"}),
    );
    let vol_info = json!({"sd_id": sd, "img_id": img, "vol_id": vol});
    let bitmaps = |img: &str, vol: &str| d.bitmaps(&sp, &sd, img, vol);
    for name in ["b1", "b2"] {
        d.job_ok(
            "SDM.add_bitmap",
            json!({"vol_info": vol_info, "bitmap": name}),
        );
    }
    assert_eq!(bitmaps(&img, &vol), ["b1", "b2"]);
    assert_eq!(d.volume_info(&sp, &sd, &img, &vol)["generation"], 2);

    // Refusals, before a job starts.
    let refuse = |method: &str, params: Value| {
        let mut params = params;
        params["job_id"] = json!(uuid());
        let (code, msg) = d.call_err(method, params);
        assert_eq!(code, 1000, "{method}: {msg}");
    };
    refuse(
        "SDM.add_bitmap",
        json!({"vol_info": vol_info, "bitmap": "b1"}),
    );
    refuse(
        "SDM.add_bitmap",
        json!({"vol_info": vol_info, "bitmap": ""}),
    );
    refuse(
        "SDM.add_bitmap",
        json!({"vol_info": {"sd_id": sd, "img_id": rimg, "vol_id": raw}, "bitmap": "x"}),
    );
    refuse(
        "SDM.remove_bitmap",
        json!({"vol_info": vol_info, "bitmap": "nope"}),
    );
    refuse(
        "SDM.amend_volume",
        json!({"vol_info": vol_info, "qcow2_attr": {"compat": "2.0"}}),
    );
    refuse(
        "SDM.amend_volume",
        json!({"vol_info": vol_info, "qcow2_attr": {"compat": "0.10"}}),
    );
    let (code, _) = d.call_err(
        "SDM.amend_volume",
        json!({"job_id": uuid(), "vol_info": vol_info, "qcow2_attr": {"size": 1}}),
    );
    assert_eq!(code, -32602);

    // Copy with bitmaps to a qcow2 volume.
    let (dimg, dvol) = d.new_image(&sp, &sd, json!({"size": "8388608"}));
    qemu_io(&images.join(&img).join(&vol), "qcow2", "write -P 0x55 0 1M");
    d.job_ok(
        "SDM.copy_data",
        json!({"source": vol_info, "destination": {"sd_id": sd, "img_id": dimg, "vol_id": dvol}, "copy_bitmaps": true}),
    );
    assert_eq!(bitmaps(&dimg, &dvol), ["b1", "b2"]);
    same_contents(
        &images.join(&img).join(&vol),
        "qcow2",
        &images.join(&dimg).join(&dvol),
        "qcow2",
    );

    d.job_ok(
        "SDM.remove_bitmap",
        json!({"vol_info": vol_info, "bitmap": "b1"}),
    );
    assert_eq!(bitmaps(&img, &vol), ["b2"]);
    d.job_ok("SDM.clear_bitmaps", json!({"vol_info": vol_info}));
    assert!(bitmaps(&img, &vol).is_empty());

    // Without bitmaps, compat can go down to 0.10 and back.
    for compat in ["0.10", "1.1"] {
        d.job_ok(
            "SDM.amend_volume",
            json!({"vol_info": vol_info, "qcow2_attr": {"compat": compat}}),
        );
        let qi = d.call(
            "Volume.getQemuImageInfo",
            json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img}),
        );
        assert_eq!(qi["compat"], compat, "{qi}");
    }
    let v = d.volume_info(&sp, &sd, &img, &vol);
    assert_eq!(
        (v["legality"].as_str(), v["generation"].as_u64()),
        (Some("LEGAL"), Some(6)),
        "{v}"
    );
    vdsm_check(&d.domain_dir(&sd));
}

#[test]
fn sparsify_frees_zero_ranges_and_keeps_what_the_chain_reads() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let size = (16u64 << 20).to_string();
    let (img, base, top) = d.raw_base_and_snapshot(&sp, &sd, &size);
    let dir = d.domain_dir(&sd).join("images").join(&img);
    let allocated = |vol: &str| {
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(dir.join(vol)).unwrap()) * 512
    };
    // The base: data, then written zeros. The top: zeros written over the
    // base's data (they must keep hiding it), and data of its own.
    qemu_io(&dir.join(&base), "raw", "write -P 0x11 0 2M");
    qemu_io(&dir.join(&base), "raw", "write -P 0 4M 4M");
    qemu_io(&dir.join(&top), "qcow2", "write -P 0 0 1M");
    qemu_io(&dir.join(&top), "qcow2", "write -P 0x22 8M 1M");
    let before = d.data().join("before.raw");
    flatten(&dir.join(&top), &before);
    let (base_used, top_used) = (allocated(&base), allocated(&top));

    // The base has a child; sparsifying it is safe since it reads the same.
    // (qcow2 may spend a little of what it frees on its own metadata.)
    for vol in [&base, &top] {
        let j = d.run_job(
            "SDM.sparsify_volume",
            json!({"vol_info": {"sd_id": sd, "img_id": img, "vol_id": vol}}),
        );
        assert_eq!(
            (j["status"].as_str(), j["progress"].as_u64()),
            (Some("done"), Some(100)),
            "{j}"
        );
        let v = d.volume_info(&sp, &sd, &img, vol);
        assert_eq!(
            (v["legality"].as_str(), v["generation"].as_u64()),
            (Some("LEGAL"), Some(1))
        );
    }
    assert!(
        allocated(&base) <= base_used - (4 << 20),
        "base zeros freed"
    );
    assert!(
        allocated(&top) <= top_used - (960 << 10),
        "top zeros freed: {} of {top_used}\n{}",
        allocated(&top),
        d.log()
    );
    same_contents(&dir.join(&top), "qcow2", &before, "raw");
    qemu_io(&dir.join(&top), "qcow2", "read -P 0 0 1M");
    let chk = qemu_img_json(&["check", "--output=json", dir.join(&top).to_str().unwrap()]);
    assert_eq!(chk["check-errors"], 0, "{chk}");

    // Refusals: a template, a preallocated volume, an image in use.
    let (pimg, pvol) = d.new_image(
        &sp,
        &sd,
        json!({"volFormat": "RAW", "preallocate": "PREALLOCATED", "size": "1048576"}),
    );
    let refuse = |img: &str, vol: &str, code: i64| {
        let (got, msg) = d.call_err(
            "SDM.sparsify_volume",
            json!({"job_id": uuid(), "vol_info": {"sd_id": sd, "img_id": img, "vol_id": vol}}),
        );
        assert_eq!(got, code, "{msg}");
    };
    refuse(&pimg, &pvol, 1000);
    let prepare =
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": top});
    d.call("Image.prepare", prepare);
    refuse(&img, &top, 203);
}

#[test]
fn image_move_copies_and_moves_whole_chains_between_domains() {
    let (d, sp, sd1, sd2) = Daemon::two_domain_pool();
    let dir = |sd: &str, img: &str| d.domain_dir(sd).join("images").join(img);
    let (img, base, top) = (uuid(), uuid(), uuid());
    d.create_volume(
        &sp,
        &sd1,
        &img,
        &base,
        json!({"volFormat": "RAW", "size": "16777216"}),
    );
    d.create_volume(
        &sp,
        &sd1,
        &img,
        &top,
        json!({"srcImgUUID": img, "srcVolUUID": base, "size": "16777216"}),
    );
    qemu_io(&dir(&sd1, &img).join(&base), "raw", "write -P 0x11 0 1M");
    qemu_io(&dir(&sd1, &img).join(&top), "qcow2", "write -P 0x22 8M 1M");
    d.job_ok(
        "SDM.add_bitmap",
        json!({"vol_info": {"sd_id": sd1, "img_id": img, "vol_id": top}, "bitmap": "b"}),
    );
    let before = d.data().join("before.raw");
    flatten(&dir(&sd1, &img).join(&top), &before);
    let mv = |img: &str, from: &str, to: &str, op: &str| {
        d.call(
            "Image.move",
            json!({"imageID": img, "storagepoolID": sp, "storagedomainID": from, "dstSdUUID": to,
                   "operation": op, "postZero": false, "force": false}),
        )
    };

    // COPY: both domains hold the image; the copy is the same chain.
    let t = mv(&img, &sd1, &sd2, "COPY");
    d.task_ok(&t);
    same_contents(&dir(&sd2, &img).join(&top), "qcow2", &before, "raw");
    same_contents(&dir(&sd1, &img).join(&top), "qcow2", &before, "raw");
    let copy = d.volume_info(&sp, &sd2, &img, &top);
    assert_eq!(
        (
            copy["domain"].as_str(),
            copy["parent"].as_str(),
            copy["status"].as_str()
        ),
        (Some(sd2.as_str()), Some(base.as_str()), Some("OK")),
        "{copy}"
    );
    let qi = d.call(
        "Volume.getQemuImageInfo",
        json!({"volumeID": top, "storagepoolID": sp, "storagedomainID": sd2, "imageID": img}),
    );
    assert_eq!(qi["bitmaps"][0]["name"], "b", "bitmaps travel: {qi}");
    let (code, _) = d.call_err(
        "Image.move",
        json!({"imageID": img, "storagepoolID": sp, "storagedomainID": sd1, "dstSdUUID": sd2, "operation": "COPY", "postZero": false, "force": false}),
    );
    assert_eq!(code, 1000, "already there");

    // MOVE (of the copy, back would collide; move a second image).
    let (img2, vol2) = d.new_image(&sp, &sd1, json!({"size": "4194304"}));
    qemu_io(
        &dir(&sd1, &img2).join(&vol2),
        "qcow2",
        "write -P 0x33 0 64k",
    );
    let prepare =
        json!({"storagepoolID": sp, "storagedomainID": sd1, "imageID": img2, "volumeID": vol2});
    d.call("Image.prepare", prepare.clone());
    let (code, _) = d.call_err(
        "Image.move",
        json!({"imageID": img2, "storagepoolID": sp, "storagedomainID": sd1, "dstSdUUID": sd2, "operation": 2, "postZero": false, "force": false}),
    );
    assert_eq!(code, 1000, "a prepared image is not moved");
    d.call("Image.teardown", prepare);
    let t = mv(&img2, &sd1, &sd2, "MOVE");
    d.task_ok(&t);
    assert!(!dir(&sd1, &img2).exists());
    qemu_io(&dir(&sd2, &img2).join(&vol2), "qcow2", "read -P 0x33 0 64k");

    // A clone moves only where its template already is.
    let (timg, tvol, cimg, cvol) = (uuid(), uuid(), uuid(), uuid());
    d.create_volume(&sp, &sd1, &timg, &tvol, json!({"size": "4194304"}));
    d.make_template(&sd1, &timg, &tvol);
    d.create_volume(
        &sp,
        &sd1,
        &cimg,
        &cvol,
        json!({"srcImgUUID": timg, "srcVolUUID": tvol, "size": "4194304"}),
    );
    let (code, msg) = d.call_err(
        "Image.move",
        json!({"imageID": cimg, "storagepoolID": sp, "storagedomainID": sd1, "dstSdUUID": sd2, "operation": "MOVE", "postZero": false, "force": false}),
    );
    assert_eq!(code, 1000, "{msg}");
    let (code, _) = d.call_err(
        "Image.move",
        json!({"imageID": timg, "storagepoolID": sp, "storagedomainID": sd1, "dstSdUUID": sd2, "operation": "MOVE", "postZero": false, "force": false}),
    );
    assert_eq!(code, 223, "a template in use stays");
    d.task_ok(&mv(&timg, &sd1, &sd2, "COPY"));
    d.task_ok(&mv(&cimg, &sd1, &sd2, "MOVE"));
    let links = std::os::unix::fs::MetadataExt::nlink(
        &std::fs::metadata(dir(&sd2, &timg).join(&tvol)).unwrap(),
    );
    assert_eq!(links, 2, "the template is linked into the moved clone");
    assert_eq!(d.volume_info(&sp, &sd2, &cimg, &cvol)["status"], "OK");
    let (code, _) = d.call_err(
        "Image.move",
        json!({"imageID": uuid(), "storagepoolID": sp, "storagedomainID": sd1, "dstSdUUID": sd2, "operation": "COPY", "postZero": false, "force": false}),
    );
    assert_eq!(code, 268);
    let (code, _) = d.call_err(
        "Image.move",
        json!({"imageID": img, "storagepoolID": sp, "storagedomainID": sd1, "dstSdUUID": sd1, "operation": "COPY", "postZero": false, "force": false}),
    );
    assert_eq!(code, 1000);
    for sd in [&sd1, &sd2] {
        vdsm_check(&d.domain_dir(sd));
    }
}

#[test]
fn snapshots_take_their_parents_bitmaps_and_new_ones() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let (img, base, snap) = (uuid(), uuid(), uuid());
    d.create_volume(&sp, &sd, &img, &base, json!({"size": "8388608"}));
    d.job_ok(
        "SDM.add_bitmap",
        json!({"vol_info": {"sd_id": sd, "img_id": img, "vol_id": base}, "bitmap": "full-1"}),
    );
    let backup = uuid();
    d.create_volume(
        &sp,
        &sd,
        &img,
        &snap,
        json!({"srcImgUUID": img, "srcVolUUID": base, "size": "8388608", "addBitmaps": true, "bitmap": backup}),
    );
    let mut want = vec!["full-1".to_string(), backup.clone()];
    want.sort();
    assert_eq!(d.bitmaps(&sp, &sd, &img, &snap), want);

    // Refused: bitmaps from a RAW parent, in a RAW volume, on a new base.
    let (rimg, rvol) = d.new_image(&sp, &sd, json!({"volFormat": "RAW", "size": "8388608"}));
    let refuse = |img: &str, extra: Value| {
        let (code, msg) = d.call_err(
            "Volume.create",
            volume_params(&sp, &sd, img, &uuid(), extra),
        );
        assert_eq!(code, 1000, "{msg}");
    };
    refuse(
        &rimg,
        json!({"srcImgUUID": rimg, "srcVolUUID": rvol, "size": "8388608", "addBitmaps": true}),
    );
    refuse(
        &uuid(),
        json!({"volFormat": "RAW", "size": "8388608", "bitmap": uuid()}),
    );
    refuse(&uuid(), json!({"size": "8388608", "addBitmaps": true}));
    refuse(&uuid(), json!({"size": "8388608", "bitmap": "not-a-uuid"}));
}
