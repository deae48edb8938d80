//! A pool's member domains: attach, activate, deactivate, detach, refresh.

use serde_json::json;

use crate::common::*;

#[test]
fn domains_join_work_in_and_leave_a_pool() {
    let d = Daemon::start();
    let (sp, master) = d.embedded();
    let dir = d.local_storage("second");
    let sd = uuid();
    d.call(
        "StorageDomain.create",
        json!({"storagedomainID": sd, "domainType": "LOCALFS", "typeArgs": dir.to_str().unwrap(), "name": "second", "domainClass": "Data"}),
    );
    let status = |d: &Daemon| {
        d.call("StoragePool.getInfo", json!({"storagepoolID": sp}))["dominfo"][&sd]["status"]
            .clone()
    };
    let ids = json!({"storagedomainID": sd, "storagepoolID": sp});
    let create = |code: Option<i64>| {
        let params = volume_params(&sp, &sd, &uuid(), &uuid(), json!({"size": "1048576"}));
        match code {
            None => d.task_ok(&d.call("Volume.create", params)),
            Some(c) => assert_eq!(d.call_err("Volume.create", params).0, c),
        }
    };
    create(Some(353));

    d.call("StorageDomain.attach", ids.clone());
    d.call("StorageDomain.attach", ids.clone());
    assert_eq!(status(&d), "Attached");
    assert!(d.data().join("data-center").join(&sp).join(&sd).exists());
    d.call("StorageDomain.activate", ids.clone());
    assert_eq!(status(&d), "Active");
    create(None);
    let (code, _) = d.call_err("StorageDomain.detach", ids.clone());
    assert_eq!(code, 1000, "an active domain is deactivated first");
    d.call("StorageDomain.deactivate", ids.clone());
    assert_eq!(status(&d), "Attached");
    d.call("StorageDomain.detach", ids.clone());
    let info = d.call("StoragePool.getInfo", json!({"storagepoolID": sp}));
    assert!(info["dominfo"].get(&sd).is_none(), "{info}");
    let dom = d.call("StorageDomain.getInfo", json!({"storagedomainID": sd}));
    assert_eq!(dom["pool"], json!([]), "{dom}");
    create(Some(353));

    // Refusals: the master stays, unknown domains and pools, wrong masters.
    let master_ids = json!({"storagedomainID": master, "storagepoolID": sp});
    assert_eq!(
        d.call_err("StorageDomain.deactivate", master_ids.clone()).0,
        1000
    );
    assert_eq!(d.call_err("StorageDomain.detach", master_ids).0, 1000);
    assert_eq!(
        d.call_err("StorageDomain.activate", ids.clone()).0,
        353,
        "a detached domain is attached first"
    );
    assert_eq!(
        d.call_err(
            "StorageDomain.attach",
            json!({"storagedomainID": uuid(), "storagepoolID": sp})
        )
        .0,
        358
    );
    let mut moved = ids.clone();
    moved["masterSdUUID"] = json!(sd);
    assert_eq!(d.call_err("StorageDomain.deactivate", moved).0, 1000);
    d.call(
        "StoragePool.refresh",
        json!({"storagepoolID": sp, "masterSdUUID": master, "masterVersion": 1}),
    );
    assert_eq!(
        d.call_err(
            "StoragePool.refresh",
            json!({"storagepoolID": sp, "masterSdUUID": master, "masterVersion": 7})
        )
        .0,
        324
    );
    // Not SPM: membership changes are refused.
    d.call("StoragePool.spmStop", json!({"storagepoolID": sp}));
    assert_eq!(d.call_err("StorageDomain.attach", ids).0, 654);
    vdsm_check(&dir.join(&sd));
}

