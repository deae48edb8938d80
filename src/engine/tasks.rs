//! Asynchronous tasks, VDSM style.
//!
//! A verb that changes storage validates its input synchronously, then queues
//! a task and returns its id at once. Tasks run on a bounded pool of worker
//! threads. A task body records an undo action before each step that changes
//! storage; if the body fails or is stopped, the undo actions run in reverse
//! order (rollback) and the task ends `cleanSuccess` (or `cleanFailure` when
//! an undo itself failed). Results stay readable until `Task.clear`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use crate::error::{Error, Result};
use crate::types::Uuid;

/// VDSM's task pool size and queue limit.
pub const DEFAULT_WORKERS: usize = 10;
pub const DEFAULT_MAX_TASKS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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
}

type Body = Box<dyn FnOnce(&TaskCtx) -> Result<()> + Send>;
type Undo = Box<dyn FnOnce() -> Result<()> + Send>;
type Listener = Arc<dyn Fn(&TaskStatus) + Send + Sync>;

struct Task {
    status: Mutex<TaskStatus>,
    abort: AtomicBool,
    queued_at: std::time::Instant,
    started_at: Mutex<Option<std::time::Instant>>,
}

/// What a running task body can do.
pub struct TaskCtx {
    task: Arc<Task>,
    undo: Mutex<Vec<(String, Undo)>>,
}

impl TaskCtx {
    /// Records how to undo the step about to run.
    pub fn push_undo(
        &self,
        what: impl Into<String>,
        undo: impl FnOnce() -> Result<()> + Send + 'static,
    ) {
        self.undo
            .lock()
            .expect("undo stack")
            .push((what.into(), Box::new(undo)));
    }

    /// Marks the point of no return: the steps so far can no longer be
    /// undone, so a later failure must not try.
    pub fn commit(&self) {
        self.undo.lock().expect("undo stack").clear();
    }

    /// Fails with `TaskAborted` if `Task.stop` was called.
    pub fn check_abort(&self) -> Result<()> {
        if self.task.abort.load(Ordering::SeqCst) {
            let id = self.task.status.lock().expect("task").id;
            return Err(Error::TaskAborted(id));
        }
        Ok(())
    }

    pub fn id(&self) -> Uuid {
        self.task.status.lock().expect("task").id
    }
}

struct Inner {
    tasks: Mutex<HashMap<Uuid, Arc<Task>>>,
    queue: Mutex<VecDeque<(Arc<Task>, Body)>>,
    wake: Condvar,
    max_tasks: usize,
    listener: Mutex<Option<Listener>>,
}

#[derive(Clone)]
pub struct TaskManager {
    inner: Arc<Inner>,
}

