//! The catalog's records on the master domain: one JSON file per record,
//! `<master>/catalog/<table>/<id>.json`, replaced crash-safely, loaded into
//! memory when the SPM opens the catalog. Only the SPM writes the master,
//! so a table's lock makes every change a compare-and-swap.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::primitives::{durable, nofollow};
use crate::types::Uuid;

/// The largest record read back (storage content is untrusted).
const MAX_RECORD: u64 = 1 << 20;

/// A kind of record kept in a table.
pub trait Record: Serialize + DeserializeOwned + Clone {
    /// The table's directory name, and the kind named in errors.
    const TABLE: &'static str;
    const KIND: &'static str;
    fn id(&self) -> Uuid;
}

/// The records of one kind, in memory and on the master.
pub struct Table<T: Record> {
    dir: PathBuf,
    rows: Mutex<BTreeMap<Uuid, T>>,
    /// Notified after every change, for waiters on a record.
    changed: Condvar,
}

impl<T: Record> Table<T> {
    /// Loads every readable record; an unreadable one is logged and left
    /// in place for an operator (it is never trusted, never half-read).
    pub fn open(root: &Path) -> Result<Table<T>> {
        let dir = root.join(T::TABLE);
        ensure_dir(&dir)?;
        let mut rows = BTreeMap::new();
        let entries = std::fs::read_dir(&dir).ctx("cannot list catalog table", &dir)?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(crate::types::parse_uuid)
            else {
                continue;
            };
            match read_record::<T>(&entry.path()) {
                Ok(rec) if rec.id() == id => {
                    rows.insert(id, rec);
                }
                Ok(_) => {
                    tracing::error!(record = %entry.path().display(), "catalog record names another id; ignored")
                }
                Err(e) => {
                    tracing::error!(record = %entry.path().display(), error = %e, "unreadable catalog record; ignored")
                }
            }
        }
        Ok(Table {
            dir,
            rows: Mutex::new(rows),
            changed: Condvar::new(),
        })
    }

    fn path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn not_found(id: Uuid) -> Error {
        Error::CatalogNotFound {
            kind: T::KIND,
            id: id.to_string(),
        }
    }

    pub fn all(&self) -> Vec<T> {
        self.rows
            .lock()
            .expect("catalog")
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, id: Uuid) -> Result<T> {
        self.rows
            .lock()
            .expect("catalog")
            .get(&id)
            .cloned()
            .ok_or_else(|| Self::not_found(id))
    }

    /// Waits until `done` holds for record `id` (None: it is gone) or
    /// `deadline` passes; returns the record as it is then.
    pub fn wait_for(&self, id: Uuid, deadline: Instant, done: impl Fn(&T) -> bool) -> Option<T> {
        let mut rows = self.rows.lock().expect("catalog");
        loop {
            let rec = rows.get(&id).cloned();
            let now = Instant::now();
            if rec.as_ref().is_none_or(&done) || now >= deadline {
                return rec;
            }
            rows = self
                .changed
                .wait_timeout(rows, deadline - now)
                .expect("catalog")
                .0;
        }
    }

    /// The first record `pick` chooses, read under the table's lock.
    pub fn find(&self, pick: impl Fn(&T) -> bool) -> Option<T> {
        self.rows
            .lock()
            .expect("catalog")
            .values()
            .find(|r| pick(r))
            .cloned()
    }

    /// Adds a record after `check` accepted it against the table (under
    /// the lock, so two adds cannot both pass a uniqueness check).
    pub fn insert(
        &self,
        rec: T,
        check: impl FnOnce(&BTreeMap<Uuid, T>) -> Result<()>,
    ) -> Result<T> {
        let mut rows = self.rows.lock().expect("catalog");
        check(&rows)?;
        let id = rec.id();
        self.write(&rec)?;
        rows.insert(id, rec.clone());
        self.changed.notify_all();
        Ok(rec)
    }

    /// Changes a record: `change` sees the current one and either refuses
    /// (nothing is written) or edits it; the edit is durable before the
    /// table shows it.
    pub fn update(&self, id: Uuid, change: impl FnOnce(&mut T) -> Result<()>) -> Result<T> {
        let mut rows = self.rows.lock().expect("catalog");
        let mut rec = rows.get(&id).cloned().ok_or_else(|| Self::not_found(id))?;
        change(&mut rec)?;
        self.write(&rec)?;
        rows.insert(id, rec.clone());
        self.changed.notify_all();
        Ok(rec)
    }

    /// Removes a record if `check` allows it.
    pub fn remove(&self, id: Uuid, check: impl FnOnce(&T) -> Result<()>) -> Result<T> {
        let mut rows = self.rows.lock().expect("catalog");
        let rec = rows.get(&id).cloned().ok_or_else(|| Self::not_found(id))?;
        check(&rec)?;
        let path = self.path(id);
        durable::remove_if_exists(&path).ctx("cannot remove catalog record", &path)?;
        durable::fsync_dir(&self.dir).ctx("cannot sync catalog table", &self.dir)?;
        rows.remove(&id);
        self.changed.notify_all();
        Ok(rec)
    }

    fn write(&self, rec: &T) -> Result<()> {
        let path = self.path(rec.id());
        let data = serde_json::to_vec_pretty(rec).expect("records serialize");
        durable::write_atomic(&path, &data, 0o600).ctx("cannot write catalog record", &path)
    }
}

fn read_record<T: Record>(path: &Path) -> std::io::Result<T> {
    let file = nofollow::open(path, nofollow::Access::READ)?;
    let mut data = Vec::new();
    file.take(MAX_RECORD + 1).read_to_end(&mut data)?;
    if data.len() as u64 > MAX_RECORD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_RECORD} bytes"),
        ));
    }
    serde_json::from_slice(&data)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Makes `dir` (synced) unless it is there; a link or a file in its place
/// (planted on storage) is refused.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    match nofollow::check_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            durable::create_dir(dir, 0o700).ctx("cannot create catalog directory", dir)
        }
        Err(e) => Err(Error::io_path("unusable catalog directory", dir, e)),
    }
}
