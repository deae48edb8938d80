//! What a task needs to survive a crash, as data.
//!
//! Before a task changes storage it persists a [`RecoveryPlan`]: the undo
//! steps (run in reverse order to roll back), the redo steps (run to finish
//! once the task is past its point of no return) and the [`Commit`] check
//! that tells which of the two applies. Every step is idempotent and safe to
//! run whether or not the step it answers for happened, so recovery never
//! needs to know how far the task got. Steps name domains, images, volumes
//! and their parts, never a backend's layout, so any host that sees the
//! domain can recover the task, whatever the domain's backend.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::Part;
use crate::error::{Error, Result};
use crate::primitives::durable;
use crate::types::{Uuid, VolumeFormat};

pub mod legacy;

/// Format version of persisted task records. Version 1 named files of a
/// file domain; its records are still read (see [`legacy`]).
pub const RECORD_VERSION: u32 = 2;
pub const RECORD_FILE: &str = "task.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Remove one part of a volume if it is there.
    RemovePart {
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        part: Part,
    },
    /// Undo the linking of template `vol` into image `img`.
    UnlinkTemplate { sd: Uuid, img: Uuid, vol: Uuid },
    /// Replace a volume's metadata with these contents.
    WriteVolumeMetadata {
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        contents: String,
    },
    /// Make an INTERNAL volume a LEAF again if no volume names it as parent.
    RelinkLeaf { sd: Uuid, img: Uuid, vol: Uuid },
    /// Remove an image that holds no volume of its own any more.
    RemoveImageIfEmpty { sd: Uuid, img: Uuid },
    /// Zero and/or discard a volume's data (a template shared with clones
    /// keeps its data).
    Scrub {
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        zero: bool,
        discard: bool,
    },
    /// Take an image out of the domain's catalogue (delete's commit point).
    RetireImage { sd: Uuid, img: Uuid },
    /// Scrub (if asked) and remove a retired image.
    PurgeImage {
        sd: Uuid,
        img: Uuid,
        zero: bool,
        discard: bool,
    },
    /// Remove an uncommitted import of an image.
    DiscardImport { sd: Uuid, img: Uuid },
    /// Set a volume's virtual size.
    ResizeImage {
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        format: VolumeFormat,
        size: u64,
    },
    /// Remove a persistent bitmap of a qcow2 volume if it has it.
    RemoveBitmap {
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        name: String,
    },
    /// Point a qcow2 volume's header at another backing volume of its
    /// image, without touching data (`qemu-img rebase -u`).
    Rebase {
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        backing: Uuid,
        backing_format: VolumeFormat,
    },
}

impl Step {
    /// Removing a volume's data and lease (its metadata, the commit point
    /// of creates and deletes, is removed on its own).
    pub fn remove_data_and_lease(sd: Uuid, img: Uuid, vol: Uuid) -> [Step; 2] {
        [Part::Data, Part::Lease].map(|part| Step::RemovePart { sd, img, vol, part })
    }
}

/// How recovery decides whether a task passed its point of no return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "if", rename_all = "snake_case")]
pub enum Commit {
    /// Committed once the volume exists (its metadata: a create).
    VolumeExists { sd: Uuid, img: Uuid, vol: Uuid },
    /// Committed once the volume's metadata is gone (a delete).
    VolumeMissing { sd: Uuid, img: Uuid, vol: Uuid },
    /// Committed once the image is in the catalogue (an import).
    ImageExists { sd: Uuid, img: Uuid },
    /// Committed once the image is out of the catalogue (a delete).
    ImageMissing { sd: Uuid, img: Uuid },
    /// Committed once the volume's metadata reads exactly so (an update).
    VolumeMetadataIs {
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        contents: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryPlan {
    /// Undo steps in the order the changes happen; rollback runs them last
    /// first.
    pub undo: Vec<Step>,
    /// Steps that finish a committed task, in order.
    pub redo: Vec<Step>,
    pub commit: Option<Commit>,
}

/// A failure as persisted: VDSM code and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedError {
    pub code: i64,
    pub message: String,
}

/// A task as persisted in `<tasks dir>/<taskID>/task.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub version: u32,
    pub id: Uuid,
    pub verb: String,
    /// init, running, finished (the intermediate states are not persisted).
    pub state: String,
    /// "", success, cleanSuccess, cleanFailure.
    pub result: String,
    pub error: Option<RecordedError>,
    pub plan: RecoveryPlan,
    pub created: u64,
    /// When it finished (seconds since the epoch).
    #[serde(default)]
    pub finished: Option<u64>,
}

