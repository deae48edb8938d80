//! Bad input: every refusal has a clear error and a VDSM-style code, and
//! leaves storage exactly as it was.

use serde_json::{json, Value};

use crate::common::*;

/// Runs `method(params)`, expects error `code`, and checks nothing changed
/// in the data directory.
fn refused(d: &Daemon, method: &str, params: Value, code: i64, needle: &str) {
    let before = tree(d.data());
    let (got, msg) = d.call_err(method, params.clone());
    assert_eq!(got, code, "{method}({params}): {msg}");
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "{method}: message {msg:?} should mention {needle:?}"
    );
    // Let any (wrongly) queued task run before comparing.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let after: Vec<String> = tree(d.data())
        .into_iter()
        .filter(|p| !p.ends_with("cairnd.log"))
        .collect();
    let before: Vec<String> = before
        .into_iter()
        .filter(|p| !p.ends_with("cairnd.log"))
        .collect();
    assert_eq!(before, after, "{method} changed storage");
}

#[test]
fn malformed_requests() {
    let d = Daemon::start();
    let parse =
        |body: &str| -> Value { serde_json::from_str(&d.client.post(body).unwrap()).unwrap() };
    assert_eq!(parse("{not json")["error"]["code"], -32700);
    assert_eq!(parse("[]")["error"]["code"], -32600);
    assert_eq!(
        parse(r#"{"jsonrpc":"1.0","id":1,"method":"Host.getConnectedStoragePools"}"#)["error"]
            ["code"],
        -32600
    );
    assert_eq!(
        parse(r#"{"jsonrpc":"2.0","id":1,"method":5}"#)["error"]["code"],
        -32600
    );
    assert_eq!(
        parse(r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#)["error"]["code"],
        -32600
    );
    assert_eq!(
        parse(r#"{"jsonrpc":"2.0","id":1,"method":"Volume.explode"}"#)["error"]["code"],
        -32601
    );
    assert_eq!(
        parse(r#"{"jsonrpc":"2.0","id":1,"method":"Task.getStatus","params":"x"}"#)["error"]
            ["code"],
        -32600
    );
}

#[test]
fn wrong_types_and_missing_parameters() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let ok = volume_params(&sp, &sd, &uuid(), &uuid(), json!({}));
    for (field, value, needle) in [
        ("size", json!(true), "size"),
        ("volFormat", json!({"a": 1}), "volFormat"),
        ("imageID", json!(42), "imageID"),
        ("desc", json!(7), "desc"),
    ] {
        let mut p = ok.clone();
        p[field] = value;
        refused(&d, "Volume.create", p, -32602, needle);
    }
    let mut p = ok.clone();
    p.as_object_mut().unwrap().remove("size");
    refused(
        &d,
        "Volume.create",
        p,
        -32602,
        "missing required parameter 'size'",
    );
    let mut p = ok.clone();
    p["sizee"] = json!("1");
    refused(&d, "Volume.create", p, -32602, "unknown parameter 'sizee'");
    refused(&d, "Task.getStatus", json!({}), -32602, "taskID");
}

#[test]
fn invalid_values() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let img = uuid();
    let with = |extra: Value| volume_params(&sp, &sd, &img, &uuid(), extra);
    refused(
        &d,
        "Volume.create",
        with(json!({"volumeID": "not-a-uuid"})),
        1000,
        "volumeID",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"imageID": "../../etc"})),
        1000,
        "imageID",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"volumeID": BLANK})),
        1000,
        "blank",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"storagedomainID": "5C84A9D2-BE25-49A9-BCB2-2F0F5B9066C0"})),
        1000,
        "UUID",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"volFormat": "QED"})),
        -32602,
        "COW (4)",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"preallocate": 9})),
        -32602,
        "SPARSE (2)",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"diskType": "FLOPPY"})),
        -32602,
        "diskType",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"size": "0"})),
        1000,
        "positive multiple of 512",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"size": "-512"})),
        1000,
        "size",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"size": -512})),
        1000,
        "size",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"size": "1000"})),
        1000,
        "multiple of 512",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"size": "12abc"})),
        1000,
        "size",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"size": "99999999999999999999999"})),
        1000,
        "size",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"desc": "line\nPUUID=evil"})),
        1000,
        "line breaks",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"initialSize": "1024"})),
        1000,
        "initialSize",
    );
    refused(
        &d,
        "Volume.create",
        with(json!({"srcVolUUID": uuid()})),
        1000,
        "srcImgUUID",
    );
}

