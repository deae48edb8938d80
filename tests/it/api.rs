//! End-to-end behaviour of the JSON-RPC verbs against a running cairnd.

use serde_json::{json, Value};

use crate::common::*;

#[test]
fn seed_walkthrough_over_json_rpc() {
    // The seed's flow, with the wire forms VDSM receives (id=1, connection=path).
    let d = Daemon::start_bare();
    let storage = d.data().join("walkthrough");
    std::fs::create_dir(&storage).unwrap();
    let path = storage.to_str().unwrap();
    let (sp, sd, img, vol) = (uuid(), uuid(), uuid(), uuid());

    let st = d.call(
        "StoragePool.connectStorageServer",
        json!({"storagepoolID": BLANK, "domainType": 4, "connectionParams": [{"id": 1, "connection": path}]}),
    );
    assert_eq!(st, json!([{"id": 1, "status": 0}]));
    assert_eq!(
        d.call(
            "StorageDomain.create",
            json!({"storagedomainID": sd, "domainType": "LOCALFS", "typeArgs": path, "name": "my local domain", "domainClass": 1, "version": 5}),
        ),
        json!(true)
    );
    d.call(
        "StoragePool.create",
        json!({"storagepoolID": sp, "name": "pool name", "masterSdUUID": sd, "masterVersion": 1, "domainList": [sd],
               "lockRenewalIntervalSec": 0, "leaseTimeSec": 0, "ioOpTimeoutSec": 0, "leaseRetries": 0}),
    );
    d.call("StoragePool.connect", json!({"storagepoolID": sp, "hostID": 1, "scsiKey": "scsikey", "masterSdUUID": sd, "masterVersion": 1}));
    d.spm_start(&sp);
    assert_eq!(
        d.call("StoragePool.getSpmStatus", json!({"storagepoolID": sp})),
        json!({"spmId": 1, "spmStatus": "SPM", "spmLver": 1})
    );

    // Positional parameters, in schema order, with integer enum ids.
    let t = d.call(
        "Volume.create",
        json!([
            vol,
            sp,
            sd,
            img,
            (10u64 << 30).to_string(),
            4,
            2,
            "DATA",
            "volly",
            BLANK,
            BLANK
        ]),
    );
    let st = d.wait_task(&t);
    assert_eq!(st["taskState"], "finished");
    assert_eq!(st["taskResult"], "success");
    assert_eq!(st["message"], "1 jobs completed successfully");
    d.call("Task.clear", json!({"taskID": t}));
    assert_eq!(d.call_err("Task.getStatus", json!({"taskID": t})).0, 401);

    let info = d.volume_info(&sp, &sd, &img, &vol);
    for key in [
        "disktype",
        "status",
        "pool",
        "capacity",
        "parent",
        "allocType",
        "children",
        "mtime",
        "description",
        "legality",
        "ctime",
        "voltype",
        "truesize",
        "uuid",
        "domain",
        "apparentsize",
        "format",
        "image",
        "lease",
        "generation",
    ] {
        assert!(
            info.get(key).is_some(),
            "Volume.getInfo lacks {key}: {info}"
        );
    }
    assert_eq!(info["capacity"], json!(10u64 << 30));
    assert_eq!(info["format"], "COW");
    assert_eq!(info["allocType"], "SPARSE");
    assert_eq!(info["voltype"], "LEAF");
    assert_eq!(info["legality"], "LEGAL");
    assert_eq!(info["status"], "OK");
    assert_eq!(info["description"], "volly");

    // The data file is a valid qcow2 (compat 1.1) of the right size.
    let file = d.domain_dir(&sd).join("images").join(&img).join(&vol);
    let qi = qemu_img_json(&[
        "info",
        "--output",
        "json",
        "-f",
        "qcow2",
        file.to_str().unwrap(),
    ]);
    assert_eq!(qi["virtual-size"], json!(10u64 << 30));
    assert_eq!(qi["format-specific"]["data"]["compat"], "1.1");
    let check = qemu_img_json(&[
        "check",
        "--output",
        "json",
        "-f",
        "qcow2",
        file.to_str().unwrap(),
    ]);
    assert_eq!(check["check-errors"], 0);

    let dominfo = d.call("StorageDomain.getInfo", json!({"storagedomainID": sd}));
    assert_eq!(dominfo["role"], "Master");
    assert_eq!(dominfo["version"], 5);
    assert_eq!(dominfo["type"], "LOCALFS");
    assert_eq!(dominfo["class"], "Data");
    assert_eq!(dominfo["pool"], json!([sp]));
    assert_eq!(dominfo["spm_id"], 1);
    assert_eq!(dominfo["block_size"], 512);
    assert_eq!(dominfo["alignment"], 1048576);

    let pool = d.call("StoragePool.getInfo", json!({"storagepoolID": sp}));
    assert_eq!(pool["info"]["master_uuid"], json!(sd));
    assert_eq!(pool["info"]["domains"], json!(format!("{sd}:Active")));
    assert_eq!(pool["info"]["spm_id"], 1);
    assert_eq!(pool["dominfo"][&sd]["status"], "Active");
    assert!(pool["dominfo"][&sd]["diskfree"].is_string());
}

