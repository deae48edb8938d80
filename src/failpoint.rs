//! Failpoints: named places in mutating operations where a test can make
//! cairnd crash (exit at once, no cleanup) or fail with an error.
//!
//! Armed by the environment, read once at start:
//! `CAIRN_FAILPOINTS=volume.create.after_data=crash,image.delete.after_rename=error`.
//! A third action, `pause` (or `pause:SECONDS`), holds the operation there
//! for a minute (or that long), to act on the host while it is in flight.
//! Unarmed, a failpoint costs one load of a static.
//!
//! Every failpoint is listed in [`ALL`]; a test checks that the list and the
//! call sites agree, so the failpoint walk covers every step.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Every failpoint, by operation, in step order.
pub const ALL: &[&str] = &[
    "catalog.volume.recorded",
    "catalog.volume.finishing",
    "catalog.transfer.accepted",
    "catalog.backup.written",
    "catalog.restore.cleared",
    "volume.create.planned",
    "volume.create.after_dir",
    "volume.create.after_links",
    "volume.create.after_data",
    "block.volume.after_lvcreate",
    "block.volume.after_record",
    "block.extend.after_vgextend",
    "thin.extend.planned",
    "thin.extend.after_lvextend",
    "domain.upgrade.prepared",
    "domain.upgrade.committed",
    "volume.create.after_lease",
    "volume.create.after_parent",
    "volume.create.after_metadata",
    "volume.create.done",
    "volume.delete.planned",
    "volume.delete.after_metadata",
    "volume.delete.after_data",
    "volume.delete.after_parent",
    "volume.delete.done",
    "image.delete.planned",
    "image.delete.after_rename",
    "image.delete.done",
    "volume.update.planned",
    "volume.update.after_illegal",
    "volume.update.after_change",
    "volume.update.done",
    "domain.create.staged",
    "domain.create.done",
    "domain.format.after_rename",
    "pool.create.after_members",
    "pool.create.done",
    "pool.switch_master.after_lease",
    "pool.switch_master.after_copy",
    "pool.switch_master.after_commit",
    "task.revert.marked",
    "volume.extend.planned",
    "volume.extend.after_illegal",
    "volume.extend.after_resize",
    "volume.extend.done",
    "copy.planned",
    "copy.after_illegal",
    "copy.after_data",
    "copy.done",
    "image.move.planned",
    "image.move.after_copy",
    "image.move.after_commit",
    "image.move.done",
    "sparsify.planned",
    "sparsify.after_illegal",
    "sparsify.after_change",
    "sparsify.done",
    "amend.planned",
    "amend.after_illegal",
    "amend.after_change",
    "amend.done",
    "bitmap.add.planned",
    "bitmap.add.after_illegal",
    "bitmap.add.after_change",
    "bitmap.add.done",
    "bitmap.remove.planned",
    "bitmap.remove.after_illegal",
    "bitmap.remove.after_change",
    "bitmap.remove.done",
    "bitmap.clear.planned",
    "bitmap.clear.after_illegal",
    "bitmap.clear.after_change",
    "bitmap.clear.done",
    "merge.prepare.planned",
    "merge.prepare.after_illegal",
    "merge.prepare.after_resize",
    "merge.prepare.done",
    "merge.planned",
    "merge.after_illegal",
    "merge.after_commit",
    "merge.done",
    "merge.finalize.planned",
    "merge.finalize.after_rebase",
    "merge.finalize.after_metadata",
    "merge.finalize.after_top_metadata",
    "merge.finalize.done",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Crash,
    Error,
    Pause(std::time::Duration),
}

fn armed() -> &'static HashMap<String, Action> {
    static ARMED: OnceLock<HashMap<String, Action>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let spec = std::env::var("CAIRN_FAILPOINTS").unwrap_or_default();
        spec.split(',')
            .filter(|s| !s.is_empty())
            .filter_map(|item| {
                let (name, action) = item.split_once('=').unwrap_or((item, "crash"));
                let action = match action {
                    "crash" => Action::Crash,
                    "error" => Action::Error,
                    "pause" => Action::Pause(std::time::Duration::from_secs(60)),
                    pause if pause.starts_with("pause:") => match pause[6..].parse() {
                        Ok(secs) => Action::Pause(std::time::Duration::from_secs(secs)),
                        Err(_) => {
                            eprintln!("cairnd: ignoring failpoint {name} with bad pause {pause}");
                            return None;
                        }
                    },
                    other => {
                        eprintln!("cairnd: ignoring failpoint {name} with unknown action {other}");
                        return None;
                    }
                };
                Some((name.to_string(), action))
            })
            .collect()
    })
}

/// Passes unless the failpoint `name` is armed.
pub fn hit(name: &'static str) -> Result<()> {
    debug_assert!(
        ALL.contains(&name),
        "failpoint {name} is not listed in failpoint::ALL"
    );
    let armed = armed();
    if armed.is_empty() {
        return Ok(());
    }
    match armed.get(name) {
        None => Ok(()),
        Some(Action::Error) => Err(Error::io(
            format!("failpoint {name}"),
            std::io::Error::other("injected failure"),
        )),
        Some(Action::Crash) => {
            tracing::error!(failpoint = name, "failpoint: crashing now");
            crash()
        }
        Some(Action::Pause(how_long)) => {
            tracing::warn!(failpoint = name, ?how_long, "failpoint: pausing");
            std::thread::sleep(*how_long);
            Ok(())
        }
    }
}

/// Ends the process at once: no destructors, no flushing, like a kill -9.
fn crash() -> ! {
    extern "C" {
        fn _exit(status: i32) -> !;
    }
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { _exit(86) }
}

#[cfg(test)]
mod tests {
    /// The list names exactly the failpoints placed in the code.
    #[test]
    fn list_matches_call_sites() {
        // Every failpoint::hit("...") names a listed failpoint, and every
        // listed failpoint is named somewhere in the code (directly, or
        // passed to a helper such as FencedChange that hits it).
        let mut hits = Vec::new();
        let mut code = String::new();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![src];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("failpoint.rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for part in text.split("failpoint::hit(\"").skip(1) {
                        hits.push(part.split('"').next().unwrap().to_string());
                    }
                    code.push_str(&text);
                }
            }
        }
        for h in &hits {
            assert!(
                super::ALL.contains(&h.as_str()),
                "failpoint {h} is not listed in ALL"
            );
        }
        for name in super::ALL {
            assert!(
                code.contains(&format!("\"{name}\"")),
                "listed failpoint {name} is used nowhere"
            );
        }
        let mut unique = super::ALL.to_vec();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            super::ALL.len(),
            "a failpoint is listed twice"
        );
    }
}
