//! Host jobs (VDSM's SDM verbs): caller-named, host-local, persisted in the
//! host's data dir, and fenced by volume generation and legality rather than
//! by the SPM role.
//!
//! A job that changes a volume first checks the generation the caller
//! names, marks the volume ILLEGAL (anyone reading it sees it is being
//! changed), changes it, then writes it LEGAL with the next generation.

pub mod copy_data;
pub mod volume;

use std::sync::Arc;

use serde::Serialize;

use crate::backend::Domain;
use crate::engine::resources::Mode;
use crate::engine::tasks::recovery::{Commit, RecoveryPlan, Step};
use crate::engine::volume::{children_of, read_in_image};
use crate::engine::TaskCtx;
use crate::engine::{Engine, TaskResult, TaskState, TaskStatus};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::format::domain_md::is_safe_value;
use crate::format::volume_md::metadata_text;
use crate::format::volume_md::{truncate_description, VolumeMetadata, MAX_GENERATION};
use crate::types::{Uuid, VolumeLegality, VolumeRole, BLANK_UUID};

/// Finished jobs are forgotten after an hour, as in VDSM.
pub const JOB_EXPIRY_SECS: u64 = 3600;
pub const JOB_WORKERS: usize = 4;

/// A volume named by a job, optionally with the generation the caller saw.
#[derive(Debug, Clone, Copy)]
pub struct VolumeRef {
    pub sd: Uuid,
    pub img: Uuid,
    pub vol: Uuid,
    pub generation: Option<u32>,
}

/// `VolumeAttributes` of `SDM.update_volume`.
#[derive(Debug, Clone, Default)]
pub struct VolumeAttrs {
    pub legality: Option<VolumeLegality>,
    pub description: Option<String>,
    pub generation: Option<u32>,
    pub role: Option<VolumeRole>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobError {
    pub code: i64,
    pub message: String,
}

/// `HostJobInfo`.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    pub id: Uuid,
    pub status: &'static str,
    pub description: String,
    pub job_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
}

impl JobInfo {
    fn from_status(st: &TaskStatus) -> JobInfo {
        let status = match (st.state, st.result, st.error.as_deref()) {
            (TaskState::Init, ..) => "pending",
            (TaskState::Finished, TaskResult::Success, _) => "done",
            (TaskState::Finished, _, Some(Error::TaskAborted(_))) => "aborted",
            (TaskState::Finished, ..) => "failed",
            _ => "running",
        };
        JobInfo {
            id: st.id,
            status,
            description: st.verb.clone(),
            job_type: "storage",
            progress: st.progress,
            error: st.error.as_ref().map(|e| JobError {
                code: e.code(),
                message: e.to_string(),
            }),
        }
    }
}

/// What rolling back a [`FencedChange`] does.
pub(crate) enum Rollback {
    /// Run these steps (last first), then write the original metadata back.
    Restore(Vec<Step>),
    /// Nothing: the old contents are gone, so the volume stays ILLEGAL.
    LeaveIllegal,
}

/// A change to one volume fenced by its legality: the volume reads ILLEGAL
/// from [`FencedChange::begin`] until [`FencedChange::finish`] writes its
/// final metadata, which is also the task's commit check.
pub(crate) struct FencedChange<'a> {
    dom: &'a dyn Domain,
    img: Uuid,
    vol: Uuid,
    version: u32,
    target: VolumeMetadata,
}

impl<'a> FencedChange<'a> {
    /// Declares the task's plan, passes failpoint `planned`, marks the
    /// volume ILLEGAL and passes failpoint `fenced`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn begin(
        ctx: &TaskCtx,
        dom: &'a dyn Domain,
        img: Uuid,
        vol: Uuid,
        original: &VolumeMetadata,
        target: VolumeMetadata,
        rollback: Rollback,
        (planned, fenced): (&'static str, &'static str),
    ) -> Result<Self> {
        let version = dom.manifest()?.version;
        let sd = dom.id();
        let steps = match rollback {
            Rollback::Restore(undo) => {
                let mut steps = vec![Step::WriteVolumeMetadata {
                    sd,
                    img,
                    vol,
                    contents: metadata_text(vol, original, version)?,
                }];
                steps.extend(undo);
                steps
            }
            Rollback::LeaveIllegal => Vec::new(),
        };
        ctx.plan(RecoveryPlan {
            undo: steps,
            redo: Vec::new(),
            commit: Some(Commit::VolumeMetadataIs {
                sd,
                img,
                vol,
                contents: metadata_text(vol, &target, version)?,
            }),
        })?;
        failpoint::hit(planned)?;
        let mut illegal = original.clone();
        illegal.legality = VolumeLegality::Illegal;
        dom.write_volume(img, vol, &illegal, version)?;
        failpoint::hit(fenced)?;
        ctx.check_abort()?;
        Ok(FencedChange {
            dom,
            img,
            vol,
            version,
            target,
        })
    }

    /// Writes the final metadata (the commit point) and passes failpoint `done`.
    pub(crate) fn finish(self, ctx: &TaskCtx, done: &'static str) -> Result<VolumeMetadata> {
        ctx.check_abort()?;
        self.dom
            .write_volume(self.img, self.vol, &self.target, self.version)?;
        ctx.commit();
        failpoint::hit(done)?;
        Ok(self.target)
    }
}

