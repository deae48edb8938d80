//! Where a block domain keeps things, as VDSM lays it out: the special LVs
//! of the domain's VG, volume metadata slots in the `metadata` LV and
//! volume leases in the `leases` LV.

/// VDSM's extent size for domain VGs.
pub const EXTENT_SIZE: u64 = 128 << 20;
const MIB: u64 = 1 << 20;

/// A special LV: its name, the size VDSM requests, and the first domain
/// version that has it. Created in this order (`metadata` first, on the
/// PV that holds the VG metadata).
pub struct SpecialLv {
    pub name: &'static str,
    pub size: u64,
    pub since: u32,
}

pub const SPECIAL_LVS: &[SpecialLv] = &[
    SpecialLv {
        name: "metadata",
        size: 128 * MIB,
        since: 0,
    },
    SpecialLv {
        name: "ids",
        size: 8 * MIB,
        since: 0,
    },
    SpecialLv {
        name: "inbox",
        size: 16 * MIB,
        since: 0,
    },
    SpecialLv {
        name: "outbox",
        size: 16 * MIB,
        since: 0,
    },
    SpecialLv {
        name: "leases",
        size: 2048 * MIB,
        since: 0,
    },
    SpecialLv {
        name: "xleases",
        size: 1024 * MIB,
        since: 4,
    },
    SpecialLv {
        name: "master",
        size: 1024 * MIB,
        since: 0,
    },
];

/// The special LVs of a domain of `version`.
pub fn special_lvs(version: u32) -> impl Iterator<Item = &'static SpecialLv> {
    SPECIAL_LVS.iter().filter(move |lv| version >= lv.since)
}

/// Tag of a VG that is a storage domain.
pub const DOMAIN_TAG: &str = "RHAT_storage_domain";
/// Tag of a VG made for a domain that is not (yet) one.
pub const UNREADY_TAG: &str = "RHAT_storage_domain_UNREADY";
/// Tag of a volume LV being created (invisible to listings).
pub const INITIALIZING_TAG: &str = "OVIRT_VOL_INITIALIZING";
pub const IMAGE_TAG: &str = "IU_";
pub const PARENT_TAG: &str = "PU_";
pub const SLOT_TAG: &str = "MD_";

/// Bytes of one volume metadata record.
pub const RECORD_SIZE: u64 = 512;

/// The first volume metadata slot of a domain `version` (below it: the
/// old domain metadata on v<5, reserved on v5).
pub fn first_slot(version: u32) -> u64 {
    if version >= 5 {
        1
    } else {
        4
    }
}

/// Where slot `slot`'s record starts in the `metadata` LV.
pub fn slot_offset(version: u32, slot: u64) -> u64 {
    if version >= 5 {
        MIB + slot * 8192
    } else {
        slot * RECORD_SIZE
    }
}

/// Where the volume in slot `slot` has its sanlock lease in the `leases`
/// LV: slots 0..99 of that LV are reserved (slot 1 is the SDM lease).
pub fn lease_offset(slot: u64, alignment: u64) -> u64 {
    (100 + slot) * alignment
}

/// The slots VDSM's 2 GiB `leases` LV has room for (1,947 on v5): a VDSM
/// host can hold the lease of a volume in a slot up to this.
pub fn vdsm_max_slot(alignment: u64) -> u64 {
    2048 * MIB / alignment - 101
}

/// The lowest free slot given the slots in use.
pub fn free_slot(version: u32, used: impl IntoIterator<Item = u64>) -> u64 {
    let mut used: Vec<u64> = used.into_iter().collect();
    used.sort_unstable();
    let mut slot = first_slot(version);
    for u in used {
        if u == slot {
            slot += 1;
        } else if u > slot {
            break;
        }
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_as_vdsm_computes_them() {
        assert_eq!(slot_offset(5, 1), MIB + 8192);
        assert_eq!(slot_offset(4, 4), 2048);
        // v5's zeroed reserve ends at 17 MiB: VDSM's last slot fits in it.
        assert!(slot_offset(5, vdsm_max_slot(MIB)) + 8192 <= 17 * MIB);
        assert_eq!(vdsm_max_slot(MIB), 1947);
        assert_eq!(lease_offset(1, MIB), 101 * MIB);
        // VDSM's last slot's lease is the last MiB of its 2 GiB LV.
        assert_eq!(lease_offset(vdsm_max_slot(MIB), MIB), 2047 * MIB);
        assert_eq!(special_lvs(3).count(), 6);
        assert_eq!(special_lvs(5).count(), 7);
    }

    #[test]
    fn the_lowest_free_slot_is_taken() {
        assert_eq!(free_slot(5, []), 1);
        assert_eq!(free_slot(5, [1, 2, 4]), 3);
        assert_eq!(free_slot(5, [3, 1, 2]), 4);
        assert_eq!(free_slot(4, [0, 1]), 4);
        assert_eq!(free_slot(5, [1, 1, 2]), 3);
    }
}