#[test]
fn embedded_default_is_ready_and_survives_restart() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    assert_eq!(
        d.call("StoragePool.getSpmStatus", json!({"storagepoolID": sp}))["spmStatus"],
        "SPM"
    );
    let (img, vol) = d.new_image(&sp, &sd, json!({}));
    let dir = d.stop(false);
    let d = Daemon::start_in(dir, Opts::default());
    assert_eq!(
        d.embedded(),
        (sp.clone(), sd.clone()),
        "same pool after restart"
    );
    assert_eq!(
        d.call("StoragePool.getSpmStatus", json!({"storagepoolID": sp}))["spmStatus"],
        "SPM"
    );
    assert_eq!(d.image_volumes(&sp, &sd, &img), json!([vol]));
    // A crash (kill -9) releases the flock lease: SPM comes back too.
    let dir = d.stop(true);
    let d = Daemon::start_in(dir, Opts::default());
    assert_eq!(
        d.call("StoragePool.getSpmStatus", json!({"storagepoolID": sp}))["spmStatus"],
        "SPM"
    );
}

#[test]
fn snapshots_chain_and_delete() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let (img, base, top) = (uuid(), uuid(), uuid());
    d.create_volume(
        &sp,
        &sd,
        &img,
        &base,
        json!({"volFormat": "RAW", "preallocate": "SPARSE"}),
    );
    d.create_volume(
        &sp,
        &sd,
        &img,
        &top,
        json!({"srcImgUUID": img, "srcVolUUID": base}),
    );

    let vi = |v: &str| d.volume_info(&sp, &sd, &img, v);
    assert_eq!(vi(&base)["voltype"], "INTERNAL");
    assert_eq!(vi(&top)["voltype"], "LEAF");
    assert_eq!(vi(&top)["parent"], json!(base));

    // qemu sees the chain: top is backed by base (raw), by relative name.
    let top_path = d.domain_dir(&sd).join("images").join(&img).join(&top);
    let qi = qemu_img_json(&[
        "info",
        "--output",
        "json",
        "-f",
        "qcow2",
        top_path.to_str().unwrap(),
    ]);
    assert_eq!(qi["backing-filename"], json!(base));
    assert_eq!(qi["backing-filename-format"], "raw");
    let chain = qemu_img_json(&[
        "info",
        "--output",
        "json",
        "--backing-chain",
        "-f",
        "qcow2",
        top_path.to_str().unwrap(),
    ]);
    assert_eq!(chain.as_array().unwrap().len(), 2);

    // The base has a child: it cannot go first (refused before any task).
    let (code, msg) = d.call_err(
        "Volume.delete",
        json!({"volumeID": base, "storagepoolID": sp, "storagedomainID": sd, "imageID": img, "postZero": false, "force": false}),
    );
    assert_eq!(code, 204, "{msg}");

    // Snapshot of a snapshot's parent (not the leaf) is refused.
    let (code, _) = d.call_err(
        "Volume.create",
        volume_params(
            &sp,
            &sd,
            &img,
            &uuid(),
            json!({"srcImgUUID": img, "srcVolUUID": base}),
        ),
    );
    assert_eq!(code, 1000);

    // Delete the top: the base becomes the leaf again.
    let t = d.call("Volume.delete", json!({"volumeID": top, "storagepoolID": sp, "storagedomainID": sd, "imageID": img, "postZero": false, "force": false}));
    d.task_ok(&t);
    assert_eq!(vi(&base)["voltype"], "LEAF");
    assert_eq!(d.image_volumes(&sp, &sd, &img), json!([base]));
    let files: Vec<String> = std::fs::read_dir(d.domain_dir(&sd).join("images").join(&img))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        files.len(),
        3,
        "only the base's data, meta and lease remain: {files:?}"
    );
}

#[test]
fn image_delete_prepare_teardown() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let (img, v1, v2) = d.base_and_snapshot(&sp, &sd, json!({}));
    assert_eq!(
        d.call("StorageDomain.getImages", json!({"storagedomainID": sd})),
        json!([img])
    );
    let mut vols = vec![v1.clone(), v2.clone()];
    vols.sort();
    assert_eq!(
        d.call(
            "StorageDomain.getVolumes",
            json!({"storagedomainID": sd, "storagepoolID": sp, "imageID": img})
        ),
        json!(vols)
    );

    let prepared = d.call(
        "Image.prepare",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": v2}),
    );
    let path = prepared["path"].as_str().unwrap().to_string();
    assert!(path.ends_with(&format!("{img}/{v2}")), "{path}");
    // The path is what a VM opens: qemu follows the chain from it.
    let chain = qemu_img_json(&["info", "--output", "json", "--backing-chain", "-U", &path]);
    assert_eq!(chain.as_array().unwrap().len(), 2);
    d.call(
        "Image.teardown",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img}),
    );
    assert!(!std::path::Path::new(&path).exists());

    // An illegal volume in the chain cannot be prepared unless asked.
    d.call("Volume.setLegality", json!({"volumeID": v1, "storagepoolID": sp, "storagedomainID": sd, "imageID": img, "legality": "ILLEGAL"}));
    let (code, _) = d.call_err(
        "Image.prepare",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": v2}),
    );
    assert_eq!(code, 227);
    d.call("Image.prepare", json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": v2, "allowIllegal": true}));
    d.call("Volume.setLegality", json!({"volumeID": v1, "storagepoolID": sp, "storagedomainID": sd, "imageID": img, "legality": "LEGAL"}));

    let t = d.call("Image.delete", json!({"imageID": img, "storagepoolID": sp, "storagedomainID": sd, "postZero": false, "force": false}));
    d.task_ok(&t);
    assert_eq!(
        d.call("StorageDomain.getImages", json!({"storagedomainID": sd})),
        json!([])
    );
    let images = d.domain_dir(&sd).join("images");
    assert_eq!(
        std::fs::read_dir(images).unwrap().count(),
        0,
        "no _remove_me_ leftover"
    );
    let (code, _) = d.call_err(
        "Image.getVolumes",
        json!({"imageID": img, "storagepoolID": sp, "storagedomainID": sd}),
    );
    assert_eq!(code, 268);
}

