//! SDM.*: host jobs that change one volume (update, copy, sparsify, amend, bitmaps, merge).

use super::*;

pub(super) const SDM_UPDATE_VOLUME: Verb = Verb {
    name: "SDM.update_volume",
    params: &["job_id", "vol_info", "vol_attr"],
    handler: sdm_update_volume,
};

fn sdm_update_volume(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    let target = volume_ref("vol_info", p.opt_value("vol_info"))?;
    e.update_volume(job, target, volume_attrs(p.opt_value("vol_attr"))?)?;
    ok()
}

pub(super) const SDM_COPY_DATA: Verb = Verb {
    name: "SDM.copy_data",
    params: &["job_id", "source", "destination", "copy_bitmaps"],
    handler: sdm_copy_data,
};

fn sdm_copy_data(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    let source = endpoint("source", p.opt_value("source"))?;
    let destination = endpoint("destination", p.opt_value("destination"))?;
    e.copy_data(job, source, destination, p.bool_or("copy_bitmaps", false)?)?;
    ok()
}

pub(super) const SDM_SPARSIFY_VOLUME: Verb = Verb {
    name: "SDM.sparsify_volume",
    params: &["job_id", "vol_info"],
    handler: sdm_sparsify_volume,
};

fn sdm_sparsify_volume(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    e.sparsify_volume(job, volume_ref("vol_info", p.opt_value("vol_info"))?)?;
    ok()
}

pub(super) const SDM_AMEND_VOLUME: Verb = Verb {
    name: "SDM.amend_volume",
    params: &["job_id", "vol_info", "qcow2_attr"],
    handler: sdm_amend_volume,
};

fn sdm_amend_volume(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    let target = volume_ref("vol_info", p.opt_value("vol_info"))?;
    let attrs = object_param(p, "qcow2_attr", &["compat"])?;
    e.amend_volume(job, target, attrs.string("compat")?)?;
    ok()
}

pub(super) const SDM_ADD_BITMAP: Verb = Verb {
    name: "SDM.add_bitmap",
    params: &["job_id", "vol_info", "bitmap"],
    handler: sdm_add_bitmap,
};

fn sdm_add_bitmap(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    let target = volume_ref("vol_info", p.opt_value("vol_info"))?;
    e.add_bitmap(job, target, p.string("bitmap")?)?;
    ok()
}

pub(super) const SDM_REMOVE_BITMAP: Verb = Verb {
    name: "SDM.remove_bitmap",
    params: &["job_id", "vol_info", "bitmap"],
    handler: sdm_remove_bitmap,
};

fn sdm_remove_bitmap(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    let target = volume_ref("vol_info", p.opt_value("vol_info"))?;
    e.remove_bitmap(job, target, p.string("bitmap")?)?;
    ok()
}

pub(super) const SDM_CLEAR_BITMAPS: Verb = Verb {
    name: "SDM.clear_bitmaps",
    params: &["job_id", "vol_info"],
    handler: sdm_clear_bitmaps,
};

fn sdm_clear_bitmaps(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    e.clear_bitmaps(job, volume_ref("vol_info", p.opt_value("vol_info"))?)?;
    ok()
}

pub(super) const SDM_MERGE: Verb = Verb {
    name: "SDM.merge",
    params: &["job_id", "subchain_info", "merge_bitmaps"],
    handler: sdm_merge,
};

fn sdm_merge(e: &Arc<Engine>, p: &Params) -> Reply {
    let job = p.uuid("job_id")?;
    let sc = subchain(p, "subchain_info")?;
    e.merge(job, sc, p.bool_or("merge_bitmaps", false)?)?;
    ok()
}
