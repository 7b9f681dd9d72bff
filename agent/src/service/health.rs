//! Health checks: while a container with a check runs, the agent runs the
//! check's command in it (an exec) every interval, bounded by its timeout.
//! Status `starting` until a probe passes, `healthy` then, `unhealthy` after
//! `retries` failures in a row (failures in the start period do not count).
//! The last five probes are kept; a change of status is an event
//! (`/tasks/health`). Kept in memory: after an agent restart a check starts
//! again from `starting`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::tasks::{ExecRequest, TaskService};
use super::Core;
use crate::container::config::HealthCheck;
use crate::keyed::{NsId, NsMap};
use crate::metadata::now_nanos;
use crate::runtime::{AttachOutput, ExecId, Proc};

/// Probes kept per container.
const KEPT: usize = 5;
/// Output kept per probe.
const MAX_OUTPUT: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One run of the check.
#[derive(Debug, Clone)]
pub struct Probe {
    pub start: i64,
    pub end: i64,
    /// -1 when it did not finish in time.
    pub exit_code: i32,
    pub output: String,
}

#[derive(Debug, Clone)]
pub struct HealthState {
    pub status: HealthStatus,
    pub failing_streak: u32,
    pub log: VecDeque<Probe>,
    /// The loop that owns it: a later task start replaces an earlier one's.
    generation: u64,
}

/// The health of every checked container, by (namespace, id); and which
/// have a loop running.
#[derive(Default)]
pub struct Health {
    states: Mutex<NsMap<HealthState>>,
}

impl Health {
    pub fn get(&self, ns: &str, id: &str) -> Option<HealthState> {
        self.states.lock().unwrap_or_else(|e| e.into_inner()).get(&NsId(ns, id)).cloned()
    }

    /// The health of containers `ids`, in their order, the map locked once.
    pub fn get_many<'a>(&self, ns: &str, ids: impl Iterator<Item = &'a str>) -> Vec<Option<HealthState>> {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        ids.map(|id| states.get(&NsId(ns, id)).cloned()).collect()
    }
}

/// Follow task starts (and the tasks found at the agent's start) and run the
/// checks of their containers.
pub(crate) fn start(core: Arc<Core>) {
    let mut events = core.events.subscribe();
    for (ns, rec) in core.meta.all_containers().unwrap_or_default() {
        if rec.config.healthcheck.is_some() && core.tasks.is_running(&ns, &rec.id) {
            watch(core.clone(), ns, rec.id);
        }
    }
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) if e.topic == "/tasks/start" && e.attributes.get("exec_id").is_none_or(|x| x.is_empty()) => {
                    if let Ok(rec) = core.meta.container(&e.namespace, &e.id) {
                        if rec.config.healthcheck.is_some() {
                            watch(core.clone(), e.namespace.clone(), e.id.clone());
                        }
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// Run the container's check while its task runs (one loop per task start:
/// a later start's loop takes over).
fn watch(core: Arc<Core>, ns: String, id: String) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
    let key = (ns.clone(), id.clone());
    core.health
        .states
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.clone(), HealthState { status: HealthStatus::Starting, failing_streak: 0, log: VecDeque::new(), generation });
    let current = move |core: &Core| core.health.get(&key.0, &key.1).is_some_and(|s| s.generation == generation);
    tokio::spawn(async move {
        let tasks = TaskService::new(core.clone());
        let started = now_nanos();
        let key = (ns.clone(), id.clone());
        while let Ok(rec) = core.meta.container(&ns, &id) {
            let Some(check) = rec.config.healthcheck.clone() else { break };
            tokio::time::sleep(Duration::from_millis(check.interval_ms.max(100))).await;
            if !core.tasks.is_running(&ns, &id) || !current(&core) {
                break;
            }
            let probe = run_probe(&tasks, &ns, &id, &check).await;
            let in_start_period = probe.start - started < (check.start_period_ms as i64) * 1_000_000;
            let changed = {
                let mut states = core.health.states.lock().unwrap_or_else(|e| e.into_inner());
                let Some(state) = states.get_mut(&key).filter(|s| s.generation == generation) else { break };
                let before = state.status;
                if probe.exit_code == 0 {
                    state.failing_streak = 0;
                    state.status = HealthStatus::Healthy;
                } else if !in_start_period {
                    state.failing_streak += 1;
                    if state.failing_streak >= check.retries.max(1) {
                        state.status = HealthStatus::Unhealthy;
                    }
                }
                state.log.push_back(probe);
                while state.log.len() > KEPT {
                    state.log.pop_front();
                }
                (state.status != before).then_some(state.status)
            };
            if let Some(status) = changed {
                core.events.publish(&ns, "/tasks/health", &id, &[("health_status", status.as_str().to_owned())]);
            }
        }
        // A removed container's health goes with it.
        if core.meta.container(&ns, &id).is_err() {
            let mut states = core.health.states.lock().unwrap_or_else(|e| e.into_inner());
            if states.get(&key).is_some_and(|s| s.generation == generation) {
                states.remove(&key);
            }
        }
    });
}

/// Run the check's command once, bounded by its timeout.
async fn run_probe(tasks: &TaskService, ns: &str, id: &str, check: &HealthCheck) -> Probe {
    let start = now_nanos();
    let failed = |why: String| Probe { start, end: now_nanos(), exit_code: -1, output: why };
    let Some(args) = check.command() else { return failed(format!("a health check test that runs nothing: {:?}", check.test)) };
    let exec_id = ExecId::generate();
    let proc = Proc::Exec(exec_id.clone());
    let req = ExecRequest { exec_id: Some(exec_id), args, ..Default::default() };
    if let Err(e) = tasks.exec(ns, id, req).await {
        return failed(e.to_string());
    }
    let result = async {
        let mut output = tasks.attach(ns, id, &proc, tokio_stream::empty()).await?;
        tasks.start(ns, id, &proc).await?;
        let mut text = Vec::new();
        while let Some(out) = output.recv().await {
            match out? {
                AttachOutput::Stdout(b) | AttachOutput::Stderr(b) => {
                    let room = MAX_OUTPUT.saturating_sub(text.len());
                    text.extend_from_slice(&b[..b.len().min(room)]);
                }
                AttachOutput::Exit(code) => return Ok((code, text)),
            }
        }
        Err(super::Error::Internal("the check's output ended without its exit".into()))
    };
    let probe = match tokio::time::timeout(Duration::from_millis(check.timeout_ms.max(100)), result).await {
        Ok(Ok((code, text))) => Probe { start, end: now_nanos(), exit_code: code, output: String::from_utf8_lossy(&text).into_owned() },
        Ok(Err(e)) => failed(e.to_string()),
        Err(_) => {
            let _ = tasks.kill(ns, id, &proc, "KILL", false).await;
            failed(format!("the health check did not finish within {} ms", check.timeout_ms))
        }
    };
    let _ = tasks.delete(ns, id, &proc, true).await;
    probe
}
