//! Asynchronous tasks, VDSM style, that survive a crash.
//!
//! A verb that changes storage validates its input synchronously, then queues
//! a task and returns its id at once. Tasks run on a bounded pool of worker
//! threads. Before changing storage a task body declares its recovery plan
//! ([`RecoveryPlan`]: undo steps, redo steps, commit check). Pool (SPM)
//! tasks persist their record in the master domain's `master/tasks/<id>/`
//! when queued, when the plan is set and when they finish, so whichever
//! host becomes SPM next can recover them. If a body fails or is stopped,
//! the undo steps run last first (rollback) and the task ends `cleanSuccess`
//! (`cleanFailure` when an undo step failed). Results stay readable until
//! `Task.clear`, across restarts for persisted tasks.

pub mod gc;
pub mod recovery;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::types::Uuid;
use recovery::{RecordedError, RecoveryPlan, StepRunner, TaskRecord};

/// VDSM's task pool size and queue limit.
pub const DEFAULT_WORKERS: usize = 10;
pub const DEFAULT_MAX_TASKS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Init,
    Running,
    Aborting,
    Cleaning,
    Finished,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskResult {
    InProgress,
    Success,
    CleanSuccess,
    CleanFailure,
}

impl TaskResult {
    pub fn name(self) -> &'static str {
        match self {
            TaskResult::InProgress => "",
            TaskResult::Success => "success",
            TaskResult::CleanSuccess => "cleanSuccess",
            TaskResult::CleanFailure => "cleanFailure",
        }
    }

    fn from_name(s: &str) -> TaskResult {
        match s {
            "success" => TaskResult::Success,
            "cleanSuccess" => TaskResult::CleanSuccess,
            "cleanFailure" => TaskResult::CleanFailure,
            _ => TaskResult::InProgress,
        }
    }
}

/// A snapshot of a task's status.
#[derive(Debug, Clone)]
pub struct TaskStatus {
    pub id: Uuid,
    pub verb: String,
    pub state: TaskState,
    pub result: TaskResult,
    /// The failure, if the task failed or was stopped.
    pub error: Option<Arc<Error>>,
    /// When it finished (seconds since the epoch).
    pub ended: Option<u64>,
    /// Percent done, for operations that report it (copies).
    pub progress: Option<u32>,
}

type Body = Box<dyn FnOnce(&TaskCtx) -> Result<()> + Send>;
type Listener = Arc<dyn Fn(&TaskStatus) + Send + Sync>;

struct Task {
    status: Mutex<TaskStatus>,
    abort: AtomicBool,
    queued_at: Instant,
    started_at: Mutex<Option<Instant>>,
    /// The tasks directory holding this task's record (pool tasks).
    store: Option<PathBuf>,
    record: Mutex<TaskRecord>,
}

impl Task {
    fn id(&self) -> Uuid {
        self.status.lock().expect("task").id
    }

    /// Persists the record, for stored tasks.
    fn save(&self) -> Result<()> {
        let Some(dir) = &self.store else {
            return Ok(());
        };
        let rec = self.record.lock().expect("record").clone();
        rec.save(dir).map_err(|e| {
            Error::io(
                format!("cannot persist task {} in {}", rec.id, dir.display()),
                e,
            )
        })
    }
}

/// What a running task body can do.
pub struct TaskCtx {
    task: Arc<Task>,
    committed: AtomicBool,
}

impl TaskCtx {
    /// Declares (and, for pool tasks, persists) how to recover this task.
    /// Call it before the first change to storage.
    pub fn plan(&self, plan: RecoveryPlan) -> Result<()> {
        {
            let mut rec = self.task.record.lock().expect("record");
            rec.plan = plan;
            rec.state = "running".into();
        }
        self.task.save()
    }

    /// Marks the point of no return: from here a failure finishes the task
    /// (redo steps) instead of rolling it back.
    pub fn commit(&self) {
        self.committed.store(true, Ordering::SeqCst);
    }

