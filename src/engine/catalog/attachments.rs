//! Attachments: a volume reserved for a consumer, connected to the host
//! it runs on, then in use. A consumer on this host gets a local
//! connection: the volume is prepared here and its path handed over
//! (os-brick's "local" connector). A consumer on another host gets a block
//! domain's RAW volume over iSCSI, through a tgtd target of its own with a
//! CHAP account of its own, when this host serves iSCSI. Both carry the
//! type's front-end QoS specs.

use std::sync::Arc;

use serde_json::{json, Value};

use super::records::{
    timestamp, AttachStatus, AttachmentRecord, IscsiExport, ShareExport, VolumeRecord, VolumeStatus,
};
use super::Catalog;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::types::Uuid;

/// The QoS keys whose `_per_gb` forms scale with the volume (Cinder's).
const SCALED: [&str; 6] = [
    "read_iops_sec",
    "read_bytes_sec",
    "write_iops_sec",
    "write_bytes_sec",
    "total_iops_sec",
    "total_bytes_sec",
];

fn invalid(reason: impl Into<String>) -> Error {
    Error::CatalogInvalid {
        kind: "volume",
        reason: reason.into(),
    }
}

impl Catalog {
    /// The front-end QoS specs of a volume's type, `_per_gb` ones scaled
    /// to its size (floored by `_per_gb_min`, capped by `_max`).
    fn front_end_qos(&self, volume: Uuid) -> Option<Value> {
        let v = self.volumes.get(volume).ok()?;
        let t = self.types.get(v.type_id).ok()?;
        let q = self.qos.get(t.qos_specs_id?).ok()?;
        if q.consumer == "back-end" {
            return None;
        }
        let mut out = serde_json::Map::new();
        for (k, val) in &q.specs {
            out.insert(k.clone(), json!(val));
        }
        for key in SCALED {
            let num = |k: String| q.specs.get(&k).and_then(|x| x.parse::<u64>().ok());
            if let Some(per_gb) = num(format!("{key}_per_gb")) {
                let mut value = per_gb * v.size;
                if let Some(min) = num(format!("{key}_per_gb_min")) {
                    value = value.max(min);
                }
                if let Some(max) = num(format!("{key}_max")) {
                    value = value.min(max);
                }
                out.insert(key.to_string(), json!(value.to_string()));
            }
        }
        Some(Value::Object(out))
    }
}

impl Engine {
    /// Reserves `volume` for a consumer; with a connector, connects it too.
    pub fn create_catalog_attachment(
        self: &Arc<Self>,
        volume: Uuid,
        project: &str,
        instance: Option<String>,
        connector: Option<Value>,
        mode: &str,
    ) -> Result<AttachmentRecord> {
        let cat = self.catalog()?;
        if !["rw", "ro"].contains(&mode) {
            return Err(invalid(format!("attach mode {mode:?} is not rw or ro")));
        }
        cat.volumes.update(volume, |v| {
            if v.status != VolumeStatus::Available {
                return Err(invalid(format!(
                    "Volume {} status must be available to reserve (it is {}); Cairn volumes are not multiattach",
                    v.id,
                    v.status.name()
                )));
            }
            v.status = VolumeStatus::Reserved;
            v.updated_at = Some(timestamp());
            Ok(())
        })?;
        let rec = AttachmentRecord {
            id: Uuid::new_v4(),
            volume_id: volume,
            project: project.to_string(),
            instance,
            status: AttachStatus::Reserved,
            mode: mode.to_string(),
            connector: None,
            device_path: None,
            iscsi: None,
            share: None,
            attached_at: None,
            created_at: timestamp(),
        };
        let rec = cat.attachments.insert(rec, |_| Ok(()))?;
        match connector {
            Some(c) => self.connect_catalog_attachment(rec.id, c).inspect_err(|_| {
                // A connection refused reserves nothing.
                if let Err(e) = self.delete_catalog_attachment(rec.id) {
                    tracing::error!(attachment = %rec.id, error = %e, "cannot undo a refused attachment");
                }
            }),
            None => Ok(rec),
        }
    }

