//! Restart policies (`--restart`): a container whose task ended is started
//! again after a delay (docker's backoff: 100 ms, doubling to a minute, back
//! to 100 ms after 10 s of running), and `always` / `unless-stopped`
//! containers start when the machine does. A container the user stopped is
//! never started again by a policy; a user's start clears that.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::containers::find;
use super::{blocking, Core};
use crate::metadata::ContainerRecord;
use crate::runtime::Proc;

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run this long resets the delay.
const RESET_AFTER: Duration = Duration::from_secs(10);
/// Starts that fail in a row before the agent gives up on a container.
const MAX_FAILED_STARTS: u32 = 10;

/// The delay before the next restart: the first after a run of
/// [`RESET_AFTER`] or more, else twice the last (at most [`MAX_DELAY`]).
pub(crate) fn next_delay(last: Option<Duration>, ran: Duration) -> Duration {
    match last {
        Some(d) if ran < RESET_AFTER => (d * 2).min(MAX_DELAY),
        _ => FIRST_DELAY,
    }
}

/// The delays of the containers' last restarts, by (namespace, id).
#[derive(Default)]
pub(crate) struct Backoff(HashMap<(String, String), Duration>);

/// After `rec`'s task ended: start it again when its policy says so.
pub(crate) fn after_exit(core: &Arc<Core>, ns: &str, rec: &ContainerRecord, backoff: &mut Backoff) {
    let key = (ns.to_owned(), rec.id.clone());
    // A container that ended is not pending any more (a restart it was
    // waiting for is replaced by this decision).
    core.tasks.end_restart(ns, &rec.id, None);
    let Some(exit) = &rec.last_exit else { return };
    if !rec.config.restart.restarts_after(exit.exit_code, rec.restart_count, rec.stopped_by_user) {
        backoff.0.remove(&key);
        return;
    }
    // A shim that died recorded no start: that run counts as a short one.
    let ran = if exit.started_at > 0 {
        Duration::from_nanos(exit.finished_at.saturating_sub(exit.started_at).max(0) as u64)
    } else {
        Duration::ZERO
    };
    let delay = next_delay(backoff.0.get(&key).copied(), ran);
    backoff.0.insert(key, delay);
    schedule(core.clone(), ns.to_owned(), rec.id.clone(), delay, true);
}

/// Forget the delays of containers that are gone.
pub(crate) fn prune(core: &Core, backoff: &mut Backoff) {
    backoff.0.retain(|(ns, id), _| core.meta.container(ns, id).is_ok());
}

/// When the agent starts. At the machine's start (`first_boot`: no task
/// survived), the containers whose policy starts them with the machine (an
/// `always` one even if the user had stopped it, as docker does). At every
/// start, the containers that were waiting for a restart when the agent
/// stopped (their delay is not kept).
pub(crate) fn at_start(core: &Arc<Core>, first_boot: bool) {
    let all = match core.meta.all_containers() {
        Ok(all) => all,
        Err(e) => return tracing::warn!(error = %e, "listing containers for their restart policies"),
    };
    for (ns, rec) in all {
        if core.tasks.has_task(&ns, &rec.id) {
            continue;
        }
        let policy = rec.config.restart;
        if first_boot && policy.starts_at_boot(true, rec.stopped_by_user) {
            if rec.stopped_by_user {
                let _ = core.meta.update_container(&ns, &rec.id, |r| r.stopped_by_user = false);
            }
            schedule(core.clone(), ns, rec.id, Duration::ZERO, false);
        } else if rec.last_exit.as_ref().is_some_and(|e| policy.restarts_after(e.exit_code, rec.restart_count, rec.stopped_by_user)) {
            schedule(core.clone(), ns, rec.id, FIRST_DELAY, true);
        }
    }
}

/// Start the container after `delay` (shown as `restarting` meanwhile),
/// unless by then a newer decision replaced this one, it is gone, the user
/// stopped or started it, or its policy no longer asks for it. `counted`: a
/// restart after an exit (counted in `restart_count`, with an event).
fn schedule(core: Arc<Core>, ns: String, id: String, delay: Duration, counted: bool) {
    let generation = core.tasks.begin_restart(&ns, &id);
    tokio::spawn(async move {
        let mut delay = delay;
        let mut failures = 0;
        loop {
            tokio::time::sleep(delay).await;
            let current = |core: &Core| core.tasks.restart_is_current(&ns, &id, generation);
            let rec = match find(&core, &ns, &id).await {
                Ok(rec) if current(&core) && !rec.stopped_by_user && !core.tasks.has_task(&ns, &id) => rec,
                _ => break,
            };
            let wanted = !counted
                || rec.last_exit.as_ref().is_some_and(|e| rec.config.restart.restarts_after(e.exit_code, rec.restart_count, false));
            if !wanted {
                break;
            }
            let rec = if counted && failures == 0 {
                let (c, n, i) = (core.clone(), ns.clone(), id.clone());
                match blocking(move || Ok(c.meta.update_container(&n, &i, |r| r.restart_count += 1)?)).await {
                    Ok(rec) => rec,
                    Err(_) => break,
                }
            } else {
                rec
            };
            if counted && failures == 0 {
                core.events.publish(&ns, "/tasks/restart", &id, &[("restart_count", rec.restart_count.to_string())]);
            }
            match core.tasks.start(&ns, &rec, &Proc::Init).await {
                Ok(_) => {
                    undo_if_overtaken(&core, &ns, &rec).await;
                    break;
                }
                Err(e) => {
                    failures += 1;
                    if failures >= MAX_FAILED_STARTS {
                        tracing::warn!(container = %id, error = %e, "its restart policy gives up: the last {MAX_FAILED_STARTS} starts failed");
                        break;
                    }
                    tracing::warn!(container = %id, error = %e, "starting the container again failed; trying later");
                    delay = next_delay(Some(delay.max(FIRST_DELAY)), Duration::ZERO);
                }
            }
        }
        core.tasks.end_restart(&ns, &id, Some(generation));
    });
}

/// A user's stop or removal that came while the policy's start was under
/// way (it found no task to stop): the start is undone.
async fn undo_if_overtaken(core: &Arc<Core>, ns: &str, rec: &ContainerRecord) {
    let stopped = match core.meta.container(ns, &rec.id) {
        Ok(now) => now.stopped_by_user,
        Err(_) => true,
    };
    if stopped {
        tracing::info!(container = %rec.id, "stopped or removed while its restart policy started it: stopping it again");
        if let Err(e) = core.tasks.delete(ns, rec, true).await {
            tracing::warn!(container = %rec.id, error = %e, "stopping a container its restart policy started too late");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_a_minute_and_reset_after_ten_seconds_of_running() {
        let short = Duration::from_millis(5);
        assert_eq!(next_delay(None, short), FIRST_DELAY);
        assert_eq!(next_delay(Some(FIRST_DELAY), short), Duration::from_millis(200));
        assert_eq!(next_delay(Some(Duration::from_secs(40)), short), MAX_DELAY);
        assert_eq!(next_delay(Some(Duration::from_secs(40)), Duration::from_secs(11)), FIRST_DELAY);
    }
}
