//! What a task needs to survive a crash, as data.
//!
//! Before a task changes storage it persists a [`RecoveryPlan`]: the undo
//! steps (run in reverse order to roll back), the redo steps (run to finish
//! once the task is past its point of no return) and the [`Commit`] check
//! that tells which of the two applies. Every step is idempotent and safe to
//! run whether or not the step it answers for happened, so recovery never
//! needs to know how far the task got. Paths are relative to the domain, so
//! any host that sees the domain can recover the task.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::primitives::durable;
use crate::types::{Uuid, VolumeFormat};

/// Format version of persisted task records.
pub const RECORD_VERSION: u32 = 1;
pub const RECORD_FILE: &str = "task.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    /// Remove a file if it is there.
    RemoveFile { sd: Uuid, path: String },
    /// Remove a directory if it is there and empty.
    RemoveEmptyDir { sd: Uuid, path: String },
    /// Remove a directory tree if it is there.
    RemoveTree { sd: Uuid, path: String },
    /// Replace a volume's metadata file with these contents.
    WriteVolumeMetadata {
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        contents: String,
    },
    /// Make an INTERNAL volume a LEAF again if no volume names it as parent.
    RelinkLeaf { sd: Uuid, img: Uuid, vol: Uuid },
    /// Remove an image directory that holds no volume metadata any more.
    RemoveImageIfEmpty { sd: Uuid, img: Uuid },
    /// Zero and/or discard the data of a file, or of every file in a
    /// directory; files linked elsewhere too (templates) are left alone.
    Scrub {
        sd: Uuid,
        path: String,
        zero: bool,
        discard: bool,
    },
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

/// How recovery decides whether a task passed its point of no return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "if", rename_all = "snake_case")]
pub enum Commit {
    /// Committed once this file exists (a create's metadata file).
    Exists { sd: Uuid, path: String },
    /// Committed once this path is gone (a delete's metadata file).
    Missing { sd: Uuid, path: String },
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

    pub fn load(dir: &Path) -> io::Result<TaskRecord> {
        let bytes = fs::read(dir.join(RECORD_FILE))?;
        let rec: TaskRecord = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if rec.version != RECORD_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "task record version {} (this cairnd reads {RECORD_VERSION})",
                    rec.version
                ),
            ));
        }
        Ok(rec)
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
                undo: vec![Step::RemoveFile {
                    sd,
                    path: "images/a/b".into(),
                }],
                redo: vec![],
                commit: Some(Commit::Exists {
                    sd,
                    path: "images/a/b.meta".into(),
                }),
            },
            ..TaskRecord::new(Uuid::new_v4(), "createVolume")
        };

        rec.save(dir.path()).unwrap();
        let loaded = TaskRecord::load(&TaskRecord::dir(dir.path(), rec.id)).unwrap();
        assert_eq!(loaded, rec);
        let text =
            std::fs::read_to_string(TaskRecord::dir(dir.path(), rec.id).join(RECORD_FILE)).unwrap();
        assert!(text.contains("\"op\": \"remove_file\""), "{text}");
        rec.version = 99;
        rec.save(dir.path()).unwrap();
        assert!(TaskRecord::load(&TaskRecord::dir(dir.path(), rec.id)).is_err());
        TaskRecord::remove(dir.path(), rec.id).unwrap();
        assert!(!TaskRecord::dir(dir.path(), rec.id).exists());
    }
}