#[test]
fn missing_things() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let (img, vol) = d.new_image(&sp, &sd, json!({}));
    let other_pool = uuid();
    refused(
        &d,
        "Volume.create",
        volume_params(&other_pool, &sd, &uuid(), &uuid(), json!({})),
        309,
        "not connected",
    );
    let missing_sd = uuid();
    refused(
        &d,
        "Volume.create",
        volume_params(&sp, &missing_sd, &uuid(), &uuid(), json!({})),
        358,
        "does not exist",
    );
    refused(
        &d,
        "StorageDomain.getInfo",
        json!({"storagedomainID": missing_sd}),
        358,
        &missing_sd,
    );
    refused(
        &d,
        "Volume.getInfo",
        json!({"volumeID": uuid(), "storagepoolID": sp, "storagedomainID": sd, "imageID": img}),
        201,
        "does not exist",
    );
    refused(
        &d,
        "Volume.getInfo",
        json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": uuid()}),
        268,
        "image",
    );
    refused(
        &d,
        "Image.delete",
        json!({"imageID": uuid(), "storagepoolID": sp, "storagedomainID": sd, "postZero": false, "force": false}),
        268,
        "image",
    );
    refused(
        &d,
        "Volume.delete",
        json!({"volumeID": uuid(), "storagepoolID": sp, "storagedomainID": sd, "imageID": img, "postZero": false, "force": false}),
        201,
        "volume",
    );
    refused(
        &d,
        "Task.getStatus",
        json!({"taskID": uuid()}),
        401,
        "unknown",
    );
    refused(
        &d,
        "StoragePool.getInfo",
        json!({"storagepoolID": other_pool}),
        309,
        "not connected",
    );
    refused(
        &d,
        "StoragePool.connect",
        json!({"storagepoolID": other_pool, "hostID": 1, "scsiKey": "", "masterSdUUID": sd, "masterVersion": 1}),
        323,
        "already connected",
    );
}

#[test]
fn existing_volume_and_wrong_parents() {
    let d = Daemon::start();
    let (sp, sd) = d.embedded();
    let (img, vol) = d.new_image(&sp, &sd, json!({}));
    refused(
        &d,
        "Volume.create",
        volume_params(
            &sp,
            &sd,
            &img,
            &vol,
            json!({"srcImgUUID": img, "srcVolUUID": vol}),
        ),
        212,
        "already exists",
    );
    // A second base volume in an image that has one.
    refused(
        &d,
        "Volume.create",
        volume_params(&sp, &sd, &img, &uuid(), json!({})),
        1000,
        "must name its parent",
    );
    // Parent missing in the image.
    refused(
        &d,
        "Volume.create",
        volume_params(
            &sp,
            &sd,
            &img,
            &uuid(),
            json!({"srcImgUUID": img, "srcVolUUID": uuid()}),
        ),
        201,
        "does not exist",
    );
    // A snapshot smaller than its parent, or RAW.
    refused(
        &d,
        "Volume.create",
        volume_params(
            &sp,
            &sd,
            &img,
            &uuid(),
            json!({"srcImgUUID": img, "srcVolUUID": vol, "size": "512"}),
        ),
        1000,
        "smaller",
    );
    refused(
        &d,
        "Volume.create",
        volume_params(
            &sp,
            &sd,
            &img,
            &uuid(),
            json!({"srcImgUUID": img, "srcVolUUID": vol, "volFormat": "RAW"}),
        ),
        1000,
        "COW",
    );

    // A parent in another domain: the second domain is not in the pool, and
    // an image of the first domain cannot parent a volume of another image.
    let dir = d.data().join("other");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.to_str().unwrap();
    d.call("StoragePool.connectStorageServer", json!({"storagepoolID": BLANK, "domainType": 4, "connectionParams": [{"id": 2, "connection": path}]}));
    let sd2 = uuid();
    d.call("StorageDomain.create", json!({"storagedomainID": sd2, "domainType": 4, "typeArgs": path, "name": "other", "domainClass": 1}));
    refused(
        &d,
        "Volume.create",
        volume_params(
            &sp,
            &sd2,
            &img,
            &uuid(),
            json!({"srcImgUUID": img, "srcVolUUID": vol}),
        ),
        353,
        "not in pool",
    );
    refused(
        &d,
        "Volume.create",
        volume_params(
            &sp,
            &sd,
            &uuid(),
            &uuid(),
            json!({"srcImgUUID": img, "srcVolUUID": vol}),
        ),
        1000,
        "not a template",
    );

    // An illegal parent cannot be snapshotted.
    d.call("Volume.setLegality", json!({"volumeID": vol, "storagepoolID": sp, "storagedomainID": sd, "imageID": img, "legality": "ILLEGAL"}));
    refused(
        &d,
        "Volume.create",
        volume_params(
            &sp,
            &sd,
            &img,
            &uuid(),
            json!({"srcImgUUID": img, "srcVolUUID": vol}),
        ),
        226,
        "illegal",
    );
}