/// The master domain is lost: the pool is rebuilt on another member with a
/// newer master version, and what that domain holds is still there.
#[test]
fn reconstruct_master_on_a_surviving_domain() {
    let (d, sp, sd1, sd2) = Daemon::two_domain_pool();
    let (img, vol) = d.new_image(&sp, &sd2, json!({"size": "1048576"}));
    let reconstruct = |version: i64| {
        json!({"storagepoolID": sp, "hostId": 1, "name": "rebuilt", "masterSdUUID": sd2,
               "masterVersion": version, "domainDict": {sd2.clone(): "active"},
               "lockRenewalIntervalSec": 5, "leaseTimeSec": 60, "ioOpTimeoutSec": 10, "leaseRetries": 3})
    };
    assert_eq!(
        d.call_err("StoragePool.reconstructMaster", reconstruct(2))
            .0,
        323,
        "not while connected"
    );
    d.leave_pool(&sp);
    // The master's storage goes away.
    let st = d.call(
        "StoragePool.disconnectStorageServer",
        json!({"storagepoolID": BLANK, "domainType": "LOCALFS",
               "connectionParams": [{"id": 1, "connection": d.data().join("one").to_str().unwrap()}]}),
    );
    assert_eq!(st[0]["status"], 0, "{st}");
    let (code, _) = d.call_err(
        "StoragePool.connect",
        json!({"storagepoolID": sp, "hostID": 1, "scsiKey": "", "masterSdUUID": sd1, "masterVersion": 1}),
    );
    assert_eq!(code, 304, "the master is gone");

    let mut bad = reconstruct(2);
    bad["domainDict"] = json!({sd2.clone(): "gone"});
    assert_eq!(d.call_err("StoragePool.reconstructMaster", bad).0, -32602);
    d.call("StoragePool.reconstructMaster", reconstruct(2));
    d.call(
        "StoragePool.connect",
        json!({"storagepoolID": sp, "hostID": 1, "scsiKey": "", "masterSdUUID": sd2, "masterVersion": 2}),
    );
    d.spm_start(&sp);
    let info = d.call("StoragePool.getInfo", json!({"storagepoolID": sp}));
    assert_eq!(info["info"]["master_uuid"], sd2, "{info}");
    assert_eq!(info["info"]["master_ver"], 2, "{info}");
    assert_eq!(d.volume_info(&sp, &sd2, &img, &vol)["status"], "OK");
    d.create_volume(&sp, &sd2, &uuid(), &uuid(), json!({"size": "1048576"}));
    // An older master version than the domain's is refused.
    d.leave_pool(&sp);
    assert_eq!(
        d.call_err("StoragePool.reconstructMaster", reconstruct(2))
            .0,
        324
    );
    vdsm_check(&d.domain_dir(&sd2));
}

fn switch_params(sp: &str, old: &str, new: &str, version: i64) -> serde_json::Value {
    json!({"storagepoolID": sp, "oldMasterUUID": old, "newMasterUUID": new, "masterVersion": version})
}

/// The domains of `sds` whose metadata says they are a master.
fn masters(d: &Daemon, sds: &[&str]) -> Vec<String> {
    sds.iter()
        .filter(|sd| {
            let md =
                std::fs::read_to_string(d.domain_dir(sd).join("dom_md").join("metadata")).unwrap();
            md.lines().any(|l| l == "ROLE=Master")
        })
        .map(|sd| sd.to_string())
        .collect()
}

/// The pool's master is `master` at `version`, the only domain claiming
/// it, with the task record `kept` still readable; both domains pass
/// VDSM's format rules and the SPM works.
fn assert_master(d: &Daemon, sp: &str, domains: [&str; 2], master: &str, version: i64, kept: &str) {
    let info = d.call("StoragePool.getInfo", json!({"storagepoolID": sp}));
    assert_eq!(info["info"]["master_uuid"], master, "{info}");
    assert_eq!(info["info"]["master_ver"], version, "{info}");
    assert_eq!(masters(d, &domains), [master]);
    let st = d.call("Task.getStatus", json!({"taskID": kept}));
    assert_eq!(st["taskResult"], "success", "{st}");
    assert!(d
        .domain_dir(master)
        .join("master/tasks")
        .join(kept)
        .join("task.json")
        .exists());
    for sd in domains {
        vdsm_check(&d.domain_dir(sd));
    }
    assert_eq!(
        d.call("StoragePool.getSpmStatus", json!({"storagepoolID": sp}))["spmStatus"],
        "SPM"
    );
    let other = domains.iter().find(|sd| **sd != master).unwrap();
    d.task_ok(&d.call(
        "Volume.create",
        volume_params(sp, other, &uuid(), &uuid(), json!({"size": "1048576"})),
    ));
}

/// A pool of two domains with a finished (uncleared) task: (daemon, pool,
/// master, other domain, the task).
fn pool_with_a_task() -> (Daemon, String, String, String, String) {
    let (d, sp, sd1, sd2) = Daemon::two_domain_pool();
    d.call(
        "StorageDomain.activate",
        json!({"storagedomainID": sd2, "storagepoolID": sp}),
    );
    let t = d.call(
        "Volume.create",
        volume_params(&sp, &sd2, &uuid(), &uuid(), json!({"size": "1048576"})),
    );
    assert_eq!(d.wait_task(&t)["taskResult"], "success");
    (d, sp, sd1, sd2, t.as_str().unwrap().to_string())
}