    /// Connects a reserved attachment to the host its connector names.
    pub fn connect_catalog_attachment(
        self: &Arc<Self>,
        id: Uuid,
        connector: Value,
    ) -> Result<AttachmentRecord> {
        let cat = self.catalog()?;
        let att = cat.attachments.get(id)?;
        let host = connector
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let v = cat.volumes.get(att.volume_id)?;
        let sd = v
            .domain
            .ok_or_else(|| invalid("the volume has no storage"))?;
        // A connector naming this host gets the volume prepared here.
        // Another host mounts a shared file domain itself, or gets a block
        // domain's RAW volume over iSCSI, if this host serves it.
        let here = super::host_name();
        let (device_path, iscsi, share) = if host == here {
            let path = self.prepare_image(cat.pool, sd, v.id, v.leaf, false)?;
            (Some(path), None, None)
        } else if let Some(share) = self.share_export(&v, sd)? {
            tracing::info!(volume = %v.id, export = %share.export, host, "volume reached through its domain's share");
            (None, None, Some(share))
        } else {
            self.check_iscsi_export(&v, sd, &connector, &here, host)?;
            let path = self.prepare_image(cat.pool, sd, v.id, v.leaf, false)?;
            match self.export_iscsi(&v, &path, &connector) {
                Ok(e) => (Some(path), Some(e), None),
                Err(e) => {
                    let _ = self.teardown_image(cat.pool, sd, v.id);
                    return Err(e);
                }
            }
        };
        cat.volumes.update(v.id, |v| {
            if v.status == VolumeStatus::Reserved {
                v.status = VolumeStatus::Attaching;
            }
            Ok(())
        })?;
        cat.attachments.update(id, |a| {
            a.connector = Some(connector);
            a.device_path = device_path.map(|p| p.display().to_string());
            a.iscsi = iscsi;
            a.share = share;
            if a.status == AttachStatus::Reserved {
                a.status = AttachStatus::Attaching;
            }
            Ok(())
        })
    }

    /// The consumer (`instance`, when it says) has the volume: it is in use.
    pub fn complete_catalog_attachment(
        self: &Arc<Self>,
        id: Uuid,
        instance: Option<String>,
    ) -> Result<AttachmentRecord> {
        let cat = self.catalog()?;
        let att = cat.attachments.update(id, |a| {
            if a.device_path.is_none() && a.share.is_none() {
                return Err(invalid(
                    "the attachment has no connection yet (update it with a connector)",
                ));
            }
            if instance.is_some() {
                a.instance = instance;
            }
            a.status = AttachStatus::Attached;
            a.attached_at = Some(timestamp());
            Ok(())
        })?;
        cat.volumes.update(att.volume_id, |v| {
            v.status = VolumeStatus::InUse;
            v.updated_at = Some(timestamp());
            Ok(())
        })?;
        Ok(att)
    }

    /// The legacy detach's first step (`begin`) or its undo: an in-use
    /// volume is `detaching` until the attachment goes.
    pub fn mark_catalog_detaching(
        self: &Arc<Self>,
        volume: Uuid,
        begin: bool,
    ) -> Result<VolumeRecord> {
        let (from, to) = if begin {
            (VolumeStatus::InUse, VolumeStatus::Detaching)
        } else {
            (VolumeStatus::Detaching, VolumeStatus::InUse)
        };
        self.catalog()?.volumes.update(volume, |v| {
            if v.status != from {
                return Err(invalid(format!(
                    "Volume status must be {} (it is {})",
                    from.name(),
                    v.status.name()
                )));
            }
            v.status = to;
            v.updated_at = Some(timestamp());
            Ok(())
        })
    }

    /// Removes an attachment: the volume is torn down on this host and
    /// available again. Returns the volume's remaining attachments.
    pub fn delete_catalog_attachment(self: &Arc<Self>, id: Uuid) -> Result<Vec<AttachmentRecord>> {
        let cat = self.catalog()?;
        let att = cat.attachments.get(id)?;
        let v = cat.volumes.get(att.volume_id)?;
        if let Some(e) = &att.iscsi {
            crate::primitives::tgt::remove(e.tid, &e.user)
                .map_err(|err| Error::io("cannot remove the volume's iSCSI target", err))?;
        }
        if att.device_path.is_some() {
            if let Some(sd) = v.domain {
                self.teardown_image(cat.pool, sd, v.id)?;
            }
        }
        cat.attachments.remove(id, |_| Ok(()))?;
        cat.volumes.update(v.id, |v| {
            v.status = VolumeStatus::Available;
            v.updated_at = Some(timestamp());
            Ok(())
        })?;
        Ok(cat
            .attachments
            .all()
            .into_iter()
            .filter(|a| a.volume_id == v.id)
            .collect())
    }

    /// How another host reaches volume `v` through its domain's share, if
    /// the domain is on one another host can mount (NFS, GlusterFS).
    fn share_export(&self, v: &VolumeRecord, sd: Uuid) -> Result<Option<ShareExport>> {
        let info = self.domain_info(sd)?;
        let driver = match info.domain_type {
            crate::types::DomainType::Nfs => "nfs",
            crate::types::DomainType::GlusterFs => "glusterfs",
            _ => return Ok(None),
        };
        let dom = self.domain(sd)?;
        let Some(name) = dom.share_relative_path(v.id, v.leaf) else {
            return Ok(None);
        };
        let md = self.volume_info(sd, v.id, v.leaf)?.md;
        Ok(Some(ShareExport {
            driver: driver.into(),
            export: info.remote_path,
            name,
            format: match md.format {
                crate::types::VolumeFormat::Cow => "qcow2",
                crate::types::VolumeFormat::Raw => "raw",
            }
            .into(),
        }))
    }