#[test]
fn volume_formats_and_sizes() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let cases = [
        ("RAW", "SPARSE"),
        ("RAW", "PREALLOCATED"),
        ("COW", "SPARSE"),
        ("COW", "PREALLOCATED"),
    ];
    for (fmt, alloc) in cases {
        let (img, vol) = d.new_image(
            &sp,
            &sd,
            json!({"volFormat": fmt, "preallocate": alloc, "size": (64u64 << 20).to_string()}),
        );
        let size = d.call(
            "Volume.getSize",
            json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img}),
        );
        let path = d.domain_dir(&sd).join("images").join(&img).join(&vol);
        let qfmt = if fmt == "RAW" { "raw" } else { "qcow2" };
        let qi = qemu_img_json(&[
            "info",
            "--output",
            "json",
            "-f",
            qfmt,
            path.to_str().unwrap(),
        ]);
        assert_eq!(qi["virtual-size"], json!(64u64 << 20), "{fmt}/{alloc}");
        let truesize = size["truesize"].as_u64().unwrap();
        if alloc == "PREALLOCATED" {
            assert!(
                truesize >= 64 << 20,
                "{fmt}/{alloc} should be allocated, has {truesize}"
            );
        } else {
            assert!(
                truesize < 1 << 20,
                "{fmt}/{alloc} should be sparse, has {truesize}"
            );
        }
        if qfmt == "qcow2" {
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
        }
    }
}

#[test]
fn dump_lists_every_volume_with_metadata() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let mut made = Vec::new();
    for _ in 0..5 {
        let (img, vol) = d.new_image(&sp, &sd, json!({}));
        made.push((img, vol));
    }
    let dump = d.call("StorageDomain.dump", json!({"sd_id": sd}));
    assert_eq!(dump["metadata"]["uuid"], json!(sd));
    let vols = dump["volumes"].as_object().unwrap();
    assert_eq!(vols.len(), 5);
    for (img, vol) in &made {
        let v = &vols[vol];
        assert_eq!(v["image"], json!(img));
        assert_eq!(v["status"], "OK");
        assert_eq!(v["format"], "COW");
        assert_eq!(v["capacity"], json!(1u64 << 30));
        assert!(v["apparentsize"].as_u64().unwrap() > 0);
    }
    // A full dump adds the external leases index (empty); LOCALFS has no
    // sanlock lease areas to dump.
    let full = d.call("StorageDomain.dump", json!({"sd_id": sd, "full": true}));
    assert_eq!(full["xleases"], json!({}), "{full}");
    assert!(full.get("leases").is_none() && full.get("lockspace").is_none());
    assert_eq!(full["volumes"], dump["volumes"]);
}

#[test]
fn tasks_listing_info_and_stop() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let (img, vol) = (uuid(), uuid());
    let t = d.call(
        "Volume.create",
        volume_params(&sp, &sd, &img, &vol, json!({})),
    );
    let info = d.call("Task.getInfo", json!({"taskID": t}));
    assert_eq!(info, json!({"id": t, "verb": "createVolume"}));
    d.wait_task(&t);
    let all = d.call("Host.getAllTasksStatuses", json!({}));
    assert_eq!(all[t.as_str().unwrap()]["taskResult"], "success");
    let infos = d.call("Host.getAllTasksInfo", json!({}));
    assert_eq!(infos[t.as_str().unwrap()]["verb"], "createVolume");
    // Stopping a finished task is harmless; clearing it forgets it.
    d.call("Task.stop", json!({"taskID": t}));
    d.call("Task.clear", json!({"taskID": t}));
    assert_eq!(d.call("Host.getAllTasksStatuses", json!({})), json!({}));
    assert_eq!(d.call_err("Task.clear", json!({"taskID": t})).0, 401);
}

#[test]
fn spm_stop_and_non_spm_errors() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    d.call("StoragePool.spmStop", json!({"storagepoolID": sp}));
    let st = d.call("StoragePool.getSpmStatus", json!({"storagepoolID": sp}));
    assert_eq!(st["spmStatus"], "Free");
    assert_eq!(st["spmId"], -1);
    let (code, msg) = d.call_err(
        "Volume.create",
        volume_params(&sp, &sd, &uuid(), &uuid(), json!({})),
    );
    assert_eq!(code, 654, "{msg}");
    d.spm_start(&sp);
    let st = d.call("StoragePool.getSpmStatus", json!({"storagepoolID": sp}));
    assert_eq!(
        (st["spmStatus"].as_str(), st["spmLver"].as_i64()),
        (Some("SPM"), Some(2))
    );
}