    /// Fails with `TaskAborted` if `Task.stop` was called.
    pub fn check_abort(&self) -> Result<()> {
        if self.task.abort.load(Ordering::SeqCst) {
            return Err(Error::TaskAborted(self.id()));
        }
        Ok(())
    }

    pub fn id(&self) -> Uuid {
        self.task.id()
    }

    /// Reports how far the task is, in percent.
    pub fn set_progress(&self, percent: u32) {
        self.task.status.lock().expect("task").progress = Some(percent.min(100));
    }
}

struct Inner {
    tasks: Mutex<HashMap<Uuid, Arc<Task>>>,
    queue: Mutex<VecDeque<(Arc<Task>, Body)>>,
    wake: Condvar,
    max_tasks: usize,
    listener: Mutex<Option<Listener>>,
    runner: OnceLock<Arc<dyn StepRunner>>,
}

#[derive(Clone)]
pub struct TaskManager {
    inner: Arc<Inner>,
}

/// Forgets up to `count` finished tasks, oldest first (only those that
/// ended before `before`, if given), with their records; returns how many.
fn forget_finished(
    tasks: &mut HashMap<Uuid, Arc<Task>>,
    count: usize,
    before: Option<u64>,
) -> usize {
    let mut finished: Vec<(u64, Uuid)> = tasks
        .values()
        .filter_map(|t| {
            let st = t.status.lock().expect("task");
            (st.state == TaskState::Finished).then(|| (st.ended.unwrap_or(0), st.id))
        })
        .filter(|(ended, _)| before.is_none_or(|b| *ended < b))
        .collect();
    finished.sort();
    let mut forgotten = 0;
    for (_, id) in finished.into_iter().take(count) {
        if let Some(task) = tasks.remove(&id) {
            if let Some(dir) = &task.store {
                if let Err(e) = TaskRecord::remove(dir, id) {
                    tracing::warn!(task = %id, error = %e, "cannot remove the record of a forgotten task");
                }
            }
            tracing::info!(task = %id, "forgot a finished task nobody cleared");
            forgotten += 1;
        }
    }
    forgotten
}

/// What recovery found in a tasks directory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Finished tasks whose results were loaded.
    pub finished: usize,
    /// Interrupted tasks rolled back.
    pub rolled_back: usize,
    /// Interrupted tasks past their commit point, finished.
    pub rolled_forward: usize,
    /// Tasks whose recovery steps failed, and unreadable records.
    pub failed: usize,
}

impl TaskManager {
    pub fn new(workers: usize, max_tasks: usize) -> Self {
        let inner = Arc::new(Inner {
            tasks: Mutex::new(HashMap::new()),
            queue: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            max_tasks,
            listener: Mutex::new(None),
            runner: OnceLock::new(),
        });
        for n in 0..workers.max(1) {
            let inner = inner.clone();
            thread::Builder::new()
                .name(format!("task-worker-{n}"))
                .spawn(move || worker(inner))
                .expect("spawn task worker");
        }
        TaskManager { inner }
    }

    /// Sets who runs recovery steps (the engine); once.
    pub fn set_runner(&self, runner: Arc<dyn StepRunner>) {
        let _ = self.inner.runner.set(runner);
    }

    /// Called on every state change (for event notifications).
    pub fn set_listener(&self, f: impl Fn(&TaskStatus) + Send + Sync + 'static) {
        *self.inner.listener.lock().expect("listener") = Some(Arc::new(f));
    }

    /// Queues `body` as a new task. With `store`, the task is persisted in
    /// that tasks directory before this returns.
    pub fn spawn(
        &self,
        verb: &str,
        store: Option<&Path>,
        body: impl FnOnce(&TaskCtx) -> Result<()> + Send + 'static,
    ) -> Result<Uuid> {
        self.spawn_as(Uuid::new_v4(), verb, store, body)
    }

