//! NBD.*: exports over NBD.

use super::*;

pub(super) const NBD_START_SERVER: Verb = Verb {
    name: "NBD.start_server",
    params: &["server_id", "config"],
    handler: nbd_start_server,
};

fn nbd_start_server(e: &Arc<Engine>, p: &Params) -> Reply {
    let id = p.uuid("server_id")?;
    let c = object_param(
        p,
        "config",
        &[
            "sd_id",
            "img_id",
            "vol_id",
            "readonly",
            "discard",
            "detect_zeroes",
            "backing_chain",
            "bitmap",
        ],
    )?;
    let config = NbdConfig {
        sd: c.uuid("sd_id")?,
        img: c.uuid("img_id")?,
        vol: c.uuid("vol_id")?,
        readonly: c.bool_or("readonly", false)?,
        discard: c.bool_or("discard", false)?,
        detect_zeroes: c.bool_or("detect_zeroes", false)?,
        // null means the default, as in VDSM.
        backing_chain: c.bool_or("backing_chain", true)?,
        bitmap: c.opt_string("bitmap")?,
    };
    to_value(&e.start_nbd_server(id, config)?)
}

pub(super) const NBD_STOP_SERVER: Verb = Verb {
    name: "NBD.stop_server",
    params: &["server_id"],
    handler: nbd_stop_server,
};

fn nbd_stop_server(e: &Arc<Engine>, p: &Params) -> Reply {
    e.stop_nbd_server(p.uuid("server_id")?);
    ok()
}
