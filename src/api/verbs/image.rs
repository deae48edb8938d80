//! Image.*: volumes, delete, prepare, teardown, move.

use super::*;

pub(super) const IMAGE_GET_VOLUMES: Verb = Verb {
    name: "Image.getVolumes",
    params: &["imageID", "storagepoolID", "storagedomainID"],
    handler: image_get_volumes,
};

fn image_get_volumes(e: &Arc<Engine>, p: &Params) -> Reply {
    p.opt_uuid("storagepoolID")?;
    to_value(&e.image_volumes(p.uuid("storagedomainID")?, p.uuid("imageID")?)?)
}

pub(super) const IMAGE_DELETE: Verb = Verb {
    name: "Image.delete",
    params: &[
        "imageID",
        "storagepoolID",
        "storagedomainID",
        "postZero",
        "force",
        "discard",
    ],
    handler: image_delete,
};

fn image_delete(e: &Arc<Engine>, p: &Params) -> Reply {
    task_id(e.delete_image(DeleteImage {
        img: p.uuid("imageID")?,
        pool: p.uuid("storagepoolID")?,
        sd: p.uuid("storagedomainID")?,
        post_zero: p.bool_or("postZero", false)?,
        force: p.bool_or("force", false)?,
        discard: p.bool_or("discard", false)?,
    })?)
}

pub(super) const IMAGE_PREPARE: Verb = Verb {
    name: "Image.prepare",
    params: &[
        "storagepoolID",
        "storagedomainID",
        "imageID",
        "volumeID",
        "allowIllegal",
    ],
    handler: image_prepare,
};

fn image_prepare(e: &Arc<Engine>, p: &Params) -> Reply {
    let path = e.prepare_image(
        p.uuid("storagepoolID")?,
        p.uuid("storagedomainID")?,
        p.uuid("imageID")?,
        p.uuid("volumeID")?,
        p.bool_or("allowIllegal", false)?,
    )?;
    to_value(&json!({ "path": path.display().to_string() }))
}

pub(super) const IMAGE_MOVE: Verb = Verb {
    name: "Image.move",
    params: &[
        "imageID",
        "storagepoolID",
        "storagedomainID",
        "dstSdUUID",
        "operation",
        "postZero",
        "force",
        "discard",
    ],
    handler: image_move,
};

fn image_move(e: &Arc<Engine>, p: &Params) -> Reply {
    task_id(e.move_image(MoveImage {
        pool: p.uuid("storagepoolID")?,
        sd: p.uuid("storagedomainID")?,
        img: p.uuid("imageID")?,
        dst_sd: p.uuid("dstSdUUID")?,
        operation: p.enumeration("operation")?,
        post_zero: p.bool_or("postZero", false)?,
        force: p.bool_or("force", false)?,
        discard: p.bool_or("discard", false)?,
    })?)
}

pub(super) const IMAGE_TEARDOWN: Verb = Verb {
    name: "Image.teardown",
    params: &["storagepoolID", "storagedomainID", "imageID", "volumeID"],
    handler: image_teardown,
};

fn image_teardown(e: &Arc<Engine>, p: &Params) -> Reply {
    p.opt_uuid("volumeID")?;
    e.teardown_image(
        p.uuid("storagepoolID")?,
        p.uuid("storagedomainID")?,
        p.uuid("imageID")?,
    )?;
    ok()
}