impl TaskRecord {
    /// A new record, as a task is queued.
    pub fn new(id: Uuid, verb: &str) -> TaskRecord {
        TaskRecord {
            version: RECORD_VERSION,
            id,
            verb: verb.to_string(),
            state: "init".into(),
            result: String::new(),
            error: None,
            plan: RecoveryPlan::default(),
            created: crate::now_secs(),
            finished: None,
        }
    }

    pub fn dir(tasks_dir: &Path, id: Uuid) -> PathBuf {
        tasks_dir.join(id.to_string())
    }

    /// Writes the record crash-safely. The first write creates the task's
    /// directory and makes its entry durable too.
    pub fn save(&self, tasks_dir: &Path) -> io::Result<()> {
        let dir = Self::dir(tasks_dir, self.id);
        if !dir.is_dir() {
            durable::create_dir(&dir, 0o755)?;
        }
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        durable::write_atomic(&dir.join(RECORD_FILE), &bytes, 0o644)
    }

    /// Reads a record of this version or of version 1, which is
    /// translated (a v1 cairnd refuses a v2 record; a newer host recovers it).
    pub fn load(dir: &Path) -> io::Result<TaskRecord> {
        let bytes = fs::read(dir.join(RECORD_FILE))?;
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let version = serde_json::from_slice::<Version>(&bytes)
            .map_err(|e| invalid(e.to_string()))?
            .version;
        match version {
            RECORD_VERSION => serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string())),
            1 => legacy::load(&bytes).map_err(invalid),
            v => Err(invalid(format!(
                "task record version {v} (this cairnd reads 1 and {RECORD_VERSION})"
            ))),
        }
    }

    pub fn remove(tasks_dir: &Path, id: Uuid) -> io::Result<()> {
        let dir = Self::dir(tasks_dir, id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => durable::fsync_dir(tasks_dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Runs recovery steps; the engine implements it (it knows where domains are).
pub trait StepRunner: Send + Sync {
    fn run(&self, step: &Step) -> Result<()>;
    fn committed(&self, check: &Commit) -> Result<bool>;
}

/// Runs undo steps last first; returns whether all succeeded.
pub fn roll_back(runner: &dyn StepRunner, plan: &RecoveryPlan, task: Uuid) -> bool {
    run_all(runner, plan.undo.iter().rev(), task, "rollback")
}

/// Runs redo steps in order; returns whether all succeeded.
pub fn roll_forward(runner: &dyn StepRunner, plan: &RecoveryPlan, task: Uuid) -> bool {
    run_all(runner, plan.redo.iter(), task, "roll-forward")
}

fn run_all<'a>(
    runner: &dyn StepRunner,
    steps: impl Iterator<Item = &'a Step>,
    task: Uuid,
    what: &str,
) -> bool {
    let mut clean = true;
    for step in steps {
        match runner.run(step) {
            Ok(()) => tracing::debug!(task = %task, ?step, "{what} step done"),
            Err(e) => {
                clean = false;
                tracing::error!(task = %task, ?step, error = %e, "{what} step failed");
            }
        }
    }
    clean
}

impl From<&Error> for RecordedError {
    fn from(e: &Error) -> Self {
        RecordedError {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_check_their_version() {
        let dir = tempfile::tempdir().unwrap();
        let sd = Uuid::new_v4();
        let mut rec = TaskRecord {
            state: "running".into(),
            plan: RecoveryPlan {
                undo: vec![Step::RemovePart {
                    sd,
                    img: Uuid::new_v4(),
                    vol: Uuid::new_v4(),
                    part: Part::Data,
                }],
                redo: vec![],
                commit: Some(Commit::VolumeExists {
                    sd,
                    img: Uuid::new_v4(),
                    vol: Uuid::new_v4(),
                }),
            },
            ..TaskRecord::new(Uuid::new_v4(), "createVolume")
        };

        rec.save(dir.path()).unwrap();
        let loaded = TaskRecord::load(&TaskRecord::dir(dir.path(), rec.id)).unwrap();
        assert_eq!(loaded, rec);
        let text =
            std::fs::read_to_string(TaskRecord::dir(dir.path(), rec.id).join(RECORD_FILE)).unwrap();
        assert!(text.contains("\"op\": \"remove_part\""), "{text}");
        assert!(text.contains("\"part\": \"data\""), "{text}");
        rec.version = 99;
        rec.save(dir.path()).unwrap();
        assert!(TaskRecord::load(&TaskRecord::dir(dir.path(), rec.id)).is_err());
        TaskRecord::remove(dir.path(), rec.id).unwrap();
        assert!(!TaskRecord::dir(dir.path(), rec.id).exists());
    }
}
