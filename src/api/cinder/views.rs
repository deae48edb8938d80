//! How catalog records look to Cinder's clients, field by field, with the
//! microversion-gated and admin-only fields only where Cinder has them.

use serde_json::{json, Value};

use super::Ctx;
use crate::engine::catalog::{host_name, AttachStatus, AttachmentRecord, TypeRecord, VolumeRecord};

/// `kind`: the domain's kind ("file"/"block"), for the host attribute.
pub fn volume_detail(
    ctx: &Ctx,
    v: &VolumeRecord,
    vtype: Option<&TypeRecord>,
    kind: Option<&str>,
    attachments: &[AttachmentRecord],
) -> Value {
    let attached: Vec<Value> = attachments
        .iter()
        .filter(|a| a.volume_id == v.id && a.status == AttachStatus::Attached)
        .map(|a| {
            json!({
                "id": v.id, "attachment_id": a.id, "volume_id": v.id, "server_id": a.instance,
                "host_name": if ctx.admin { a.connector.as_ref().and_then(|c| c.get("host")).cloned() } else { None },
                "device": a.connector.as_ref().and_then(|c| c.get("mountpoint")).cloned(),
                "attached_at": a.attached_at,
            })
        })
        .collect();
    let mut d = json!({
        "id": v.id,
        "status": v.status.name(),
        "size": v.size,
        "availability_zone": v.availability_zone,
        "created_at": v.created_at,
        "updated_at": v.updated_at,
        "name": v.name,
        "description": v.description,
        "volume_type": vtype.map(|t| t.name.clone()),
        "snapshot_id": v.snapshot_id,
        "source_volid": v.source_volid,
        "metadata": v.metadata,
        "links": super::links(ctx, "volumes", v.id),
        "user_id": v.user,
        "bootable": if v.bootable { "true" } else { "false" },
        "encrypted": false,
        "replication_status": null,
        "consistencygroup_id": null,
        "multiattach": false,
        "attachments": attached,
        "os-vol-tenant-attr:tenant_id": v.project,
    });
    let o = d.as_object_mut().expect("object");
    if ctx.admin {
        o.insert("migration_status".into(), json!(v.migration_status));
        o.insert(
            "os-vol-host-attr:host".into(),
            match (v.domain, kind) {
                (Some(sd), Some(kind)) => json!(format!("{}@{kind}#{sd}", host_name())),
                _ => Value::Null,
            },
        );
        o.insert("os-vol-mig-status-attr:migstat".into(), Value::Null);
        o.insert("os-vol-mig-status-attr:name_id".into(), Value::Null);
    }
    if ctx.at_least(13) {
        o.insert("group_id".into(), Value::Null);
    }
    if ctx.at_least(21) && ctx.admin {
        o.insert("provider_id".into(), Value::Null);
    }
    if ctx.at_least(48) {
        o.insert("shared_targets".into(), json!(false));
        o.insert("service_uuid".into(), Value::Null);
    }
    if ctx.at_least(61) && ctx.admin {
        o.insert("cluster_name".into(), Value::Null);
    }
    if ctx.at_least(63) {
        o.insert("volume_type_id".into(), json!(v.type_id));
    }
    if ctx.at_least(65) {
        o.insert("consumes_quota".into(), json!(true));
    }
    d
}

/// Extra specs a non-admin may read.
const USER_VISIBLE_SPECS: [&str; 3] = [
    "RESKEY:availability_zones",
    "multiattach",
    "replication_enabled",
];

pub fn volume_type(ctx: &Ctx, t: &TypeRecord) -> Value {
    let specs: serde_json::Map<String, Value> = t
        .extra_specs
        .iter()
        .filter(|(k, _)| ctx.admin || USER_VISIBLE_SPECS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let mut d = json!({
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "is_public": t.is_public,
        "os-volume-type-access:is_public": t.is_public,
        "extra_specs": specs,
    });
    if ctx.admin {
        d["qos_specs_id"] = json!(t.qos_specs_id);
    }
    d
}