#[test]
fn second_domain_format_and_host_listing() {
    let d = Daemon::start();
    let (sp, master) = d.embedded();
    let dir = d.data().join("second");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.to_str().unwrap();
    d.call("StoragePool.connectStorageServer", json!({"storagepoolID": BLANK, "domainType": "LOCALFS", "connectionParams": [{"id": "c2", "path": path}]}));
    let sd = uuid();
    d.call("StorageDomain.create", json!({"storagedomainID": sd, "domainType": "LOCALFS", "typeArgs": {"remotePath": path}, "name": "second", "domainClass": "Data", "version": 4}));
    let info = d.call("StorageDomain.getInfo", json!({"storagedomainID": sd}));
    assert_eq!(info["version"], 4);
    assert_eq!(info["role"], "Regular");
    assert_eq!(info["pool"], json!([]));
    let mut all = vec![master.clone(), sd.clone()];
    all.sort();
    assert_eq!(d.call("Host.getStorageDomains", json!({})), json!(all));
    assert_eq!(
        d.call("Host.getStorageDomains", json!({"storagepoolID": sp})),
        json!([master])
    );
    assert_eq!(
        d.call("Host.getStorageDomains", json!({"remotePath": path})),
        json!([sd])
    );
    let stats = d.call("StorageDomain.getStats", json!({"storagedomainID": sd}));
    assert!(stats["disktotal"].as_u64().unwrap() >= stats["diskfree"].as_u64().unwrap());

    // Not in the pool: SPM verbs refuse it.
    let (code, _) = d.call_err(
        "Volume.create",
        volume_params(&sp, &sd, &uuid(), &uuid(), json!({})),
    );
    assert_eq!(code, 353);

    // The master of the connected pool cannot be formatted; the free one can.
    assert_eq!(
        d.call_err(
            "StorageDomain.format",
            json!({"storagedomainID": master, "autoDetach": true})
        )
        .0,
        391
    );
    d.call(
        "StorageDomain.format",
        json!({"storagedomainID": sd, "autoDetach": false}),
    );
    assert_eq!(
        d.call_err("StorageDomain.getInfo", json!({"storagedomainID": sd}))
            .0,
        358
    );
    assert!(
        tree(&dir).is_empty(),
        "format leaves nothing: {:?}",
        tree(&dir)
    );

    let st = d.call("StoragePool.disconnectStorageServer", json!({"storagepoolID": BLANK, "domainType": "LOCALFS", "connectionParams": [{"id": "c2", "path": path}]}));
    assert_eq!(st, json!([{"id": "c2", "status": 0}]));
}

#[test]
fn batch_and_notifications() {
    let d = Daemon::start();
    let reply = d
        .client
        .post(r#"[{"jsonrpc":"2.0","id":1,"method":"Host.getConnectedStoragePools"},{"jsonrpc":"2.0","method":"Host.getConnectedStoragePools"},{"jsonrpc":"2.0","id":"x","method":"No.such"}]"#)
        .unwrap();
    let v: Value = serde_json::from_str(&reply).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2, "the notification gets no reply: {v}");
    assert_eq!(arr[0]["id"], 1);
    assert!(arr[0]["result"].is_array());
    assert_eq!(arr[1]["error"]["code"], -32601);
    // A lone notification: HTTP 204, empty body.
    assert_eq!(
        d.client
            .post(r#"{"jsonrpc":"2.0","method":"Host.getConnectedStoragePools"}"#)
            .unwrap(),
        ""
    );
}

#[test]
fn headers_that_disagree_with_metadata_are_invalid() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let (img, base, top) = d.base_and_snapshot(&sp, &sd, json!({}));
    let top_path = d.domain_dir(&sd).join("images").join(&img).join(&top);
    // A guest-controlled or tampered header pointing outside the chain.
    let st = std::process::Command::new("qemu-img")
        .args([
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-b",
            "/etc/passwd",
            "-F",
            "raw",
        ])
        .arg(&top_path)
        .status()
        .unwrap();
    assert!(st.success());
    let info = d.volume_info(&sp, &sd, &img, &top);
    assert_eq!(info["status"], "INVALID");
    let dump = d.call("StorageDomain.dump", json!({"sd_id": sd}));
    assert_eq!(dump["volumes"][&top]["status"], "INVALID");
    assert_eq!(dump["volumes"][&base]["status"], "OK");
    let (code, msg) = d.call_err(
        "Image.prepare",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": top}),
    );
    assert_eq!(code, 262, "{msg}");
    assert!(msg.contains("/etc/passwd"), "{msg}");
    assert!(
        !d.data().join("run/storage").join(&sd).join(&img).exists(),
        "nothing prepared"
    );
}

