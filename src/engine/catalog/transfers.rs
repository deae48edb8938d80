//! Volume transfers between projects: the giver gets a one-time key, the
//! receiver shows it; only a salted HMAC of the key is kept.

use std::sync::Arc;

use sha1::Sha1;

use super::records::{timestamp, SnapshotStatus, TransferRecord, VolumeStatus};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::types::Uuid;

fn invalid(kind: &'static str, reason: impl Into<String>) -> Error {
    Error::CatalogInvalid {
        kind,
        reason: reason.into(),
    }
}

/// `n` random hex characters.
fn random_hex(n: usize) -> String {
    let mut s = String::new();
    while s.len() < n {
        s.push_str(&Uuid::new_v4().simple().to_string());
    }
    s.truncate(n);
    s
}

/// HMAC-SHA1 of `message` under `key`, in hex (Cinder's transfer hash).
fn hmac_sha1(key: &[u8], message: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equal, in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Engine {
    /// Offers volume `volume_id` of `project`; returns the transfer and
    /// its key (shown once).
    pub fn create_catalog_transfer(
        self: &Arc<Self>,
        volume_id: Uuid,
        project: &str,
        name: Option<String>,
        no_snapshots: bool,
    ) -> Result<(TransferRecord, String)> {
        let cat = self.catalog()?;
        let snapshots: Vec<_> = cat
            .snapshots
            .all()
            .into_iter()
            .filter(|s| s.volume_id == volume_id)
            .collect();
        if no_snapshots && !snapshots.is_empty() {
            return Err(invalid(
                "volume",
                "Cairn transfers a volume with its snapshots (they are layers of its chain); no_snapshots cannot leave them behind",
            ));
        }
        if snapshots
            .iter()
            .any(|s| s.status != SnapshotStatus::Available)
        {
            return Err(invalid(
                "volume",
                "all the volume's snapshots must be available",
            ));
        }
        let key = random_hex(16);
        let salt = random_hex(8);
        let rec = TransferRecord {
            id: Uuid::new_v4(),
            volume_id,
            name,
            crypt_hash: hmac_sha1(salt.as_bytes(), key.as_bytes()),
            salt,
            source_project: project.to_string(),
            no_snapshots,
            created_at: timestamp(),
        };
        cat.volumes.update(volume_id, |v| {
            if v.status != VolumeStatus::Available {
                return Err(invalid(
                    "volume",
                    format!(
                        "status must be available to transfer (it is {})",
                        v.status.name()
                    ),
                ));
            }
            v.status = VolumeStatus::AwaitingTransfer;
            v.updated_at = Some(timestamp());
            Ok(())
        })?;
        match cat.transfers.insert(rec, |_| Ok(())) {
            Ok(rec) => Ok((rec, key)),
            Err(e) => {
                // Put the volume back: nothing was offered.
                let _ = cat.volumes.update(volume_id, |v| {
                    v.status = VolumeStatus::Available;
                    Ok(())
                });
                Err(e)
            }
        }
    }

    /// Takes a transfer with its key: the volume (and its snapshots) moves
    /// to `project` and `user`. A wrong key changes nothing.
    pub fn accept_catalog_transfer(
        self: &Arc<Self>,
        id: Uuid,
        key: &str,
        project: &str,
        user: &str,
    ) -> Result<TransferRecord> {
        let cat = self.catalog()?;
        let t = cat.transfers.get(id)?;
        if !same(&hmac_sha1(t.salt.as_bytes(), key.as_bytes()), &t.crypt_hash) {
            return Err(invalid(
                "auth key",
                format!("Attempt to transfer {} with invalid auth key.", t.volume_id),
            ));
        }
        // The receiver takes on the volume and its snapshots, so they
        // count against its quota, as in Cinder.
        let size = cat.volumes.get(t.volume_id)?.size;
        let snapshots: Vec<_> = cat
            .snapshots
            .all()
            .into_iter()
            .filter(|s| s.volume_id == t.volume_id)
            .collect();
        let _quota = cat.claim_quota(
            project,
            super::Demand {
                volumes: 1,
                gigabytes: super::quotas::gib(size + snapshots.iter().map(|s| s.size).sum::<u64>()),
                snapshots: snapshots.len() as i64,
                volume_size: Some(super::quotas::gib(size)),
                ..Default::default()
            },
        )?;
        // The volume moves first, by a compare-and-swap a second accept
        // fails; the transfer goes last (recovery removes an accepted one
        // a crash left).
        cat.volumes.update(t.volume_id, |v| {
            if v.status != VolumeStatus::AwaitingTransfer || v.project != t.source_project {
                return Err(Error::CatalogNotFound {
                    kind: "transfer",
                    id: id.to_string(),
                });
            }
            v.project = project.to_string();
            v.user = user.to_string();
            v.status = VolumeStatus::Available;
            v.updated_at = Some(timestamp());
            Ok(())
        })?;
        crate::failpoint::hit("catalog.transfer.accepted")?;
        self.follow_owner(&cat, t.volume_id)?;
        cat.transfers.remove(id, |_| Ok(()))?;
        tracing::info!(transfer = %id, volume = %t.volume_id, from = %t.source_project, to = %project, "volume transferred");
        Ok(t)
    }

    /// Gives a volume's snapshots their volume's project and user.
    fn follow_owner(&self, cat: &super::Catalog, volume: Uuid) -> Result<()> {
        let v = cat.volumes.get(volume)?;
        for s in cat
            .snapshots
            .all()
            .into_iter()
            .filter(|s| s.volume_id == volume && s.project != v.project)
        {
            cat.snapshots.update(s.id, |s| {
                s.project = v.project.clone();
                s.user = v.user.clone();
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Mends what a crash in the middle of a transfer left: an accepted
    /// transfer still listed, snapshots not yet moved with their volume,
    /// a volume on offer without an offer.
    pub(super) fn recover_transfers(&self, cat: &super::Catalog) {
        let result = (|| -> Result<()> {
            for t in cat.transfers.all() {
                match cat.volumes.get(t.volume_id) {
                    Ok(v) if v.project == t.source_project => {}
                    _ => {
                        cat.transfers.remove(t.id, |_| Ok(()))?;
                        tracing::info!(transfer = %t.id, "removed a transfer accepted before a crash");
                    }
                }
            }
            for v in cat.volumes.all() {
                self.follow_owner(cat, v.id)?;
                if v.status == VolumeStatus::AwaitingTransfer
                    && cat.transfers.find(|t| t.volume_id == v.id).is_none()
                {
                    cat.volumes.update(v.id, |v| {
                        v.status = VolumeStatus::Available;
                        Ok(())
                    })?;
                    tracing::info!(volume = %v.id, "a volume offered without a transfer is available again");
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot recover interrupted transfers");
        }
    }

    /// Withdraws an offer: the volume is available to its project again.
    pub fn delete_catalog_transfer(self: &Arc<Self>, id: Uuid) -> Result<TransferRecord> {
        let cat = self.catalog()?;
        let t = cat.transfers.remove(id, |_| Ok(()))?;
        cat.volumes.update(t.volume_id, |v| {
            if v.status == VolumeStatus::AwaitingTransfer {
                v.status = VolumeStatus::Available;
                v.updated_at = Some(timestamp());
            }
            Ok(())
        })?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        assert_eq!(
            hmac_sha1(&[0x0b; 20], b"Hi There"),
            "b617318655057264e28bc0b6fb378c8ef146be00"
        );
        assert_eq!(
            hmac_sha1(b"Jefe", b"what do ya want for nothing?"),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
        assert_eq!(
            hmac_sha1(
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }
}
