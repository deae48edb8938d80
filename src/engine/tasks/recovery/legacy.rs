//! Version 1 task records, written by Cairn before backends other than
//! files existed: their steps and commit checks name paths inside a file
//! domain. Each path shape that version wrote is translated into the
//! volume terms of today's vocabulary; anything else is refused (records
//! live on shared storage and are read as untrusted).

use serde::Deserialize;

use super::{Commit, RecordedError, RecoveryPlan, Step, TaskRecord, RECORD_VERSION};
use crate::backend::Part;
use crate::types::{parse_uuid, Uuid, VolumeFormat};

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum StepV1 {
    RemoveFile {
        sd: Uuid,
        path: String,
    },
    RemoveEmptyDir {
        sd: Uuid,
        path: String,
    },
    RemoveTree {
        sd: Uuid,
        path: String,
    },
    WriteVolumeMetadata {
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        contents: String,
    },
    RelinkLeaf {
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
    },
    RemoveImageIfEmpty {
        sd: Uuid,
        img: Uuid,
    },
    Scrub {
        sd: Uuid,
        path: String,
        zero: bool,
        discard: bool,
    },
    ResizeImage {
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        format: VolumeFormat,
        size: u64,
    },
    RemoveBitmap {
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        name: String,
    },
    Rebase {
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        backing: Uuid,
        backing_format: VolumeFormat,
    },
}

#[derive(Deserialize)]
#[serde(tag = "if", rename_all = "snake_case")]
enum CommitV1 {
    Exists {
        sd: Uuid,
        path: String,
    },
    Missing {
        sd: Uuid,
        path: String,
    },
    VolumeMetadataIs {
        sd: Uuid,
        img: Uuid,
        vol: Uuid,
        contents: String,
    },
}

#[derive(Deserialize)]
struct PlanV1 {
    undo: Vec<StepV1>,
    redo: Vec<StepV1>,
    commit: Option<CommitV1>,
}

#[derive(Deserialize)]
struct RecordV1 {
    id: Uuid,
    verb: String,
    state: String,
    result: String,
    error: Option<RecordedError>,
    plan: PlanV1,
    created: u64,
    #[serde(default)]
    finished: Option<u64>,
}

/// What a v1 path named: `images/<img>`, `images/_remove_me_<img>` (an
/// image being deleted), `images/_remove_me_<img>.incoming` (an image being
/// copied in) or `images/<img>/<vol>{,.meta,.meta.new,.lease}`.
#[derive(Debug, PartialEq, Eq)]
enum Named {
    Image(Uuid),
    Retired(Uuid),
    Staging(Uuid),
    Volume(Uuid, Uuid, Part),
}

fn named(path: &str) -> Result<Named, String> {
    let bad = || format!("version 1 task record: unrecognised path {path:?}");
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["images", dir] => {
            if let Some(img) = parse_uuid(dir) {
                return Ok(Named::Image(img));
            }
            let removed = dir.strip_prefix("_remove_me_").ok_or_else(bad)?;
            match removed.strip_suffix(".incoming") {
                Some(img) => parse_uuid(img).map(Named::Staging),
                None => parse_uuid(removed).map(Named::Retired),
            }
            .ok_or_else(bad)
        }
        ["images", img, name] => {
            let img = parse_uuid(img).ok_or_else(bad)?;
            let (vol, part) = if let Some(v) = name.strip_suffix(".meta.new") {
                (v, Part::Metadata)
            } else if let Some(v) = name.strip_suffix(".meta") {
                (v, Part::Metadata)
            } else if let Some(v) = name.strip_suffix(".lease") {
                (v, Part::Lease)
            } else {
                (*name, Part::Data)
            };
            let vol = parse_uuid(vol).ok_or_else(bad)?;
            Ok(Named::Volume(img, vol, part))
        }
        _ => Err(bad()),
    }
}

fn unsupported(what: &str, path: &str) -> String {
    format!("version 1 task record: cannot {what} {path:?}")
}