    /// Whether volume `v` can be served to `host` over iSCSI: this host
    /// exports (a portal is set), the connector names its initiator, and
    /// the volume is one RAW LV (a LUN carries raw blocks, not a qcow2
    /// chain).
    fn check_iscsi_export(
        &self,
        v: &VolumeRecord,
        sd: Uuid,
        connector: &Value,
        here: &str,
        host: &str,
    ) -> Result<()> {
        if self.iscsi_portal.is_none() {
            return Err(invalid(format!(
                "Cairn connects volumes to the host that serves them ({here}), not {host:?}: run the consumer there, or serve block volumes over iSCSI (--cinder-iscsi-portal)"
            )));
        }
        if connector
            .get("initiator")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(invalid("the connector names no iSCSI initiator"));
        }
        if self.domain(sd)?.caps().qemu_driver != "host_device" {
            return Err(invalid(format!(
                "volume {} is on a file domain: another host reaches it on this host only ({here})",
                v.id
            )));
        }
        let md = self.volume_info(sd, v.id, v.leaf)?.md;
        if md.format != crate::types::VolumeFormat::Raw || md.parent != crate::types::BLANK_UUID {
            return Err(invalid(format!(
                "an iSCSI LUN carries a RAW volume; volume {} is a qcow2 chain (a thin type, or snapshots): give it a thick type (provisioning:type=thick)",
                v.id
            )));
        }
        Ok(())
    }

    /// Serves the prepared volume at `path` through a tgtd target of its
    /// own, with a fresh CHAP account, to the connector's initiator.
    fn export_iscsi(
        &self,
        v: &VolumeRecord,
        path: &std::path::Path,
        connector: &Value,
    ) -> Result<IscsiExport> {
        let portal = self.iscsi_portal.clone().expect("checked");
        let initiator = connector["initiator"].as_str().expect("checked");
        let iqn = format!("iqn.2026-12.org.cairn:volume-{}", v.id);
        let user = format!("cairn-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let password = Uuid::new_v4().simple().to_string()[..16].to_string();
        let tid = crate::primitives::tgt::add(&crate::primitives::tgt::Export {
            iqn: &iqn,
            device: path,
            initiator,
            user: &user,
            password: &password,
        })
        .map_err(|e| Error::io("cannot serve the volume over iSCSI (is tgtd running?)", e))?;
        tracing::info!(volume = %v.id, tid, iqn = %iqn, initiator, "volume served over iSCSI");
        Ok(IscsiExport {
            tid,
            iqn,
            portal,
            user,
            password,
        })
    }

    /// What os-brick needs to reach an attachment's volume.
    pub fn catalog_connection_info(self: &Arc<Self>, att: &AttachmentRecord) -> Result<Value> {
        let cat = self.catalog()?;
        if let Some(sh) = &att.share {
            return Ok(json!({
                "driver_volume_type": sh.driver,
                "data": {
                    "export": sh.export,
                    "name": sh.name,
                    "format": sh.format,
                    "options": null,
                    "access_mode": att.mode,
                    "qos_specs": cat.front_end_qos(att.volume_id),
                    "volume_id": att.volume_id,
                    "encrypted": false,
                },
                "attachment_id": att.id,
                "enforce_multipath": false,
            }));
        }
        let Some(path) = &att.device_path else {
            return Ok(json!({}));
        };
        if let Some(e) = &att.iscsi {
            return Ok(json!({
                "driver_volume_type": "iscsi",
                "data": {
                    "target_discovered": false,
                    "target_iqn": e.iqn,
                    "target_portal": e.portal,
                    "target_lun": 1,
                    "volume_id": att.volume_id,
                    "auth_method": "CHAP",
                    "auth_username": e.user,
                    "auth_password": e.password,
                    "access_mode": att.mode,
                    "qos_specs": cat.front_end_qos(att.volume_id),
                    "encrypted": false,
                    "discard": false,
                },
                "attachment_id": att.id,
                "enforce_multipath": false,
            }));
        }
        Ok(json!({
            "driver_volume_type": "local",
            "data": {
                "device_path": path,
                "access_mode": att.mode,
                "qos_specs": cat.front_end_qos(att.volume_id),
                "volume_id": att.volume_id,
                "attachment_id": att.id,
                "encrypted": false,
                "discard": true,
            },
            "attachment_id": att.id,
            "enforce_multipath": false,
        }))
    }
}