/// The SPM moves the master role to another active domain: the pool
/// metadata and the task records move, the old master becomes a regular
/// member, and a restart finds the pool on its new master.
#[test]
fn switch_master_moves_the_pool_to_another_domain() {
    let (d, sp, sd1, sd2, kept) = pool_with_a_task();
    let refused = |params, code, why: &str| {
        assert_eq!(
            d.call_err("StoragePool.switchMaster", params).0,
            code,
            "{why}"
        )
    };
    refused(switch_params(&sp, &sd2, &sd1, 2), 324, "not the old master");
    refused(switch_params(&sp, &sd1, &sd1, 2), 1000, "already master");
    refused(switch_params(&sp, &sd1, &sd2, 1), 324, "version not newer");
    refused(switch_params(&sp, &sd1, &uuid(), 2), 353, "not a member");
    let ids = json!({"storagedomainID": sd2, "storagepoolID": sp});
    d.call("StorageDomain.deactivate", ids.clone());
    refused(
        switch_params(&sp, &sd1, &sd2, 2),
        369,
        "an attached domain is activated first",
    );
    d.call("StorageDomain.activate", ids);

    d.task_ok(&d.call(
        "StoragePool.switchMaster",
        switch_params(&sp, &sd1, &sd2, 2),
    ));
    assert_master(&d, &sp, [&sd1, &sd2], &sd2, 2, &kept);
    assert!(!d.domain_dir(&sd1).join("master/tasks").join(&kept).exists());
    let link = d.data().join("data-center").join(&sp).join("mastersd");
    assert_eq!(
        std::fs::canonicalize(link).unwrap(),
        std::fs::canonicalize(d.domain_dir(&sd2)).unwrap()
    );
    // The old master is an ordinary member now.
    let old = json!({"storagedomainID": sd1, "storagepoolID": sp});
    d.call("StorageDomain.deactivate", old.clone());
    d.call("StorageDomain.activate", old);

    let d = d.restart_armed("", false);
    assert_master(&d, &sp, [&sd1, &sd2], &sd2, 2, &kept);
}

/// Crash or fail at each step of a switch: before the commit the pool stays
/// on its master and a new switch succeeds; after it the pool is on the new
/// master once the host connects to it, and the SPM start demotes the old.
#[test]
fn walk_switch_master() {
    for (fp, action) in [
        ("pool.switch_master.after_lease", "crash"),
        ("pool.switch_master.after_lease", "error"),
        ("pool.switch_master.after_copy", "crash"),
        ("pool.switch_master.after_copy", "error"),
        ("pool.switch_master.after_commit", "crash"),
        ("pool.switch_master.after_commit", "error"),
    ] {
        let (d, sp, sd1, sd2, kept) = pool_with_a_task();
        let d = d.restart_armed(&format!("{fp}={action}"), false);
        // A crash may come before the reply.
        let t = d.client.call(
            "StoragePool.switchMaster",
            switch_params(&sp, &sd1, &sd2, 2),
        );
        let committed = fp.ends_with("after_commit");
        let d = if action == "crash" {
            d.restart_after_crash(false)
        } else {
            let st = d.wait_task(&t.unwrap());
            assert_eq!(
                st["taskResult"] == "success",
                committed,
                "{fp}={action}: {st}"
            );
            d.restart_armed("", false)
        };
        if !committed {
            assert_master(&d, &sp, [&sd1, &sd2], &sd1, 1, &kept);
            d.task_ok(&d.call(
                "StoragePool.switchMaster",
                switch_params(&sp, &sd1, &sd2, 2),
            ));
        } else if action == "crash" {
            // The host still knew the old master: refused, it connects to
            // the new one, and its SPM start finishes the switch.
            assert_eq!(masters(&d, &[&sd1, &sd2]).len(), 2, "{fp}");
            let (code, msg) = d.call_err(
                "StoragePool.connect",
                json!({"storagepoolID": sp, "hostID": 1, "scsiKey": "", "masterSdUUID": sd1, "masterVersion": 1}),
            );
            assert_eq!(code, 324, "{msg}");
            assert!(msg.contains(&sd2), "{msg}");
            d.call(
                "StoragePool.connect",
                json!({"storagepoolID": sp, "hostID": 1, "scsiKey": "", "masterSdUUID": sd2, "masterVersion": 2}),
            );
            d.spm_start(&sp);
        }
        assert_master(&d, &sp, [&sd1, &sd2], &sd2, 2, &kept);
    }
}