#[test]
fn four_k_domains_and_alignment() {
    let d = Daemon::start_bare();
    let dir = d.local_storage("4k");
    let path = dir.to_str().unwrap();
    for (hosts, alignment) in [
        (250, 1u64 << 20),
        (500, 2 << 20),
        (1000, 4 << 20),
        (2000, 8 << 20),
    ] {
        let sd = uuid();
        d.call("StorageDomain.create", json!({"storagedomainID": sd, "domainType": 4, "typeArgs": path, "name": "4k", "domainClass": 1, "blockSize": 4096, "maxHosts": hosts}));
        let info = d.call("StorageDomain.getInfo", json!({"storagedomainID": sd}));
        assert_eq!(info["block_size"], 4096);
        assert_eq!(info["alignment"], json!(alignment), "{hosts} hosts");
        let md = std::fs::read_to_string(dir.join(&sd).join("dom_md/metadata")).unwrap();
        assert!(
            md.contains("BLOCK_SIZE=4096\n") && md.contains(&format!("ALIGNMENT={alignment}\n")),
            "{md}"
        );
    }
}

#[test]
fn update_volume_is_fenced_by_generation() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let (img, vol) = d.new_image(&sp, &sd, json!({}));
    let info = || d.volume_info(&sp, &sd, &img, &vol);
    let target = |generation: Option<u32>| {
        let mut t = json!({"sd_id": sd, "img_id": img, "vol_id": vol});
        if let Some(g) = generation {
            t["generation"] = json!(g);
        }
        t
    };
    let wait_job = |job: &str| d.wait_job(job);
    assert_eq!(info()["generation"], 0);

    let job = uuid();
    d.call(
        "SDM.update_volume",
        json!({"job_id": job, "vol_info": target(Some(0)), "vol_attr": {"description": "renamed"}}),
    );
    let j = wait_job(&job);
    assert_eq!(j["status"], "done", "{j}");
    assert_eq!(j["job_type"], "storage");
    assert_eq!(j["description"], "update_volume");
    let i = info();
    assert_eq!(
        (
            i["description"].as_str(),
            i["generation"].as_u64(),
            i["legality"].as_str()
        ),
        (Some("renamed"), Some(1), Some("LEGAL"))
    );

    // A stale generation is refused and changes nothing.
    let (code, msg) = d.call_err(
        "SDM.update_volume",
        json!({"job_id": uuid(), "vol_info": target(Some(0)), "vol_attr": {"description": "x"}}),
    );
    assert_eq!(code, 911, "{msg}");
    assert_eq!(info()["description"], "renamed");
    // The same job id twice is refused.
    let (code, _) = d.call_err(
        "SDM.update_volume",
        json!({"job_id": job, "vol_info": target(None), "vol_attr": {"description": "x"}}),
    );
    assert_eq!(code, 69);
    // Bad attributes.
    assert_eq!(
        d.call_err(
            "SDM.update_volume",
            json!({"job_id": uuid(), "vol_info": target(None), "vol_attr": {}})
        )
        .0,
        1000
    );
    assert_eq!(
        d.call_err(
            "SDM.update_volume",
            json!({"job_id": uuid(), "vol_info": target(None), "vol_attr": {"colour": "red"}})
        )
        .0,
        -32602
    );
    assert_eq!(
        d.call_err(
            "SDM.update_volume",
            json!({"job_id": uuid(), "vol_info": target(None), "vol_attr": {"type": "LEAF"}})
        )
        .0,
        1000
    );

    // An explicit generation, legality, and making a template.
    let job2 = uuid();
    d.call("SDM.update_volume", json!({"job_id": job2, "vol_info": target(Some(1)), "vol_attr": {"generation": 7, "type": "SHARED", "legality": "LEGAL"}}));
    assert_eq!(wait_job(&job2)["status"], "done");
    let i = info();
    assert_eq!(
        (i["generation"].as_u64(), i["voltype"].as_str()),
        (Some(7), Some("SHARED"))
    );
    let (code, _) = d.call_err("Volume.delete", json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img, "postZero": false, "force": false}));
    assert_eq!(code, 223, "a template needs force");

    // Job results survive a restart.
    let d = Daemon::start_in(d.stop(false), Opts::default());
    let jobs = d.call("Host.getJobs", json!({}));
    assert_eq!(jobs[&job]["status"], "done");
    assert_eq!(jobs[&job2]["status"], "done");
    assert_eq!(
        d.call("Host.getJobs", json!({"job_type": "v2v"})),
        json!({})
    );
}

#[test]
fn task_revert_undoes_a_create_when_nothing_builds_on_it() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let (img, base, top) = (uuid(), uuid(), uuid());
    let t = d.call(
        "Volume.create",
        volume_params(&sp, &sd, &img, &base, json!({})),
    );
    d.wait_task(&t);
    // The base has a snapshot on top: reverting its creation is refused.
    let t2 = d.call(
        "Volume.create",
        volume_params(
            &sp,
            &sd,
            &img,
            &top,
            json!({"srcImgUUID": img, "srcVolUUID": base}),
        ),
    );
    d.wait_task(&t2);
    let (code, msg) = d.call_err("Task.revert", json!({"taskID": t}));
    assert_eq!(code, 410, "{msg}");
    // Reverting the snapshot removes it and makes the base the leaf again.
    d.call("Task.revert", json!({"taskID": t2}));
    let st = d.call("Task.getStatus", json!({"taskID": t2}));
    assert_eq!(st["taskResult"], "cleanSuccess");
    assert!(st["message"].as_str().unwrap().contains("reverted"));
    assert_eq!(d.image_volumes(&sp, &sd, &img), json!([base]));
    let info = d.volume_info(&sp, &sd, &img, &base);
    assert_eq!(info["voltype"], "LEAF");
    // Reverting twice is harmless; now the base can go too, image and all.
    d.call("Task.revert", json!({"taskID": t2}));
    d.call("Task.revert", json!({"taskID": t}));
    assert_eq!(
        d.call("StorageDomain.getImages", json!({"storagedomainID": sd})),
        json!([])
    );
    // Deletes cannot be reverted.
    let (img2, vol2) = d.new_image(&sp, &sd, json!({}));
    let t3 = d.call("Volume.delete", json!({"volumeID": vol2, "storagepoolID": sp, "storagedomainID": sd, "imageID": img2, "postZero": false, "force": false}));
    d.wait_task(&t3);
    assert_eq!(d.call_err("Task.revert", json!({"taskID": t3})).0, 410);
    vdsm_check(&d.domain_dir(&sd));
}