fn steps(step: StepV1) -> Result<Vec<Step>, String> {
    Ok(match step {
        StepV1::RemoveFile { sd, path } => match named(&path)? {
            // A template's files linked into a clone are removed the same
            // way on a file domain, the only kind v1 knew.
            Named::Volume(img, vol, part) => vec![Step::RemovePart { sd, img, vol, part }],
            _ => return Err(unsupported("remove the file", &path)),
        },
        StepV1::RemoveEmptyDir { sd, path } => match named(&path)? {
            Named::Image(img) => vec![Step::RemoveImageIfEmpty { sd, img }],
            _ => return Err(unsupported("remove the directory", &path)),
        },
        StepV1::RemoveTree { sd, path } => remove_tree(sd, &path, false, false)?,
        StepV1::Scrub {
            sd,
            path,
            zero,
            discard,
        } => match named(&path)? {
            Named::Volume(img, vol, Part::Data) => vec![Step::Scrub {
                sd,
                img,
                vol,
                zero,
                discard,
            }],
            _ => remove_tree(sd, &path, zero, discard)?,
        },
        StepV1::WriteVolumeMetadata {
            sd,
            img,
            vol,
            contents,
        } => vec![Step::WriteVolumeMetadata {
            sd,
            img,
            vol,
            contents,
        }],
        StepV1::RelinkLeaf { sd, img, vol } => vec![Step::RelinkLeaf { sd, img, vol }],
        StepV1::RemoveImageIfEmpty { sd, img } => vec![Step::RemoveImageIfEmpty { sd, img }],
        StepV1::ResizeImage {
            sd,
            img,
            vol,
            format,
            size,
        } => vec![Step::ResizeImage {
            sd,
            img,
            vol,
            format,
            size,
        }],
        StepV1::RemoveBitmap { sd, img, vol, name } => {
            vec![Step::RemoveBitmap { sd, img, vol, name }]
        }
        StepV1::Rebase {
            sd,
            img,
            vol,
            backing,
            backing_format,
        } => vec![Step::Rebase {
            sd,
            img,
            vol,
            backing,
            backing_format,
        }],
    })
}

/// A whole image directory removed (scrubbed first if asked): a live image
/// is retired, then purged, as a delete does today.
fn remove_tree(sd: Uuid, path: &str, zero: bool, discard: bool) -> Result<Vec<Step>, String> {
    Ok(match named(path)? {
        Named::Retired(img) => vec![Step::PurgeImage {
            sd,
            img,
            zero,
            discard,
        }],
        Named::Image(img) => vec![
            Step::RetireImage { sd, img },
            Step::PurgeImage {
                sd,
                img,
                zero,
                discard,
            },
        ],
        Named::Staging(img) if !zero && !discard => vec![Step::DiscardImport { sd, img }],
        _ => return Err(unsupported("remove the tree", path)),
    })
}

fn commit(check: CommitV1) -> Result<Commit, String> {
    Ok(match check {
        CommitV1::Exists { sd, path } => match named(&path)? {
            Named::Volume(img, vol, Part::Metadata) => Commit::VolumeExists { sd, img, vol },
            Named::Image(img) => Commit::ImageExists { sd, img },
            _ => return Err(unsupported("check the existence of", &path)),
        },
        CommitV1::Missing { sd, path } => match named(&path)? {
            Named::Volume(img, vol, Part::Metadata) => Commit::VolumeMissing { sd, img, vol },
            Named::Image(img) => Commit::ImageMissing { sd, img },
            _ => return Err(unsupported("check the absence of", &path)),
        },
        CommitV1::VolumeMetadataIs {
            sd,
            img,
            vol,
            contents,
        } => Commit::VolumeMetadataIs {
            sd,
            img,
            vol,
            contents,
        },
    })
}

fn translate(steps_v1: Vec<StepV1>) -> Result<Vec<Step>, String> {
    let mut out = Vec::new();
    for step in steps_v1 {
        out.extend(steps(step)?);
    }
    Ok(out)
}

