//! Task.*: status, clear, revert, stop.

use super::*;

pub(super) const TASK_GET_STATUS: Verb = Verb {
    name: "Task.getStatus",
    params: &["taskID"],
    handler: task_get_status,
};

fn task_get_status(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&task_status_value(&e.tasks.status(p.uuid("taskID")?)?))
}

pub(super) const TASK_GET_INFO: Verb = Verb {
    name: "Task.getInfo",
    params: &["taskID"],
    handler: task_get_info,
};

fn task_get_info(e: &Arc<Engine>, p: &Params) -> Reply {
    to_value(&task_info_value(&e.tasks.status(p.uuid("taskID")?)?))
}

pub(super) const TASK_CLEAR: Verb = Verb {
    name: "Task.clear",
    params: &["taskID"],
    handler: task_clear,
};

fn task_clear(e: &Arc<Engine>, p: &Params) -> Reply {
    e.tasks.clear(p.uuid("taskID")?)?;
    ok()
}

pub(super) const TASK_REVERT: Verb = Verb {
    name: "Task.revert",
    params: &["taskID"],
    handler: task_revert,
};

fn task_revert(e: &Arc<Engine>, p: &Params) -> Reply {
    e.revert_task(p.uuid("taskID")?)?;
    ok()
}

pub(super) const TASK_STOP: Verb = Verb {
    name: "Task.stop",
    params: &["taskID"],
    handler: task_stop,
};

fn task_stop(e: &Arc<Engine>, p: &Params) -> Reply {
    e.tasks.stop(p.uuid("taskID")?)?;
    ok()
}