    /// Like `spawn`, with an id the caller chose (host jobs); refused if a
    /// task with that id is known.
    pub fn spawn_as(
        &self,
        id: Uuid,
        verb: &str,
        store: Option<&Path>,
        body: impl FnOnce(&TaskCtx) -> Result<()> + Send + 'static,
    ) -> Result<Uuid> {
        if self.inner.tasks.lock().expect("tasks").contains_key(&id) {
            return Err(Error::JobExists(id));
        }
        let task = Arc::new(Task {
            status: Mutex::new(TaskStatus {
                id,
                verb: verb.to_string(),
                state: TaskState::Init,
                result: TaskResult::InProgress,
                error: None,
                ended: None,
                progress: None,
            }),
            abort: AtomicBool::new(false),
            queued_at: Instant::now(),
            started_at: Mutex::new(None),
            store: store.map(Path::to_path_buf),
            record: Mutex::new(TaskRecord::new(id, verb)),
        });
        {
            let mut tasks = self.inner.tasks.lock().expect("tasks");
            if tasks.len() >= self.inner.max_tasks {
                // Finished tasks no client cleared make room, oldest first:
                // forgetting a result beats refusing all work (VDSM's cap
                // alone lets one careless client stop a host).
                let excess = tasks.len() + 1 - self.inner.max_tasks;
                forget_finished(&mut tasks, excess, None);
            }
            if tasks.len() >= self.inner.max_tasks {
                return Err(Error::AddTask(format!(
                    "{} tasks are running or queued; wait for some to finish",
                    tasks.len()
                )));
            }
        }
        task.save()?;
        self.inner
            .tasks
            .lock()
            .expect("tasks")
            .insert(id, task.clone());
        tracing::info!(task = %id, verb, persisted = store.is_some(), "task queued");
        self.inner
            .queue
            .lock()
            .expect("queue")
            .push_back((task, Box::new(body)));
        self.inner.wake.notify_one();
        Ok(id)
    }

    fn task(&self, id: Uuid) -> Result<Arc<Task>> {
        self.inner
            .tasks
            .lock()
            .expect("tasks")
            .get(&id)
            .cloned()
            .ok_or(Error::UnknownTask(id))
    }

    pub fn status(&self, id: Uuid) -> Result<TaskStatus> {
        let status = self.task(id)?.status.lock().expect("task").clone();
        Ok(status)
    }

    pub fn all(&self) -> Vec<TaskStatus> {
        let tasks = self.inner.tasks.lock().expect("tasks");
        let mut all: Vec<_> = tasks
            .values()
            .map(|t| t.status.lock().expect("task").clone())
            .collect();
        all.sort_by_key(|s| s.id);
        all
    }

    /// Forgets finished tasks that ended more than `age` ago and nobody
    /// cleared; returns how many.
    pub fn expire(&self, age: std::time::Duration) -> usize {
        let cutoff = crate::now_secs().saturating_sub(age.as_secs());
        let mut tasks = self.inner.tasks.lock().expect("tasks");
        forget_finished(&mut tasks, usize::MAX, Some(cutoff))
    }

    /// Forgets a finished task, and its record.
    pub fn clear(&self, id: Uuid) -> Result<()> {
        let mut tasks = self.inner.tasks.lock().expect("tasks");
        let task = tasks.get(&id).ok_or(Error::UnknownTask(id))?;
        if task.status.lock().expect("task").state != TaskState::Finished {
            return Err(Error::TaskNotFinished(id));
        }
        if let Some(dir) = &task.store {
            TaskRecord::remove(dir, id)
                .map_err(|e| Error::io(format!("cannot remove the record of task {id}"), e))?;
        }
        tasks.remove(&id);
        Ok(())
    }

