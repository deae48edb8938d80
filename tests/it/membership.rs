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
    let (img, vol) = (uuid(), uuid());
    d.create_volume(&sp, &sd2, &img, &vol, json!({"size": "1048576"}));
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
    d.call("StoragePool.spmStop", json!({"storagepoolID": sp}));
    d.call(
        "StoragePool.disconnect",
        json!({"storagepoolID": sp, "hostID": 1, "scsiKey": ""}),
    );
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
    d.call("StoragePool.spmStop", json!({"storagepoolID": sp}));
    d.call(
        "StoragePool.disconnect",
        json!({"storagepoolID": sp, "hostID": 1, "scsiKey": ""}),
    );
    assert_eq!(
        d.call_err("StoragePool.reconstructMaster", reconstruct(2))
            .0,
        324
    );
    vdsm_check(&d.domain_dir(&sd2));
}