#[test]
fn extend_measure_and_qemu_info() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let ids = |img: &str, vol: &str| json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img});
    let (img, base, top) = (uuid(), uuid(), uuid());
    d.create_volume(&sp, &sd, &img, &base, json!({"volFormat": "RAW", "preallocate": "PREALLOCATED", "size": (8u64 << 20).to_string()}));
    d.create_volume(
        &sp,
        &sd,
        &img,
        &top,
        json!({"srcImgUUID": img, "srcVolUUID": base, "size": (8u64 << 20).to_string()}),
    );

    let qi = d.call("Volume.getQemuImageInfo", ids(&img, &top));
    assert_eq!(qi["format"], "qcow2");
    assert_eq!(qi["virtualsize"], json!(8u64 << 20));
    assert_eq!(qi["backingfile"], json!(base));
    assert_eq!(qi["compat"], "1.1");
    assert_eq!(qi["clustersize"], 65536);
    assert_eq!(qi["bitmaps"], json!([]));
    assert_eq!(
        d.call("Volume.getQemuImageInfo", ids(&img, &base))["format"],
        "raw"
    );

    // Guest data in the base only.
    let base_path = d.domain_dir(&sd).join("images").join(&img).join(&base);
    qemu_io(&base_path, "raw", "write -P 0x55 0 4M");

    // Measure the leaf alone, down to its parent, and the whole chain.
    let mut m = ids(&img, &top);
    m["dstVolFormat"] = json!("RAW");
    assert_eq!(
        d.call("Volume.measure", m.clone())["required"],
        json!(8u64 << 20)
    );
    m["dstVolFormat"] = json!("COW");
    m["backing_chain"] = json!(false);
    let alone = d.call("Volume.measure", m.clone())["required"]
        .as_u64()
        .unwrap();
    m["backing_chain"] = json!(true);
    m["baseID"] = json!(base);
    let chain = d.call("Volume.measure", m.clone())["required"]
        .as_u64()
        .unwrap();
    assert!(
        alone < 1 << 20 && chain >= 4 << 20,
        "alone {alone}, chain {chain}"
    );
    m["baseID"] = json!(uuid());
    assert_eq!(d.call_err("Volume.measure", m).0, 1000);

    // Extend: both formats; the generation moves on; smaller is refused.
    for vol in [&top, &base] {
        let mut p = ids(&img, vol);
        p["newSize"] = json!((16u64 << 20).to_string());
        let t = d.call("Volume.extendSize", p);
        d.task_ok(&t);
        let info = d.call("Volume.getInfo", ids(&img, vol));
        assert_eq!(
            (
                info["capacity"].as_u64(),
                info["generation"].as_u64(),
                info["status"].as_str()
            ),
            (Some(16 << 20), Some(1), Some("OK"))
        );
        assert_eq!(
            d.call("Volume.getQemuImageInfo", ids(&img, vol))["virtualsize"],
            json!(16u64 << 20)
        );
    }
    let truesize = d.call("Volume.getSize", ids(&img, &base))["truesize"]
        .as_u64()
        .unwrap();
    assert!(
        truesize >= 16 << 20,
        "a preallocated volume stays preallocated: {truesize}"
    );
    let mut p = ids(&img, &top);
    p["newSize"] = json!((4u64 << 20).to_string());
    let (code, msg) = d.call_err("Volume.extendSize", p.clone());
    assert_eq!(code, 232, "{msg}");
    p["newSize"] = json!("1000");
    assert_eq!(d.call_err("Volume.extendSize", p).0, 1000);
    vdsm_check(&d.domain_dir(&sd));
}

