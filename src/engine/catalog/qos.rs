//! QoS specs and their association with volume types.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::records::{timestamp, QosRecord};
use super::volumes::check_metadata;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::types::Uuid;

const CONSUMERS: [&str; 3] = ["front-end", "back-end", "both"];

fn invalid(reason: impl Into<String>) -> Error {
    Error::CatalogInvalid {
        kind: "QoS specs",
        reason: reason.into(),
    }
}

fn check_consumer(c: &str) -> Result<()> {
    if CONSUMERS.contains(&c) {
        Ok(())
    } else {
        Err(invalid(format!(
            "consumer {c:?} is not one of {CONSUMERS:?}"
        )))
    }
}

impl Engine {
    pub fn create_catalog_qos(
        self: &Arc<Self>,
        name: String,
        consumer: Option<String>,
        specs: BTreeMap<String, String>,
    ) -> Result<QosRecord> {
        let cat = self.catalog()?;
        if name.trim().is_empty() || name.chars().count() > 255 {
            return Err(invalid("the name must be 1-255 characters"));
        }
        let consumer = consumer.unwrap_or_else(|| "back-end".into());
        check_consumer(&consumer)?;
        check_metadata(&specs)?;
        let rec = QosRecord {
            id: Uuid::new_v4(),
            name: name.clone(),
            consumer,
            specs,
            created_at: timestamp(),
        };
        cat.qos.insert(rec, |rows| {
            if rows.values().any(|q| q.name == name) {
                return Err(Error::CatalogConflict(format!(
                    "QoS Specs {name} already exists."
                )));
            }
            Ok(())
        })
    }

    /// Sets keys (`consumer` among them) and removes `unset` ones.
    pub fn update_catalog_qos(
        self: &Arc<Self>,
        id: Uuid,
        mut set: BTreeMap<String, String>,
        unset: &[String],
    ) -> Result<QosRecord> {
        let cat = self.catalog()?;
        let consumer = set.remove("consumer");
        if let Some(c) = &consumer {
            check_consumer(c)?;
        }
        check_metadata(&set)?;
        cat.qos.update(id, |q| {
            for k in unset {
                if q.specs.remove(k).is_none() {
                    return Err(Error::CatalogNotFound {
                        kind: "QoS spec key",
                        id: k.clone(),
                    });
                }
            }
            q.specs.extend(set);
            if let Some(c) = consumer {
                q.consumer = c;
            }
            Ok(())
        })
    }

    /// Deletes QoS specs; associated ones only with `force` (their types
    /// lose them).
    pub fn delete_catalog_qos(self: &Arc<Self>, id: Uuid, force: bool) -> Result<QosRecord> {
        let cat = self.catalog()?;
        let users: Vec<_> = cat
            .types
            .all()
            .into_iter()
            .filter(|t| t.qos_specs_id == Some(id))
            .collect();
        if !users.is_empty() && !force {
            return Err(invalid(format!(
                "QoS Specs {id} is still associated with entities ({} volume types)",
                users.len()
            )));
        }
        cat.qos.get(id)?;
        for t in users {
            cat.types.update(t.id, |t| {
                t.qos_specs_id = None;
                Ok(())
            })?;
        }
        cat.qos.remove(id, |_| Ok(()))
    }

    /// Associates QoS specs `id` with type `type_key` (Some), or removes
    /// the association (None type: from every type).
    pub fn associate_catalog_qos(
        self: &Arc<Self>,
        id: Uuid,
        type_key: Option<&str>,
        associate: bool,
    ) -> Result<()> {
        let cat = self.catalog()?;
        cat.qos.get(id)?;
        let types = match type_key {
            Some(k) => vec![cat.find_type(k)?],
            None => cat
                .types
                .all()
                .into_iter()
                .filter(|t| t.qos_specs_id == Some(id))
                .collect(),
        };
        for t in types {
            cat.types.update(t.id, |t| {
                match (associate, t.qos_specs_id) {
                    (true, Some(other)) if other != id => {
                        return Err(invalid(format!(
                            "Type {} is already associated with another qos specs: {other}",
                            t.id
                        )))
                    }
                    (true, _) => t.qos_specs_id = Some(id),
                    (false, Some(other)) if other == id => t.qos_specs_id = None,
                    (false, _) => {}
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}