    /// Rolls back a finished, successful task (`Task.revert`): `check` sees
    /// its record first and may refuse; what it returns (a lock) is held
    /// while the undo steps run. The task then reads `cleanSuccess`.
    pub fn revert<G>(&self, id: Uuid, check: impl FnOnce(&TaskRecord) -> Result<G>) -> Result<()> {
        let task = self.task(id)?;
        let st = task.status.lock().expect("task").clone();
        if st.state != TaskState::Finished {
            return Err(Error::TaskNotFinished(id));
        }
        if st.result != TaskResult::Success {
            // Already rolled back.
            return Ok(());
        }
        let rec = task.record.lock().expect("record").clone();
        if rec.plan.undo.is_empty() {
            return Err(Error::NotRevertible {
                task: id,
                reason: format!("{} cannot be undone", rec.verb),
            });
        }
        let _held = check(&rec)?;
        let runner = self
            .inner
            .runner
            .get()
            .ok_or_else(|| Error::AddTask("no recovery runner".into()))?;
        // Durably "reverting" first: a crash from here on is finished by
        // recovery (the undo steps are idempotent), never forgotten.
        task.record.lock().expect("record").state = REVERTING.into();
        task.save()?;
        crate::failpoint::hit("task.revert.marked")?;
        let clean = recovery::roll_back(runner.as_ref(), &rec.plan, id);
        let result = if clean {
            TaskResult::CleanSuccess
        } else {
            TaskResult::CleanFailure
        };
        tracing::info!(task = %id, verb = %rec.verb, clean, "task reverted");

        self.finish(&task, result, Some(reverted(id)));
        Ok(())
    }

    /// Forgets the tasks persisted in `dir` (the SPM role moved away).
    pub fn forget_store(&self, dir: &Path) {
        self.inner
            .tasks
            .lock()
            .expect("tasks")
            .retain(|_, t| t.store.as_deref() != Some(dir));
    }

    /// Asks a task to stop. A queued task ends at once; a running one stops
    /// at its next step boundary and rolls back.
    pub fn stop(&self, id: Uuid) -> Result<()> {
        let task = self.task(id)?;
        task.abort.store(true, Ordering::SeqCst);
        let mut queue = self.inner.queue.lock().expect("queue");
        if let Some(pos) = queue.iter().position(|(t, _)| Arc::ptr_eq(t, &task)) {
            queue.remove(pos);
            drop(queue);
            self.finish(
                &task,
                TaskResult::CleanSuccess,
                Some(Error::TaskAborted(id)),
            );
            return Ok(());
        }
        drop(queue);
        let mut st = task.status.lock().expect("task");
        if st.state == TaskState::Running {
            st.state = TaskState::Aborting;
        }
        Ok(())
    }

    /// True while any task is queued or running.
    /// A task still queued or running, other than `except`.
    pub fn unfinished(&self, except: Option<Uuid>) -> Option<Uuid> {
        self.all()
            .iter()
            .find(|s| s.state != TaskState::Finished && Some(s.id) != except)
            .map(|s| s.id)
    }

