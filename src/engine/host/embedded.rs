//! The embedded default: on the first start of a fresh data directory, a
//! LOCALFS domain under the data dir, a pool with it as master, this host
//! connected as host 1 and SPM, so volumes can be created at once.

use std::fs;

use crate::engine::domains::CreateDomain;
use crate::engine::pool::CreatePool;
use crate::engine::{ConnectionParams, Engine};
use crate::error::{Error, IoContext, Result};
use crate::types::{parse_uuid, DomainClass, DomainType, Uuid};

pub const EMBEDDED_HOST_ID: u32 = 1;
pub const EMBEDDED_MASTER_VERSION: i64 = 1;

#[derive(Debug, Clone, Copy)]
pub struct Embedded {
    pub pool: Uuid,
    pub domain: Uuid,
}

impl Engine {
    /// Sets up (or finds again) the embedded default pool and domain.
    /// Every step is idempotent, so an interrupted first start completes on
    /// the next one.
    pub fn ensure_embedded_default(&self) -> Result<Embedded> {
        let storage = self.paths.data_dir.join("storage").join("local");
        fs::create_dir_all(&storage).ctx("cannot create", &storage)?;
        let storage = storage.canonicalize().ctx("cannot resolve", &storage)?;
        let remote = storage
            .to_str()
            .ok_or_else(|| Error::invalid("data-dir", "must be valid UTF-8"))?
            .to_string();
        let conn = ConnectionParams {
            id: serde_json::json!("embedded"),
            spec: remote.clone(),
            ..Default::default()
        };
        for (_, result) in self.connect_storage_server(DomainType::LocalFs, &[conn]) {
            result?;
        }
        let existing = fs::read_dir(&storage)
            .ctx("cannot list", &storage)?
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(parse_uuid))
            .find(|sd| self.domain(*sd).is_ok());
        let domain = match existing {
            Some(sd) => sd,
            None => {
                let sd = Uuid::new_v4();
                self.create_domain(&CreateDomain {
                    sd,
                    domain_type: DomainType::LocalFs,
                    remote_path: remote,
                    name: "cairn-local".into(),
                    class: DomainClass::Data,
                    version: None,
                    block_size: 0,
                    max_hosts: 250,
                })?;
                sd
            }
        };
        let m = self.domain(domain)?.manifest()?;
        let (pool, master_version) = match (m.pools.first(), &m.pool) {
            (Some(&pool), Some(p)) => (pool, p.master_version),
            _ => {
                let pool = Uuid::new_v4();
                self.create_pool(&CreatePool {
                    id: pool,
                    name: "cairn".into(),
                    master_sd: domain,
                    master_version: EMBEDDED_MASTER_VERSION,
                    domains: vec![domain],
                })?;
                (pool, EMBEDDED_MASTER_VERSION)
            }
        };
        self.connect_pool(pool, EMBEDDED_HOST_ID, domain, master_version)?;
        self.spm_start_now(pool, None)?;
        tracing::info!(pool = %pool, domain = %domain, "embedded default storage is ready");
        Ok(Embedded { pool, domain })
    }
}