/// The generation after a successful change; wraps like VDSM's.
pub fn next_generation(g: u32) -> u32 {
    if g >= MAX_GENERATION {
        0
    } else {
        g + 1
    }
}

/// One in-place change of one volume, run as a host job by
/// [`Engine::spawn_volume_job`].
pub(crate) struct VolumeJob<C, P, W> {
    pub verb: &'static str,
    pub target: VolumeRef,
    /// Failpoints passed once the plan is declared, once the volume is
    /// fenced ILLEGAL, once `work` is done and once the final metadata is
    /// written.
    pub failpoints: [&'static str; 4],
    /// Validates the volume: before the job is queued, so bad input fails
    /// the call, and again under the image lock.
    pub check: C,
    /// From the volume's metadata: its final metadata and how to roll back.
    pub plan: P,
    /// The change itself, run while the volume reads ILLEGAL.
    pub work: W,
}

/// The usual end of a volume job: LEGAL with the next generation.
pub(crate) fn legal_next(md: &VolumeMetadata) -> VolumeMetadata {
    let mut done = md.clone();
    done.legality = VolumeLegality::Legal;
    done.generation = next_generation(md.generation);
    done
}

/// Refuses a volume whose image is prepared for a VM: jobs that rewrite a
/// volume in place need it closed.
pub(crate) fn check_not_prepared(engine: &Engine, target: &VolumeRef) -> Result<()> {
    if engine.paths.run_link(target.sd, target.img).exists() {
        return Err(Error::VolumeBusy {
            vol: target.vol,
            reason: "its image is prepared for a VM".into(),
        });
    }
    Ok(())
}

impl Engine {
    /// Runs `spec` as job `job`: checks the caller's generation, takes the
    /// image lock, fences the volume and changes it (see [`FencedChange`]).
    pub(crate) fn spawn_volume_job<C, P, W>(
        self: &Arc<Self>,
        job: Uuid,
        spec: VolumeJob<C, P, W>,
    ) -> Result<()>
    where
        C: Fn(&Engine, &dyn Domain, &VolumeMetadata) -> Result<()> + Send + 'static,
        P: FnOnce(&VolumeMetadata) -> (VolumeMetadata, Rollback) + Send + 'static,
        W: FnOnce(&TaskCtx, &dyn Domain, &VolumeMetadata) -> Result<()> + Send + 'static,
    {
        let target = spec.target;
        let dom = self.domain(target.sd)?;
        let validate = move |engine: &Engine, dom: &dyn Domain| -> Result<VolumeMetadata> {
            let md = read_in_image(dom, target.img, target.vol)?;
            check_generation(&target, &md)?;
            (spec.check)(engine, dom, &md)?;
            Ok(md)
        };
        validate(self, &*dom)?;
        let engine = self.clone();
        let store = self.paths.jobs.clone();
        let [planned, fenced, changed, done] = spec.failpoints;
        self.jobs.spawn_as(job, spec.verb, Some(&store), move |ctx| {
            let _lock = engine.lock_image(target.sd, target.img, Mode::Exclusive)?;
            let _lease = engine.volume_lease(&*dom, target.img, target.vol)?;
            let original = validate(&engine, &*dom)?;
            let (final_md, rollback) = (spec.plan)(&original);
            let change = FencedChange::begin(
                ctx,
                &*dom,
                target.img,
                target.vol,
                &original,
                final_md,
                rollback,
                (planned, fenced),
            )?;
            (spec.work)(ctx, &*dom, &original)?;
            failpoint::hit(changed)?;
            let md = change.finish(ctx, done)?;
            tracing::info!(job = %ctx.id(), verb = spec.verb, sd = %target.sd, img = %target.img,
                vol = %target.vol, generation = md.generation, "volume changed");
            Ok(())
        })?;
        Ok(())
    }