    /// Blocks until the task finishes (for in-process callers and tests).
    pub fn wait(&self, id: Uuid, timeout: std::time::Duration) -> Result<TaskStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.status(id)?;
            if st.state == TaskState::Finished || Instant::now() > deadline {
                return Ok(st);
            }
            thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Loads the records in a tasks directory: finished results become
    /// readable again; interrupted tasks are rolled back, or finished when
    /// they were past their commit point.
    pub fn recover(&self, dir: &Path) -> RecoveryReport {
        let mut report = RecoveryReport::default();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return report;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(crate::types::parse_uuid)
            else {
                continue;
            };
            if self.inner.tasks.lock().expect("tasks").contains_key(&id) {
                continue;
            }
            let mut rec = match TaskRecord::load(&path) {
                Ok(r) => r,
                // A record that never became durable (a crash between
                // creating the task's directory and its first write, or in
                // the middle of Task.clear): the task never ran.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    match TaskRecord::remove(dir, id) {
                        Ok(()) => tracing::info!(task = %id, "removed an incomplete task record"),
                        Err(e) => {
                            tracing::warn!(task = %id, error = %e, "cannot remove an incomplete task record")
                        }
                    }
                    continue;
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::error!(record = %path.display(), error = %e, "cannot read a persisted task; left in place");
                    continue;
                }
            };
            if rec.state == "finished" {
                report.finished += 1;
            } else {
                let (result, error) = self.recover_record(&rec, &mut report);
                rec.state = "finished".into();
                rec.result = result.name().into();
                rec.error = error.as_ref().map(RecordedError::from);
                rec.finished = Some(crate::now_secs());
                if let Err(e) = rec.save(dir) {
                    tracing::error!(task = %id, error = %e, "cannot persist the recovered task");
                }
            }
            let task = Arc::new(Task {
                status: Mutex::new(TaskStatus {
                    id,
                    verb: rec.verb.clone(),
                    state: TaskState::Finished,
                    result: TaskResult::from_name(&rec.result),
                    error: rec.error.as_ref().map(|e| {
                        Arc::new(Error::Recorded {
                            code: e.code,
                            message: e.message.clone(),
                        })
                    }),
                    ended: Some(rec.finished.unwrap_or_else(crate::now_secs)),
                    progress: None,
                }),
                abort: AtomicBool::new(false),
                queued_at: Instant::now(),
                started_at: Mutex::new(None),
                store: Some(dir.to_path_buf()),
                record: Mutex::new(rec),
            });
            self.inner.tasks.lock().expect("tasks").insert(id, task);
        }
        report
    }

    fn recover_record(
        &self,
        rec: &TaskRecord,
        report: &mut RecoveryReport,
    ) -> (TaskResult, Option<Error>) {
        let Some(runner) = self.inner.runner.get() else {
            tracing::error!(task = %rec.id, "no recovery runner is set; task left as it is");
            report.failed += 1;
            return (
                TaskResult::CleanFailure,
                Some(Error::AddTask("no recovery runner".into())),
            );
        };
        if rec.state == REVERTING {
            let ok = recovery::roll_back(runner.as_ref(), &rec.plan, rec.id);
            tracing::info!(task = %rec.id, verb = %rec.verb, ok, "interrupted revert finished");
            if ok {
                report.rolled_back += 1;
                return (TaskResult::CleanSuccess, Some(reverted(rec.id)));
            }
            report.failed += 1;
            return (
                TaskResult::CleanFailure,
                Some(interrupted(
                    rec.id,
                    "finishing its revert failed; see the log",
                )),
            );
        }
        let committed = match rec
            .plan
            .commit
            .as_ref()
            .map(|c| runner.committed(c))
            .transpose()
        {
            Ok(c) => c.unwrap_or(false),
            Err(e) => {
                report.failed += 1;
                return (TaskResult::CleanFailure, Some(e));
            }
        };
        if committed {
            let ok = recovery::roll_forward(runner.as_ref(), &rec.plan, rec.id);
            tracing::info!(task = %rec.id, verb = %rec.verb, ok, "interrupted task was past its commit point: finished it");
            if ok {
                report.rolled_forward += 1;
                return (TaskResult::Success, None);
            }
            report.failed += 1;
            return (
                TaskResult::CleanFailure,
                Some(interrupted(rec.id, "finishing it failed; see the log")),
            );
        }
        let ok = recovery::roll_back(runner.as_ref(), &rec.plan, rec.id);
        tracing::info!(task = %rec.id, verb = %rec.verb, ok, "interrupted task rolled back");
        if ok {
            report.rolled_back += 1;
            (
                TaskResult::CleanSuccess,
                Some(interrupted(rec.id, "rolled back")),
            )
        } else {
            report.failed += 1;
            (
                TaskResult::CleanFailure,
                Some(interrupted(rec.id, "rolling it back failed; see the log")),
            )
        }
    }

    fn set_state(&self, task: &Task, state: TaskState) {
        let snapshot = {
            let mut st = task.status.lock().expect("task");
            st.state = state;
            st.clone()
        };
        self.notify(&snapshot);
    }

    fn finish(&self, task: &Task, result: TaskResult, error: Option<Error>) {
        {
            let mut rec = task.record.lock().expect("record");
            rec.state = "finished".into();
            rec.result = result.name().into();
            rec.error = error.as_ref().map(RecordedError::from);
            rec.finished = Some(crate::now_secs());
        }
        if let Err(e) = task.save() {
            // The result is still readable until a restart.
            tracing::error!(task = %task.id(), error = %e, "cannot persist the task result");
        }
        let snapshot = {
            let mut st = task.status.lock().expect("task");
            st.state = TaskState::Finished;
            st.result = result;
            st.error = error.map(Arc::new);
            st.ended = Some(crate::now_secs());
            if result == TaskResult::Success {
                st.progress = st.progress.map(|_| 100);
            }
            st.clone()
        };
        let started = task
            .started_at
            .lock()
            .expect("task")
            .unwrap_or(task.queued_at);
        let queued_ms = (started - task.queued_at).as_secs_f64() * 1000.0;
        let run_ms = started.elapsed().as_secs_f64() * 1000.0;
        match &snapshot.error {
            None => {
                tracing::info!(task = %snapshot.id, verb = %snapshot.verb, queued_ms, run_ms, "task succeeded")
            }
            Some(e) => tracing::warn!(
                task = %snapshot.id, verb = %snapshot.verb, result = result.name(), queued_ms, run_ms, error = %e,
                "task failed"
            ),
        }
        self.notify(&snapshot);
    }

    fn notify(&self, st: &TaskStatus) {
        let listener = self.inner.listener.lock().expect("listener").clone();
        if let Some(l) = listener {
            l(st);
        }
    }

    fn run(&self, task: Arc<Task>, body: Body) {
        if task.abort.load(Ordering::SeqCst) {
            // Stopped between leaving the queue and starting: nothing ran.
            self.finish(
                &task,
                TaskResult::CleanSuccess,
                Some(Error::TaskAborted(task.id())),
            );
            return;
        }
        *task.started_at.lock().expect("task") = Some(Instant::now());
        self.set_state(&task, TaskState::Running);
        let ctx = TaskCtx {
            task: task.clone(),
            committed: AtomicBool::new(false),
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&ctx)))
            .unwrap_or_else(|p| {
                Err(Error::io(
                    "task panicked",
                    std::io::Error::other(panic_text(&p)),
                ))
            });
        let Err(e) = outcome else {
            self.finish(&task, TaskResult::Success, None);
            return;
        };
        let plan = task.record.lock().expect("record").plan.clone();
        let runner = self.inner.runner.get().cloned();
        if ctx.committed.load(Ordering::SeqCst) {
            // Past the point of no return: finish what is left.
            let ok = runner.is_some_and(|r| recovery::roll_forward(r.as_ref(), &plan, task.id()));
            let result = if ok {
                TaskResult::Success
            } else {
                TaskResult::CleanFailure
            };
            tracing::warn!(task = %task.id(), error = %e, finished = ok, "task failed after its commit point");
            self.finish(&task, result, (!ok).then_some(e));
            return;
        }
        self.set_state(&task, TaskState::Cleaning);
        let clean = match runner {
            Some(r) => recovery::roll_back(r.as_ref(), &plan, task.id()),
            None => plan.undo.is_empty(),
        };
        let result = if clean {
            TaskResult::CleanSuccess
        } else {
            TaskResult::CleanFailure
        };
        self.finish(&task, result, Some(e));
    }
}