#[test]
fn paths_that_would_escape() {
    let d = Daemon::start_bare();
    let conn = |p: &str| json!({"storagepoolID": BLANK, "domainType": "LOCALFS", "connectionParams": [{"id": 1, "connection": p}]});
    for bad in ["relative/dir", "/tmp/../etc", "/tmp/./x", "..", "/tmp/x/"] {
        let st = d.call("StoragePool.connectStorageServer", conn(bad));
        assert_ne!(st[0]["status"], 0, "{bad} was accepted");
    }
    let missing = std::env::temp_dir().join(uuid());
    let st = d.call(
        "StoragePool.connectStorageServer",
        conn(missing.to_str().unwrap()),
    );
    assert_eq!(st[0]["status"], 451);
    // Outside the allowed roots (the data dir and CAIRN_LOCAL_ROOTS).
    let st = d.call("StoragePool.connectStorageServer", conn("/nonexistent/dir"));
    assert_eq!(st[0]["status"], 390);
    // Creating a domain on a path that is not connected.
    let (code, msg) = d.call_err(
        "StorageDomain.create",
        json!({"storagedomainID": uuid(), "domainType": "LOCALFS", "typeArgs": "/etc", "name": "x", "domainClass": "Data"}),
    );
    assert_eq!(code, 390, "{msg}");
    let (code, _) = d.call_err(
        "StorageDomain.create",
        json!({"storagedomainID": uuid(), "domainType": "LOCALFS", "typeArgs": "..", "name": "x", "domainClass": "Data"}),
    );
    assert_eq!(code, 390);
    // Mount options cannot smuggle flags.
    let st = d.call(
        "StoragePool.connectStorageServer",
        json!({"storagepoolID": BLANK, "domainType": "POSIXFS", "connectionParams": [{"id": 1, "connection": "/dev/null", "vfs_type": "-o", "mnt_options": ""}]}),
    );
    assert_eq!(st[0]["status"], 1000);
}

#[test]
fn domain_create_validation() {
    let d = Daemon::start_bare();
    let dir = d.local_storage("dom");
    let path = dir.to_str().unwrap();
    let base = |extra: Value| {
        let mut p = json!({"storagedomainID": uuid(), "domainType": "LOCALFS", "typeArgs": path, "name": "d", "domainClass": "Data"});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    };
    refused(
        &d,
        "StorageDomain.create",
        base(json!({"version": 3})),
        394,
        "version 3",
    );
    refused(
        &d,
        "StorageDomain.create",
        base(json!({"version": 4, "blockSize": 4096})),
        1000,
        "512-byte",
    );
    refused(
        &d,
        "StorageDomain.create",
        base(json!({"blockSize": 1024})),
        1000,
        "blockSize",
    );
    refused(
        &d,
        "StorageDomain.create",
        base(json!({"name": "x".repeat(51)})),
        1000,
        "at most 50",
    );
    refused(
        &d,
        "StorageDomain.create",
        base(json!({"domainType": "ISCSI"})),
        506,
        "volume group",
    );
    refused(
        &d,
        "StorageDomain.create",
        base(json!({"maxHosts": 0})),
        1000,
        "maxHosts",
    );
    let sd = uuid();
    d.call("StorageDomain.create", base(json!({"storagedomainID": sd})));
    refused(
        &d,
        "StorageDomain.create",
        base(json!({"storagedomainID": sd})),
        365,
        "already exists",
    );
    // Pools: bad master version, unknown master, too long a name.
    refused(
        &d,
        "StoragePool.create",
        json!({"storagepoolID": uuid(), "name": "p", "masterSdUUID": uuid(), "masterVersion": 1, "domainList": []}),
        358,
        "does not exist",
    );
    refused(
        &d,
        "StoragePool.create",
        json!({"storagepoolID": uuid(), "name": "p".repeat(60), "masterSdUUID": sd, "masterVersion": 1, "domainList": [sd]}),
        327,
        "50",
    );
    let sp = uuid();
    d.call("StoragePool.create", json!({"storagepoolID": sp, "name": "p", "masterSdUUID": sd, "masterVersion": 3, "domainList": [sd]}));
    refused(
        &d,
        "StoragePool.connect",
        json!({"storagepoolID": sp, "hostID": 1, "scsiKey": "", "masterSdUUID": sd, "masterVersion": 2}),
        324,
        "master version is 3",
    );
    refused(
        &d,
        "StoragePool.connect",
        json!({"storagepoolID": sp, "hostID": 0, "scsiKey": "", "masterSdUUID": sd, "masterVersion": 3}),
        1000,
        "hostID",
    );
    refused(
        &d,
        "StoragePool.create",
        json!({"storagepoolID": uuid(), "name": "q", "masterSdUUID": sd, "masterVersion": 1, "domainList": [sd]}),
        391,
        "attached",
    );
}