/// Reads a version 1 record as a record of today's version.
pub fn load(bytes: &[u8]) -> Result<TaskRecord, String> {
    let rec: RecordV1 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(TaskRecord {
        version: RECORD_VERSION,
        id: rec.id,
        verb: rec.verb,
        state: rec.state,
        result: rec.result,
        error: rec.error,
        plan: RecoveryPlan {
            undo: translate(rec.plan.undo)?,
            redo: translate(rec.plan.redo)?,
            commit: rec.plan.commit.map(commit).transpose()?,
        },
        created: rec.created,
        finished: rec.finished,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMG: &str = "11111111-1111-4111-8111-111111111111";
    const BASE: &str = "22222222-2222-4222-8222-222222222222";
    const TOP: &str = "33333333-3333-4333-8333-333333333333";

    fn uuid(s: &str) -> Uuid {
        parse_uuid(s).unwrap()
    }

    /// A record captured from the v1 cairnd, its domain filled in.
    fn fixture(name: &str, sd: Uuid) -> TaskRecord {
        let path = format!(
            "{}/tests/fixtures/task-records-v1/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        load(text.replace("@SD@", &sd.to_string()).as_bytes()).unwrap()
    }

    #[test]
    fn every_captured_v1_record_translates() {
        let sd = Uuid::new_v4();
        let (img, base, top) = (uuid(IMG), uuid(BASE), uuid(TOP));

        let rec = fixture("delete-image", sd);
        assert_eq!(rec.version, RECORD_VERSION);
        assert_eq!(
            rec.plan,
            RecoveryPlan {
                undo: vec![],
                redo: vec![
                    Step::PurgeImage {
                        sd,
                        img,
                        zero: true,
                        discard: false
                    },
                    Step::PurgeImage {
                        sd,
                        img,
                        zero: false,
                        discard: false
                    },
                ],
                commit: Some(Commit::ImageMissing { sd, img }),
            }
        );

        let rec = fixture("finalize-merge", sd);
        assert_eq!(
            rec.plan.redo,
            vec![
                Step::RemovePart {
                    sd,
                    img,
                    vol: top,
                    part: Part::Data
                },
                Step::RemovePart {
                    sd,
                    img,
                    vol: top,
                    part: Part::Lease
                },
            ]
        );
        assert_eq!(
            rec.plan.commit,
            Some(Commit::VolumeMissing { sd, img, vol: top })
        );
        assert!(
            matches!(&rec.plan.undo[..], [Step::WriteVolumeMetadata { vol, .. }] if *vol == base)
        );

        let rec = fixture("delete-leaf", sd);
        assert_eq!(
            rec.plan.redo[0],
            Step::Scrub {
                sd,
                img,
                vol: top,
                zero: true,
                discard: false
            }
        );
        assert!(rec
            .plan
            .redo
            .contains(&Step::RelinkLeaf { sd, img, vol: base }));

        let rec = fixture("clone-template", sd);
        let clone = uuid("66666666-6666-4666-8666-666666666666");
        assert_eq!(
            rec.plan.undo[0],
            Step::RemoveImageIfEmpty { sd, img: clone }
        );
        // The template's linked files are removed from the clone only.
        assert!(rec.plan.undo.contains(&Step::RemovePart {
            sd,
            img: clone,
            vol: base,
            part: Part::Data
        }));

        for name in ["create-image", "snapshot"] {
            let rec = fixture(name, sd);
            assert!(
                matches!(rec.plan.commit, Some(Commit::VolumeExists { .. })),
                "{name}"
            );
        }
    }

    #[test]
    fn image_copies_translate_and_strange_paths_are_refused() {
        let sd = Uuid::new_v4();
        let img = Uuid::new_v4();
        let record = |undo: &str, redo: &str, commit: &str| {
            format!(
                r#"{{"version":1,"id":"{}","verb":"moveImage","state":"running","result":"","error":null,
                "plan":{{"undo":[{undo}],"redo":[{redo}],"commit":{commit}}},"created":1}}"#,
                Uuid::new_v4()
            )
        };
        let text = record(
            &format!(
                r#"{{"op":"remove_tree","sd":"{sd}","path":"images/_remove_me_{img}.incoming"}}"#
            ),
            &format!(
                r#"{{"op":"scrub","sd":"{sd}","path":"images/{img}","zero":false,"discard":true}}"#
            ),
            &format!(r#"{{"if":"exists","sd":"{sd}","path":"images/{img}"}}"#),
        );
        let rec = load(text.as_bytes()).unwrap();
        assert_eq!(rec.plan.undo, vec![Step::DiscardImport { sd, img }]);
        assert_eq!(
            rec.plan.redo,
            vec![
                Step::RetireImage { sd, img },
                Step::PurgeImage {
                    sd,
                    img,
                    zero: false,
                    discard: true
                }
            ]
        );
        assert_eq!(rec.plan.commit, Some(Commit::ImageExists { sd, img }));

        for path in [
            "../etc/passwd",
            "images/x/y",
            "dom_md/metadata",
            "images",
            "",
        ] {
            let text = record(
                &format!(r#"{{"op":"remove_file","sd":"{sd}","path":"{path}"}}"#),
                "",
                "null",
            );
            assert!(load(text.as_bytes()).is_err(), "{path}");
        }
    }
}