/// Persisted state of a task whose `Task.revert` is under way.
const REVERTING: &str = "reverting";

fn reverted(id: Uuid) -> Error {
    Error::Recorded {
        code: Error::TaskAborted(id).code(),
        message: format!("task {id} was reverted"),
    }
}

fn interrupted(id: Uuid, what: &str) -> Error {
    Error::Recorded {
        code: Error::TaskAborted(id).code(),
        message: format!("task {id} was interrupted by a restart of cairnd; {what}"),
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

fn worker(inner: Arc<Inner>) {
    let mgr = TaskManager {
        inner: inner.clone(),
    };
    loop {
        let job = {
            let mut q = inner.queue.lock().expect("queue");
            loop {
                if let Some(job) = q.pop_front() {
                    break job;
                }
                q = inner.wake.wait(q).expect("queue");
            }
        };
        mgr.run(job.0, job.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tasks::recovery::{Commit, Step};
    use std::time::Duration;

    /// Records the steps it runs; commit checks answer `committed`.
    #[derive(Default)]
    struct Recorder {
        ran: Mutex<Vec<Step>>,
        fail: bool,
        committed: bool,
    }

    impl StepRunner for Recorder {
        fn run(&self, step: &Step) -> Result<()> {
            self.ran.lock().unwrap().push(step.clone());
            if self.fail {
                return Err(Error::invalid("step", "failed"));
            }
            Ok(())
        }
        fn committed(&self, _: &Commit) -> Result<bool> {
            Ok(self.committed)
        }
    }

    fn step(n: usize) -> Step {
        Step::RemoveImageIfEmpty {
            sd: Uuid::nil(),
            img: Uuid::from_u128(n as u128),
        }
    }

    fn plan(undo: Vec<Step>, redo: Vec<Step>) -> RecoveryPlan {
        RecoveryPlan {
            undo,
            redo,
            commit: Some(Commit::ImageExists {
                sd: Uuid::nil(),
                img: Uuid::nil(),
            }),
        }
    }

    /// The task's status once it has finished (tests give it 5 s).
    fn finished(m: &TaskManager, id: Uuid) -> TaskStatus {
        m.wait(id, Duration::from_secs(5)).unwrap()
    }

    fn manager(runner: Arc<Recorder>) -> TaskManager {
        let m = TaskManager::new(2, 10);
        m.set_runner(runner);
        m
    }

    #[test]
    fn success_and_clear() {
        let m = manager(Arc::default());
        let id = m.spawn("test", None, |_| Ok(())).unwrap();
        let st = finished(&m, id);
        assert_eq!(
            (st.state, st.result),
            (TaskState::Finished, TaskResult::Success)
        );
        m.clear(id).unwrap();
        assert!(matches!(m.status(id), Err(Error::UnknownTask(_))));
    }

    #[test]
    fn failure_rolls_back_in_reverse() {
        let r = Arc::new(Recorder::default());
        let m = manager(r.clone());
        let id = m
            .spawn("test", None, |ctx| {
                ctx.plan(plan(vec![step(1), step(2)], vec![step(9)]))?;
                Err(Error::invalid("x", "boom"))
            })
            .unwrap();
        assert_eq!(finished(&m, id).result, TaskResult::CleanSuccess);
        assert_eq!(*r.ran.lock().unwrap(), vec![step(2), step(1)]);
    }

    #[test]
    fn failure_after_commit_rolls_forward() {
        let r = Arc::new(Recorder::default());
        let m = manager(r.clone());
        let id = m
            .spawn("test", None, |ctx| {
                ctx.plan(plan(vec![step(1)], vec![step(8), step(9)]))?;
                ctx.commit();
                Err(Error::invalid("x", "boom"))
            })
            .unwrap();
        assert_eq!(finished(&m, id).result, TaskResult::Success);
        assert_eq!(*r.ran.lock().unwrap(), vec![step(8), step(9)]);
    }

    #[test]
    fn failed_undo_is_clean_failure() {
        let m = manager(Arc::new(Recorder {
            fail: true,
            ..Default::default()
        }));
        let id = m
            .spawn("test", None, |ctx| {
                ctx.plan(plan(vec![step(1)], vec![]))?;
                Err(Error::invalid("x", "boom"))
            })
            .unwrap();
        assert_eq!(finished(&m, id).result, TaskResult::CleanFailure);
    }

    #[test]
    fn stop_running_task() {
        let r = Arc::new(Recorder::default());
        let m = manager(r.clone());
        let id = m
            .spawn("test", None, |ctx| {
                ctx.plan(plan(vec![step(1)], vec![]))?;
                loop {
                    ctx.check_abort()?;
                    thread::sleep(Duration::from_millis(1));
                }
            })
            .unwrap();
        while m.status(id).unwrap().state != TaskState::Running {
            thread::sleep(Duration::from_millis(1));
        }
        assert!(matches!(m.clear(id), Err(Error::TaskNotFinished(_))));
        m.stop(id).unwrap();
        let st = finished(&m, id);
        assert_eq!(st.result, TaskResult::CleanSuccess);
        assert!(matches!(st.error.as_deref(), Some(Error::TaskAborted(_))));
        assert_eq!(*r.ran.lock().unwrap(), vec![step(1)]);
    }

    #[test]
    fn queue_is_bounded() {
        let m = TaskManager::new(1, 2);
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let g = gate.clone();
        let first = m
            .spawn("block", None, move |_| {
                let (l, c) = &*g;
                let mut open = l.lock().unwrap();
                while !*open {
                    open = c.wait(open).unwrap();
                }
                Ok(())
            })
            .unwrap();
        let queued = m.spawn("queued", None, |_| Ok(())).unwrap();
        assert!(matches!(
            m.spawn("third", None, |_| Ok(())),
            Err(Error::AddTask(_))
        ));
        m.stop(queued).unwrap();
        assert_eq!(m.status(queued).unwrap().state, TaskState::Finished);
        // A finished task nobody cleared makes room for new work.
        let third = m.spawn("third", None, |_| Ok(())).unwrap();
        assert!(matches!(m.status(queued), Err(Error::UnknownTask(_))));
        m.stop(third).unwrap();
        assert_eq!(m.expire(std::time::Duration::ZERO), 0, "ended this second");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        assert_eq!(finished(&m, first).result, TaskResult::Success);
    }

    #[test]
    fn panics_become_failures() {
        let m = manager(Arc::default());
        let id = m.spawn("test", None, |_| panic!("bug")).unwrap();
        let st = finished(&m, id);
        assert_eq!(st.result, TaskResult::CleanSuccess);
        assert!(st.error.unwrap().to_string().contains("bug"));
    }

    #[test]
    fn persisted_tasks_are_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path();
        // A finished task and two interrupted ones, as a crash leaves them.
        let m = manager(Arc::default());
        let done = m.spawn("done", Some(store), |_| Ok(())).unwrap();
        finished(&m, done);
        let write = |plan: RecoveryPlan| {
            let rec = TaskRecord {
                state: "running".into(),
                plan,
                ..TaskRecord::new(Uuid::new_v4(), "createVolume")
            };
            rec.save(store).unwrap();
            rec.id
        };
        let back = write(plan(vec![step(1), step(2)], vec![]));
        let r = Arc::new(Recorder::default());
        let fresh = manager(r.clone());
        let report = fresh.recover(store);
        assert_eq!(
            report,
            RecoveryReport {
                finished: 1,
                rolled_back: 1,
                rolled_forward: 0,
                failed: 0
            }
        );
        assert_eq!(fresh.status(done).unwrap().result, TaskResult::Success);
        let st = fresh.status(back).unwrap();
        assert_eq!(
            (st.state, st.result),
            (TaskState::Finished, TaskResult::CleanSuccess)
        );
        assert_eq!(st.error.unwrap().code(), 411);
        assert_eq!(*r.ran.lock().unwrap(), vec![step(2), step(1)]);
        // The outcome was persisted: a second recovery only loads it.
        let again = manager(Arc::new(Recorder::default()));
        assert_eq!(again.recover(store).finished, 2);
        // Committed interrupted tasks are finished instead.
        let fwd = write(plan(vec![step(1)], vec![step(7)]));
        let r = Arc::new(Recorder {
            committed: true,
            ..Default::default()
        });
        let third = manager(r.clone());
        let report = third.recover(store);
        assert_eq!(report.rolled_forward, 1);
        assert_eq!(third.status(fwd).unwrap().result, TaskResult::Success);
        assert_eq!(*r.ran.lock().unwrap(), vec![step(7)]);
        // Clearing removes the record.
        third.clear(fwd).unwrap();
        assert!(!TaskRecord::dir(store, fwd).exists());
    }
}