    /// `SDM.update_volume`: changes legality, description, generation or
    /// role (to SHARED, making a template), as job `job`.
    pub fn update_volume(
        self: &Arc<Self>,
        job: Uuid,
        target: VolumeRef,
        attrs: VolumeAttrs,
    ) -> Result<()> {
        let attrs = validate_attrs(attrs)?;
        let check_attrs = attrs.clone();
        self.spawn_volume_job(
            job,
            VolumeJob {
                verb: "update_volume",
                target,
                failpoints: [
                    "volume.update.planned",
                    "volume.update.after_illegal",
                    "volume.update.after_change",
                    "volume.update.done",
                ],
                check: move |_: &Engine, dom: &dyn Domain, md: &VolumeMetadata| {
                    check_update(dom, &target, md, &check_attrs)
                },
                plan: move |original: &VolumeMetadata| {
                    let mut updated = original.clone();
                    if let Some(d) = &attrs.description {
                        updated.description = d.clone();
                    }
                    if let Some(role) = attrs.role {
                        updated.role = role;
                    }
                    updated.legality = attrs.legality.unwrap_or(VolumeLegality::Legal);
                    updated.generation = attrs
                        .generation
                        .unwrap_or_else(|| next_generation(original.generation));
                    (updated, Rollback::Restore(Vec::new()))
                },
                work: |_: &TaskCtx, _: &dyn Domain, _: &VolumeMetadata| Ok(()),
            },
        )
    }

    /// `Host.getJobs`; finished jobs older than an hour are forgotten.
    pub fn get_jobs(&self, ids: &[Uuid]) -> Vec<JobInfo> {
        let now = crate::now_secs();
        let mut out = Vec::new();
        for st in self.jobs.all() {
            if st.ended.is_some_and(|t| t + JOB_EXPIRY_SECS < now) {
                if let Err(e) = self.jobs.clear(st.id) {
                    tracing::warn!(job = %st.id, error = %e, "cannot forget an expired job");
                }
                continue;
            }
            if ids.is_empty() || ids.contains(&st.id) {
                out.push(JobInfo::from_status(&st));
            }
        }
        out
    }
}

fn validate_attrs(mut attrs: VolumeAttrs) -> Result<VolumeAttrs> {
    if attrs.legality.is_none()
        && attrs.description.is_none()
        && attrs.generation.is_none()
        && attrs.role.is_none()
    {
        return Err(Error::invalid(
            "vol_attr",
            "names nothing to change (legality, description, generation, type)",
        ));
    }
    if let Some(d) = &attrs.description {
        if !is_safe_value(d) {
            return Err(Error::invalid(
                "vol_attr.description",
                "may not contain line breaks or NUL",
            ));
        }
        attrs.description = Some(truncate_description(d));
    }
    if let Some(g) = attrs.generation {
        if g > MAX_GENERATION {
            return Err(Error::invalid(
                "vol_attr.generation",
                format!("{g} is larger than {MAX_GENERATION}"),
            ));
        }
    }
    if attrs.role.is_some_and(|r| r != VolumeRole::Shared) {
        return Err(Error::invalid("vol_attr.type", "only SHARED can be set"));
    }
    Ok(attrs)
}

/// Refuses a volume whose generation is not the one the caller saw.
pub(crate) fn check_generation(target: &VolumeRef, md: &VolumeMetadata) -> Result<()> {
    match target.generation {
        Some(expected) if md.generation != expected => Err(Error::GenerationMismatch {
            vol: target.vol,
            expected,
            actual: md.generation,
        }),
        _ => Ok(()),
    }
}

fn check_update(
    dom: &dyn Domain,
    target: &VolumeRef,
    md: &VolumeMetadata,
    attrs: &VolumeAttrs,
) -> Result<()> {
    if attrs.role == Some(VolumeRole::Shared) {
        if md.parent != BLANK_UUID {
            return Err(Error::invalid(
                "vol_attr.type",
                "only a base volume (no parent) can become a template",
            ));
        }
        if !children_of(dom, target.img, target.vol)?.is_empty() {
            return Err(Error::invalid(
                "vol_attr.type",
                "a volume with children cannot become a template",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_wrap() {
        assert_eq!(next_generation(0), 1);
        assert_eq!(next_generation(998), 999);
        assert_eq!(next_generation(999), 0);
    }

    #[test]
    fn attributes_are_checked() {
        assert!(validate_attrs(VolumeAttrs::default()).is_err());
        assert!(validate_attrs(VolumeAttrs {
            generation: Some(1000),
            ..Default::default()
        })
        .is_err());
        assert!(validate_attrs(VolumeAttrs {
            role: Some(VolumeRole::Leaf),
            ..Default::default()
        })
        .is_err());
        assert!(validate_attrs(VolumeAttrs {
            description: Some("a\nb".into()),
            ..Default::default()
        })
        .is_err());
        let long = validate_attrs(VolumeAttrs {
            description: Some("x".repeat(300)),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(long.description.unwrap().len(), 210);
    }
}