#[test]
fn templates_and_thin_clones() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let (timg, tvol) = d.new_image(
        &sp,
        &sd,
        json!({"size": (8u64 << 20).to_string(), "desc": "golden"}),
    );
    // Only a template can be cloned into another image.
    let (code, _) = d.call_err(
        "Volume.create",
        volume_params(
            &sp,
            &sd,
            &uuid(),
            &uuid(),
            json!({"srcImgUUID": timg, "srcVolUUID": tvol, "size": (8u64 << 20).to_string()}),
        ),
    );
    assert_eq!(code, 1000);
    d.make_template(&sd, &timg, &tvol);

    // Two thin clones in new images.
    let clones: Vec<(String, String)> = (0..2).map(|_| (uuid(), uuid())).collect();
    for (img, vol) in &clones {
        d.create_volume(
            &sp,
            &sd,
            img,
            vol,
            json!({"srcImgUUID": timg, "srcVolUUID": tvol, "size": (8u64 << 20).to_string()}),
        );
        assert_eq!(d.image_volumes(&sp, &sd, img), json!([vol]));
        let info = d.volume_info(&sp, &sd, img, vol);
        assert_eq!(
            (info["parent"].as_str(), info["voltype"].as_str()),
            (Some(tvol.as_str()), Some("LEAF"))
        );
        let path = d.call(
            "Image.prepare",
            json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": img, "volumeID": vol}),
        )["path"]
            .as_str()
            .unwrap()
            .to_string();
        let chain = qemu_img_json(&["info", "--output", "json", "--backing-chain", "-U", &path]);
        assert_eq!(chain.as_array().unwrap().len(), 2, "clone -> template");
    }
    let tinfo = d.volume_info(&sp, &sd, &timg, &tvol);
    assert_eq!(tinfo["voltype"], "SHARED", "a template stays SHARED");
    let dump = d.call("StorageDomain.dump", json!({"sd_id": sd}));
    assert_eq!(
        dump["volumes"].as_object().unwrap().len(),
        3,
        "the template is listed once: {dump}"
    );
    vdsm_check(&d.domain_dir(&sd));

    // In use: neither the template nor its image can go.
    let del_t = json!({"volumeID": tvol, "storagepoolID": sp, "storagedomainID": sd, "imageID": timg, "postZero": false, "force": true});
    let (code, msg) = d.call_err("Volume.delete", del_t.clone());
    assert_eq!(code, 223, "{msg}");
    assert!(msg.contains("2 other image"), "{msg}");
    assert_eq!(d.call_err("Image.delete", json!({"imageID": timg, "storagepoolID": sp, "storagedomainID": sd, "postZero": false, "force": false})).0, 223);
    // Nor through a clone's image, where it is only linked.
    let (img0, _) = &clones[0];
    let (code, _) = d.call_err("Volume.delete", json!({"volumeID": tvol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img0, "postZero": false, "force": true}));
    assert_eq!(code, 1000);

    // Deleting the clones frees the template; then it can be deleted.
    for (img, vol) in &clones {
        let t = d.call("Volume.delete", json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img, "postZero": false, "force": false}));
        d.task_ok(&t);
        assert_eq!(
            d.call_err(
                "Image.getVolumes",
                json!({"imageID": img, "storagepoolID": sp, "storagedomainID": sd})
            )
            .0,
            268,
            "the emptied clone image is gone"
        );
    }
    let t = d.call("Volume.delete", del_t);
    d.task_ok(&t);
    assert_eq!(
        d.call("StorageDomain.getImages", json!({"storagedomainID": sd})),
        json!([])
    );
}

#[test]
fn post_zero_and_discard_scrub_deleted_data_but_never_a_template() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let images = d.domain_dir(&sd).join("images");
    // A 4 MiB RAW volume in a new image, its first MiB written.
    let raw_with_data = || {
        let (img, vol) = d.new_image(
            &sp,
            &sd,
            json!({"volFormat": "RAW", "size": (4u64 << 20).to_string()}),
        );
        let data = images.join(&img).join(&vol);
        qemu_io(&data, "raw", "write -P 0x5a 0 1M");
        (img, vol, data)
    };
    let first_mib_zero = |handle: &std::fs::File| {
        let mut buf = vec![1u8; 1 << 20];
        std::os::unix::fs::FileExt::read_exact_at(handle, &mut buf, 0).unwrap();
        buf.iter().all(|&b| b == 0)
    };
    let all_zero = |path: &std::path::Path| std::fs::read(path).unwrap().iter().all(|&b| b == 0);
    let blocks = |path: &std::path::Path| {
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap())
    };

    // Volume.delete with postZero, checked through an open handle (a second
    // link would make the file look shared, and shared files are skipped).
    let (img, vol, data) = raw_with_data();
    let handle = std::fs::File::open(&data).unwrap();
    let t = d.call("Volume.delete", json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img, "postZero": true, "force": false}));
    d.task_ok(&t);
    assert!(!data.exists());
    assert!(first_mib_zero(&handle), "the deleted volume was zeroed");

    // Image.delete with postZero and discard, checked through an open handle.
    let (img2, _, data2) = raw_with_data();
    let handle = std::fs::File::open(&data2).unwrap();
    let t = d.call("Image.delete", json!({"imageID": img2, "storagepoolID": sp, "storagedomainID": sd, "postZero": true, "discard": true, "force": false}));
    d.task_ok(&t);
    assert!(first_mib_zero(&handle), "the deleted data was zeroed");
    assert_eq!(
        std::os::unix::fs::MetadataExt::blocks(&handle.metadata().unwrap()),
        0,
        "and discarded"
    );

    // A clone's image deleted with postZero leaves its template's data alone.
    let (timg, tvol, tdata) = raw_with_data();
    d.make_template(&sd, &timg, &tvol);
    let (cimg, _) = d.new_image(
        &sp,
        &sd,
        json!({"srcImgUUID": timg, "srcVolUUID": tvol, "size": (4u64 << 20).to_string()}),
    );
    let t = d.call("Image.delete", json!({"imageID": cimg, "storagepoolID": sp, "storagedomainID": sd, "postZero": true, "discard": true, "force": false}));
    d.task_ok(&t);
    assert!(!all_zero(&tdata), "the template keeps its data");
    assert!(blocks(&tdata) > 0);
    vdsm_check(&d.domain_dir(&sd));
}

