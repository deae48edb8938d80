//! StorageDomain.*: create, inspect, attach and detach, format.

use super::*;

pub(super) const DOMAIN_CREATE: Verb = Verb {
    name: "StorageDomain.create",
    params: &[
        "storagedomainID",
        "domainType",
        "typeArgs",
        "name",
        "domainClass",
        "version",
        "blockSize",
        "maxHosts",
    ],
    handler: domain_create,
};

fn domain_create(e: &Arc<Engine>, p: &Params) -> Reply {
    // typeArgs: the remote path as a string, or {"remotePath": ...}.
    let remote_path = match p.opt_value("typeArgs") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => match o.get("remotePath") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(ApiError::invalid_params(
                    "typeArgs needs a 'remotePath' string",
                ))
            }
        },
        Some(_) => {
            return Err(ApiError::invalid_params(
                "typeArgs must be a remote path string or {\"remotePath\": ...}",
            ))
        }
        None => {
            return Err(ApiError::invalid_params(
                "missing required parameter 'typeArgs'",
            ))
        }
    };
    let version = p.opt_u32("version")?;
    e.create_domain(&CreateDomain {
        sd: p.uuid("storagedomainID")?,
        domain_type: p.enumeration("domainType")?,
        remote_path,
        name: p.string("name")?,
        class: p.enumeration("domainClass")?,
        version,
        block_size: p.opt_u32("blockSize")?.unwrap_or(512),
        max_hosts: p.opt_u32("maxHosts")?.unwrap_or(2000),
    })?;
    ok()
}

pub(super) const DOMAIN_GET_INFO: Verb = Verb {
    name: "StorageDomain.getInfo",
    params: &["storagedomainID"],
    handler: domain_get_info,
};

fn domain_get_info(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.domain_info(p.uuid("storagedomainID")?)?)
}

pub(super) const DOMAIN_GET_STATS: Verb = Verb {
    name: "StorageDomain.getStats",
    params: &["storagedomainID"],
    handler: domain_get_stats,
};

fn domain_get_stats(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.domain_stats(p.uuid("storagedomainID")?)?)
}

pub(super) const DOMAIN_GET_IMAGES: Verb = Verb {
    name: "StorageDomain.getImages",
    params: &["storagedomainID"],
    handler: domain_get_images,
};

fn domain_get_images(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.domain_images(p.uuid("storagedomainID")?)?)
}

pub(super) const DOMAIN_GET_VOLUMES: Verb = Verb {
    name: "StorageDomain.getVolumes",
    params: &["storagedomainID", "storagepoolID", "imageID"],
    handler: domain_get_volumes,
};

fn domain_get_volumes(e: &Arc<Engine>, p: &Params) -> Reply {
    p.opt_uuid("storagepoolID")?;
    let img = p.opt_uuid("imageID")?.filter(|u| *u != BLANK_UUID);
    to_value(&e.domain_volumes(p.uuid("storagedomainID")?, img)?)
}

pub(super) const DOMAIN_FORMAT: Verb = Verb {
    name: "StorageDomain.format",
    params: &["storagedomainID", "autoDetach"],
    handler: domain_format,
};

fn domain_format(e: &Arc<Engine>, p: &Params) -> Reply {
    e.format_domain(p.uuid("storagedomainID")?, p.bool_or("autoDetach", false)?)?;
    ok()
}

pub(super) const DOMAIN_DUMP: Verb = Verb {
    name: "StorageDomain.dump",
    params: &["sd_id", "full"],
    handler: domain_dump,
};

fn domain_dump(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&e.dump_domain(p.uuid("sd_id")?, p.bool_or("full", false)?)?)
}

pub(super) const DOMAIN_ATTACH: Verb = Verb {
    name: "StorageDomain.attach",
    params: &["storagedomainID", "storagepoolID"],
    handler: domain_attach,
};

fn domain_attach(e: &Arc<Engine>, p: &Params) -> Reply {
    e.attach_domain(p.uuid("storagedomainID")?, p.uuid("storagepoolID")?)?;
    ok()
}

pub(super) const DOMAIN_DETACH: Verb = Verb {
    name: "StorageDomain.detach",
    params: &[
        "storagedomainID",
        "storagepoolID",
        "masterSdUUID",
        "masterVersion",
        "force",
    ],
    handler: domain_detach,
};

fn domain_detach(e: &Arc<Engine>, p: &Params) -> Reply {
    check_master_unchanged(e, p)?;
    e.detach_domain(
        p.uuid("storagedomainID")?,
        p.uuid("storagepoolID")?,
        p.bool_or("force", false)?,
    )?;
    ok()
}

pub(super) const DOMAIN_ACTIVATE: Verb = Verb {
    name: "StorageDomain.activate",
    params: &["storagedomainID", "storagepoolID"],
    handler: domain_activate,
};

fn domain_activate(e: &Arc<Engine>, p: &Params) -> Reply {
    e.activate_domain(p.uuid("storagedomainID")?, p.uuid("storagepoolID")?)?;
    ok()
}

pub(super) const DOMAIN_DEACTIVATE: Verb = Verb {
    name: "StorageDomain.deactivate",
    params: &[
        "storagedomainID",
        "storagepoolID",
        "masterSdUUID",
        "masterVersion",
    ],
    handler: domain_deactivate,
};

fn domain_deactivate(e: &Arc<Engine>, p: &Params) -> Reply {
    check_master_unchanged(e, p)?;
    e.deactivate_domain(p.uuid("storagedomainID")?, p.uuid("storagepoolID")?)?;
    ok()
}