impl TaskManager {
    pub fn new(workers: usize, max_tasks: usize) -> Self {
        let inner = Arc::new(Inner {
            tasks: Mutex::new(HashMap::new()),
            queue: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            max_tasks,
            listener: Mutex::new(None),
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

    /// Called on every state change (for event notifications).
    pub fn set_listener(&self, f: impl Fn(&TaskStatus) + Send + Sync + 'static) {
        *self.inner.listener.lock().expect("listener") = Some(Arc::new(f));
    }

    /// Queues `body` as task `id` (a fresh UUID unless the caller chose one).
    pub fn spawn(
        &self,
        verb: &str,
        body: impl FnOnce(&TaskCtx) -> Result<()> + Send + 'static,
    ) -> Result<Uuid> {
        let id = Uuid::new_v4();
        let task = Arc::new(Task {
            status: Mutex::new(TaskStatus {
                id,
                verb: verb.to_string(),
                state: TaskState::Init,
                result: TaskResult::InProgress,
                error: None,
            }),
            abort: AtomicBool::new(false),
            queued_at: std::time::Instant::now(),
            started_at: Mutex::new(None),
        });
        {
            let mut tasks = self.inner.tasks.lock().expect("tasks");
            if tasks.len() >= self.inner.max_tasks {
                return Err(Error::AddTask(format!(
                    "{} tasks are kept already; clear finished tasks with Task.clear",
                    tasks.len()
                )));
            }
            tasks.insert(id, task.clone());
        }
        tracing::info!(task = %id, verb, "task queued");
        self.inner
            .queue
            .lock()
            .expect("queue")
            .push_back((task, Box::new(body)));
        self.inner.wake.notify_one();
        Ok(id)
    }

    pub fn status(&self, id: Uuid) -> Result<TaskStatus> {
        let tasks = self.inner.tasks.lock().expect("tasks");
        let task = tasks.get(&id).ok_or(Error::UnknownTask(id))?;
        let status = task.status.lock().expect("task").clone();
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

    /// Forgets a finished task.
    pub fn clear(&self, id: Uuid) -> Result<()> {
        let mut tasks = self.inner.tasks.lock().expect("tasks");
        let task = tasks.get(&id).ok_or(Error::UnknownTask(id))?;
        if task.status.lock().expect("task").state != TaskState::Finished {
            return Err(Error::TaskNotFinished(id));
        }
        tasks.remove(&id);
        Ok(())
    }

    /// Asks a task to stop. A queued task ends at once; a running one stops
    /// at its next step boundary and rolls back.
    pub fn stop(&self, id: Uuid) -> Result<()> {
        let task = self
            .inner
            .tasks
            .lock()
            .expect("tasks")
            .get(&id)
            .cloned()
            .ok_or(Error::UnknownTask(id))?;
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
    pub fn busy(&self) -> bool {
        self.all().iter().any(|s| s.state != TaskState::Finished)
    }

    /// Blocks until the task finishes (for in-process callers and tests).
    pub fn wait(&self, id: Uuid, timeout: std::time::Duration) -> Result<TaskStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let st = self.status(id)?;
            if st.state == TaskState::Finished || std::time::Instant::now() > deadline {
                return Ok(st);
            }
            thread::sleep(std::time::Duration::from_millis(2));
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
        let snapshot = {
            let mut st = task.status.lock().expect("task");
            st.state = TaskState::Finished;
            st.result = result;
            st.error = error.map(Arc::new);
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
            let id = task.status.lock().expect("task").id;
            self.finish(
                &task,
                TaskResult::CleanSuccess,
                Some(Error::TaskAborted(id)),
            );
            return;
        }
        *task.started_at.lock().expect("task") = Some(std::time::Instant::now());
        self.set_state(&task, TaskState::Running);
        let ctx = TaskCtx {
            task: task.clone(),
            undo: Mutex::new(Vec::new()),
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&ctx)))
            .unwrap_or_else(|p| {
                Err(Error::io(
                    "task panicked",
                    std::io::Error::other(panic_text(&p)),
                ))
            });
        match outcome {
            Ok(()) => self.finish(&task, TaskResult::Success, None),
            Err(e) => {
                self.set_state(&task, TaskState::Cleaning);
                let undo = std::mem::take(&mut *ctx.undo.lock().expect("undo stack"));
                let mut clean = true;
                for (what, step) in undo.into_iter().rev() {
                    if let Err(ue) = step() {
                        clean = false;
                        tracing::error!(task = %ctx.id(), step = %what, error = %ue, "rollback step failed");
                    } else {
                        tracing::debug!(task = %ctx.id(), step = %what, "rolled back");
                    }
                }
                let result = if clean {
                    TaskResult::CleanSuccess
                } else {
                    TaskResult::CleanFailure
                };
                self.finish(&task, result, Some(e));
            }
        }
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
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn success_and_clear() {
        let m = TaskManager::new(2, 10);
        let id = m.spawn("test", |_| Ok(())).unwrap();
        let st = m.wait(id, Duration::from_secs(5)).unwrap();
        assert_eq!(
            (st.state, st.result),
            (TaskState::Finished, TaskResult::Success)
        );
        m.clear(id).unwrap();
        assert!(matches!(m.status(id), Err(Error::UnknownTask(_))));
    }

    #[test]
    fn failure_rolls_back_in_reverse() {
        let m = TaskManager::new(1, 10);
        let order = Arc::new(Mutex::new(Vec::new()));
        let o = order.clone();
        let id = m
            .spawn("test", move |ctx| {
                let a = o.clone();
                ctx.push_undo("first", move || {
                    a.lock().unwrap().push(1);
                    Ok(())
                });
                let b = o.clone();
                ctx.push_undo("second", move || {
                    b.lock().unwrap().push(2);
                    Ok(())
                });
                Err(Error::invalid("x", "boom"))
            })
            .unwrap();
        let st = m.wait(id, Duration::from_secs(5)).unwrap();
        assert_eq!(st.result, TaskResult::CleanSuccess);
        assert_eq!(*order.lock().unwrap(), vec![2, 1]);
    }

    #[test]
    fn failed_undo_is_clean_failure() {
        let m = TaskManager::new(1, 10);
        let id = m
            .spawn("test", |ctx| {
                ctx.push_undo("bad", || Err(Error::invalid("y", "undo failed")));
                Err(Error::invalid("x", "boom"))
            })
            .unwrap();
        assert_eq!(
            m.wait(id, Duration::from_secs(5)).unwrap().result,
            TaskResult::CleanFailure
        );
    }

    #[test]
    fn stop_running_task() {
        let m = TaskManager::new(1, 10);
        let undone = Arc::new(AtomicUsize::new(0));
        let u = undone.clone();
        let id = m
            .spawn("test", move |ctx| {
                ctx.push_undo("step", move || {
                    u.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                });
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
        let st = m.wait(id, Duration::from_secs(5)).unwrap();
        assert_eq!(st.result, TaskResult::CleanSuccess);
        assert!(matches!(st.error.as_deref(), Some(Error::TaskAborted(_))));
        assert_eq!(undone.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn queue_is_bounded() {
        let m = TaskManager::new(1, 2);
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let g = gate.clone();
        let first = m
            .spawn("block", move |_| {
                let (l, c) = &*g;
                let mut open = l.lock().unwrap();
                while !*open {
                    open = c.wait(open).unwrap();
                }
                Ok(())
            })
            .unwrap();
        let queued = m.spawn("queued", |_| Ok(())).unwrap();
        assert!(matches!(
            m.spawn("third", |_| Ok(())),
            Err(Error::AddTask(_))
        ));
        m.stop(queued).unwrap();
        assert_eq!(m.status(queued).unwrap().state, TaskState::Finished);
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        assert_eq!(
            m.wait(first, Duration::from_secs(5)).unwrap().result,
            TaskResult::Success
        );
    }

    #[test]
    fn panics_become_failures() {
        let m = TaskManager::new(1, 10);
        let id = m.spawn("test", |_| panic!("bug")).unwrap();
        let st = m.wait(id, Duration::from_secs(5)).unwrap();
        assert_eq!(st.result, TaskResult::CleanSuccess);
        assert!(st.error.unwrap().to_string().contains("bug"));
    }
}
