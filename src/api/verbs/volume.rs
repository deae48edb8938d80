//! Volume.*: create, delete, inspect, extend, measure.

use super::*;

pub(super) const VOLUME_CREATE: Verb = Verb {
    name: "Volume.create",
    params: &[
        "volumeID",
        "storagepoolID",
        "storagedomainID",
        "imageID",
        "size",
        "volFormat",
        "preallocate",
        "diskType",
        "desc",
        "srcImgUUID",
        "srcVolUUID",
        "initialSize",
        "addBitmaps",
        "legal",
        "sequence",
        "bitmap",
    ],
    handler: volume_create,
};

fn volume_create(e: &Arc<Engine>, p: &Params) -> Reply {
    let sequence = p.opt_int("sequence")?.unwrap_or(0);
    let req = CreateVolume {
        vol: p.uuid("volumeID")?,
        pool: p.uuid("storagepoolID")?,
        sd: p.uuid("storagedomainID")?,
        img: p.uuid("imageID")?,
        size: p.size("size")?,
        format: p.enumeration("volFormat")?,
        allocation: p.enumeration("preallocate")?,
        disk_type: p.opt_enum("diskType")?.unwrap_or(DiskType::Data),
        description: p.opt_string("desc")?.unwrap_or_default(),
        src_img: p.opt_uuid("srcImgUUID")?.unwrap_or(BLANK_UUID),
        src_vol: p.opt_uuid("srcVolUUID")?.unwrap_or(BLANK_UUID),
        initial_size: p.opt_size("initialSize")?,
        legal: p.bool_or("legal", true)?,
        add_bitmaps: p.bool_or("addBitmaps", false)?,
        bitmap: p.opt_uuid("bitmap")?,
        sequence: u64::try_from(sequence).map_err(|_| {
            ApiError::new(
                crate::api::errors::INVALID_PARAMETER,
                "invalid parameter 'sequence': negative",
            )
        })?,
    };
    task_id(e.create_volume(req)?)
}

pub(super) const VOLUME_DELETE: Verb = Verb {
    name: "Volume.delete",
    params: &[
        "volumeID",
        "storagepoolID",
        "storagedomainID",
        "imageID",
        "postZero",
        "force",
        "discard",
    ],
    handler: volume_delete,
};

fn volume_delete(e: &Arc<Engine>, p: &Params) -> Reply {
    task_id(e.delete_volume(DeleteVolume {
        vol: p.uuid("volumeID")?,
        pool: p.uuid("storagepoolID")?,
        sd: p.uuid("storagedomainID")?,
        img: p.uuid("imageID")?,
        force: p.bool_or("force", false)?,
        post_zero: p.bool_or("postZero", false)?,
        discard: p.bool_or("discard", false)?,
    })?)
}

pub(super) const VOLUME_GET_INFO: Verb = Verb {
    name: "Volume.getInfo",
    params: VOLUME_IDS,
    handler: volume_get_info,
};

fn volume_get_info(e: &Arc<Engine>, p: &Params) -> Reply {
    let (sd, img, vol) = volume_ids(p)?;
    to_value(&e.volume_info(sd, img, vol)?)
}

pub(super) const VOLUME_GET_SIZE: Verb = Verb {
    name: "Volume.getSize",
    params: VOLUME_IDS,
    handler: volume_get_size,
};

fn volume_get_size(e: &Arc<Engine>, p: &Params) -> Reply {
    let (sd, img, vol) = volume_ids(p)?;
    to_value(&e.volume_size(sd, img, vol)?)
}

pub(super) const VOLUME_SET_LEGALITY: Verb = Verb {
    name: "Volume.setLegality",
    params: &[
        "volumeID",
        "storagepoolID",
        "storagedomainID",
        "imageID",
        "legality",
    ],
    handler: volume_set_legality,
};

fn volume_set_legality(e: &Arc<Engine>, p: &Params) -> Reply {
    let (sd, img, vol) = volume_ids(p)?;
    e.set_volume_legality(
        p.uuid("storagepoolID")?,
        sd,
        img,
        vol,
        p.enumeration("legality")?,
    )?;
    ok()
}

pub(super) const VOLUME_EXTEND_SIZE: Verb = Verb {
    name: "Volume.extendSize",
    params: &[
        "storagepoolID",
        "storagedomainID",
        "imageID",
        "volumeID",
        "newSize",
    ],
    handler: volume_extend_size,
};

fn volume_extend_size(e: &Arc<Engine>, p: &Params) -> Reply {
    let (sd, img, vol) = volume_ids(p)?;
    task_id(e.extend_volume(p.uuid("storagepoolID")?, sd, img, vol, p.size("newSize")?)?)
}

pub(super) const VOLUME_MEASURE: Verb = Verb {
    name: "Volume.measure",
    params: &[
        "volumeID",
        "storagepoolID",
        "storagedomainID",
        "imageID",
        "dstVolFormat",
        "backing_chain",
        "baseID",
    ],
    handler: volume_measure,
};

fn volume_measure(e: &Arc<Engine>, p: &Params) -> Reply {
    let (sd, img, vol) = volume_ids(p)?;
    let required = e.measure_volume(
        sd,
        img,
        vol,
        p.enumeration("dstVolFormat")?,
        p.bool_or("backing_chain", true)?,
        p.opt_uuid("baseID")?.filter(|b| *b != BLANK_UUID),
    )?;
    to_value(&json!({ "required": required }))
}

pub(super) const VOLUME_QEMU_INFO: Verb = Verb {
    name: "Volume.getQemuImageInfo",
    params: VOLUME_IDS,
    handler: volume_qemu_info,
};

fn volume_qemu_info(e: &Arc<Engine>, p: &Params) -> Reply {
    let (sd, img, vol) = volume_ids(p)?;
    to_value(&e.volume_qemu_info(sd, img, vol)?)
}
