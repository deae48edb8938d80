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