#[test]
fn copy_data_collapses_chains_and_converts() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let images = d.domain_dir(&sd).join("images");
    let size = (16u64 << 20).to_string();
    // Source: RAW base with data, COW top with more data.
    let (img, base, top) = d.raw_base_and_snapshot(&sp, &sd, &size);
    qemu_io(&images.join(&img).join(&base), "raw", "write -P 0x11 0 1M");
    qemu_io(
        &images.join(&img).join(&top),
        "qcow2",
        "write -P 0x22 8M 1M",
    );
    let job = |src: (&str, &str), dst: (&str, &str), extra: serde_json::Value| -> Value {
        let id = uuid();
        let mut p = json!({"job_id": id, "source": {"endpoint_type": "div", "sd_id": sd, "img_id": src.0, "vol_id": src.1},
                           "destination": {"endpoint_type": "div", "sd_id": sd, "img_id": dst.0, "vol_id": dst.1}});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        d.call("SDM.copy_data", p);
        d.wait_job(&id)
    };
    let top_path = images.join(&img).join(&top);

    // The chain collapsed into a RAW volume, and into a COW one.
    for fmt in ["RAW", "COW"] {
        let (dimg, dvol) = d.new_image(&sp, &sd, json!({"volFormat": fmt, "size": size}));
        let j = job((&img, &top), (&dimg, &dvol), json!({}));
        assert_eq!(
            (j["status"].as_str(), j["progress"].as_u64()),
            (Some("done"), Some(100)),
            "{j}"
        );
        let dpath = images.join(&dimg).join(&dvol);
        same_contents(
            &top_path,
            "qcow2",
            &dpath,
            if fmt == "RAW" { "raw" } else { "qcow2" },
        );
        let info = d.volume_info(&sp, &sd, &dimg, &dvol);
        assert_eq!(
            (info["legality"].as_str(), info["generation"].as_u64()),
            (Some("LEGAL"), Some(1))
        );
    }
    // A destination with old data: none of it survives the copy.
    let (dimg, dvol) = d.new_image(&sp, &sd, json!({"size": size}));
    let dpath = images.join(&dimg).join(&dvol);
    qemu_io(&dpath, "qcow2", "write -P 0x99 0 16M");
    let j = job((&img, &top), (&dimg, &dvol), json!({}));
    assert_eq!(j["status"], "done", "{j}");
    same_contents(&top_path, "qcow2", &dpath, "qcow2");

    // RAW to RAW natively: data copied, holes kept.
    let (dimg, dvol) = d.new_image(&sp, &sd, json!({"volFormat": "RAW", "size": size}));
    let j = job((&img, &base), (&dimg, &dvol), json!({}));
    assert_eq!(j["status"], "done", "{j}");
    let dpath = images.join(&dimg).join(&dvol);
    same_contents(&images.join(&img).join(&base), "raw", &dpath, "raw");
    let used = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&dpath).unwrap()) * 512;
    assert!(used < 4 << 20, "holes kept: {used} bytes used");

    // Refusals.
    let (simg, svol) = d.new_image(&sp, &sd, json!({"volFormat": "RAW", "size": "1048576"}));
    let refuse = |dst: (&str, &str), extra: serde_json::Value, code: i64| {
        let mut p = json!({"job_id": uuid(), "source": {"sd_id": sd, "img_id": img, "vol_id": top},
                           "destination": {"sd_id": sd, "img_id": dst.0, "vol_id": dst.1}});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        let (got, msg) = d.call_err("SDM.copy_data", p);
        assert_eq!(got, code, "{msg}");
    };
    refuse((&simg, &svol), json!({}), 79);
    refuse((&dimg, &dvol), json!({"copy_bitmaps": true}), 1000);
    refuse((&img, &top), json!({}), 1000);
    refuse((&img, &base), json!({}), 203);
    let mut stale = json!({"sd_id": sd, "img_id": dimg, "vol_id": dvol, "generation": 0});
    let (code, _) = d.call_err("SDM.copy_data", json!({"job_id": uuid(), "source": {"sd_id": sd, "img_id": img, "vol_id": top}, "destination": stale.clone()}));
    assert_eq!(code, 911, "dst is at generation 1 now");
    stale["endpoint_type"] = json!("http");
    let (code, _) = d.call_err("SDM.copy_data", json!({"job_id": uuid(), "source": {"sd_id": sd, "img_id": img, "vol_id": top}, "destination": stale}));
    assert_eq!(code, -32602);
    d.call(
        "Image.prepare",
        json!({"storagepoolID": sp, "storagedomainID": sd, "imageID": dimg, "volumeID": dvol}),
    );
    refuse((&dimg, &dvol), json!({}), 203);
    vdsm_check(&d.domain_dir(&sd));
}
