//! The process table: the init and its execs, their states, exit codes and
//! times, and what each state allows.
//!
//! Plain data. The event loop does the I/O (runs the runtime, reaps
//! children, signals) and tells the table what happened; the table answers
//! what a request may do. Each entry carries the loop's handles for that
//! process (`T`: its pidfd and stdio) so that a process and its descriptors
//! leave together.
//!
//! The init is entry 0 and never leaves; execs follow in the order they were
//! added. Positions are stable until [`ProcessTable::generation`] changes.

use std::fmt;

use rustix::process::Signal;

use crate::protocol::{ErrorKind, ExitRecord, ProcessState, ProcessStatus, ShimError, TaskState};

/// Exited execs kept for `wait`; past this the oldest exited one is forgotten
/// when another is added.
pub const MAX_EXITED_EXECS: usize = 128;

/// What a request asked of a process that its state does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessError {
    NotFound(String),
    AlreadyExists(String),
    /// Start of a process that has run (or failed to start).
    AlreadyRan,
    AlreadyRunning,
    /// An exec into (or the start of an exec in) a container whose init is not running.
    ContainerNotRunning,
    /// A signal to a process that is not running.
    NotRunning,
    /// Delete, without force, of a process that is running.
    StillRunning,
    AlreadyPaused,
    NotPaused,
    /// A signal without a name here (a real-time one) to an exec: only the
    /// runtime sends those, and only to the init.
    MainProcessOnly(i32),
}

impl ProcessError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProcessError::NotFound(_) => ErrorKind::NotFound,
            ProcessError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            ProcessError::AlreadyRan
            | ProcessError::AlreadyRunning
            | ProcessError::ContainerNotRunning
            | ProcessError::NotRunning
            | ProcessError::StillRunning
            | ProcessError::AlreadyPaused
            | ProcessError::NotPaused => ErrorKind::FailedPrecondition,
            ProcessError::MainProcessOnly(_) => ErrorKind::InvalidArgument,
        }
    }
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::NotFound(id) => write!(f, "exec {id:?} not found"),
            ProcessError::AlreadyExists(id) => write!(f, "exec {id:?} already exists"),
            ProcessError::AlreadyRan => f.write_str("the process has already run; delete the task to start again"),
            ProcessError::AlreadyRunning => f.write_str("the process is already running"),
            ProcessError::ContainerNotRunning => f.write_str("the container is not running"),
            ProcessError::NotRunning => f.write_str("the process is not running"),
            ProcessError::StillRunning => f.write_str("the process is still running; stop it first"),
            ProcessError::AlreadyPaused => f.write_str("the container is already paused"),
            ProcessError::NotPaused => f.write_str("the container is not paused"),
            ProcessError::MainProcessOnly(signal) => write!(f, "signal {signal} can only be sent to the main process"),
        }
    }
}

impl std::error::Error for ProcessError {}

impl From<ProcessError> for ShimError {
    fn from(e: ProcessError) -> Self {
        ShimError { kind: e.kind(), message: e.to_string() }
    }
}

/// One process: the init (empty exec id) or an exec.
#[derive(Debug, Clone, PartialEq)]
pub struct Process {
    exec_id: String,
    /// For an exec: the OCI process object the runtime is given at start.
    spec: Option<serde_json::Value>,
    status: ProcessStatus,
    pid: u32,
    exit_code: i32,
    /// Nanoseconds since the Unix epoch; 0 when not yet.
    started_at: i64,
    exited_at: i64,
}

impl Process {
    fn new(exec_id: String, spec: Option<serde_json::Value>) -> Self {
        Process { exec_id, spec, status: ProcessStatus::Created, pid: 0, exit_code: 0, started_at: 0, exited_at: 0 }
    }

    pub fn exec_id(&self) -> &str {
        &self.exec_id
    }

    pub fn spec(&self) -> Option<&serde_json::Value> {
        self.spec.as_ref()
    }

    pub fn status(&self) -> ProcessStatus {
        self.status
    }

    /// 0 until the runtime has reported it.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Running or paused: it can exit, and be signalled.
    pub fn is_live(&self) -> bool {
        matches!(self.status, ProcessStatus::Running | ProcessStatus::Paused)
    }

    /// The exit code, once the process has exited.
    pub fn exit_code(&self) -> Option<i32> {
        (self.status == ProcessStatus::Exited).then_some(self.exit_code)
    }

    pub fn state(&self) -> ProcessState {
        ProcessState {
            exec_id: self.exec_id.clone(),
            pid: self.pid,
            status: self.status,
            exit_code: self.exit_code,
            started_at: self.started_at,
            exited_at: self.exited_at,
        }
    }

    pub fn exit_record(&self) -> ExitRecord {
        ExitRecord { pid: self.pid, exit_code: self.exit_code, started_at: self.started_at, exited_at: self.exited_at }
    }
}

/// Who delivers a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The runtime, to every process of the container (`kill --all`).
    RuntimeAll,
    /// The runtime, to the init: a signal without a name here.
    Runtime,
    /// The shim, to the process at `index` (its child, so the pid cannot be
    /// reused under it).
    Direct { index: usize, signal: Signal },
}

struct Entry<T> {
    process: Process,
    handles: T,
}

/// The init and the execs, each with the event loop's handles `T`.
pub struct ProcessTable<T> {
    entries: Vec<Entry<T>>,
    generation: u64,
}

/// The init's position.
pub const INIT: usize = 0;

impl<T> ProcessTable<T> {
    /// A table holding the init, created.
    pub fn new(init: T) -> Self {
        ProcessTable { entries: vec![Entry { process: Process::new(String::new(), None), handles: init }], generation: 0 }
    }

    /// Bumped whenever a process leaves: positions taken before a change may
    /// name another process now.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn init(&self) -> &Process {
        &self.entries[INIT].process
    }

    /// The process at `index`, which must be a current position.
    pub fn process(&self, index: usize) -> &Process {
        &self.entries[index].process
    }

    /// The handles at `index`, which must be a current position.
    pub fn handles(&self, index: usize) -> &T {
        &self.entries[index].handles
    }

    pub fn handles_mut(&mut self, index: usize) -> &mut T {
        &mut self.entries[index].handles
    }

    /// The process and handles at `index`, if there is one.
    pub fn get_mut(&mut self, index: usize) -> Option<(&Process, &mut T)> {
        self.entries.get_mut(index).map(|e| (&e.process, &mut e.handles))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Process, &T)> {
        self.entries.iter().map(|e| (&e.process, &e.handles))
    }

    pub fn position(&self, exec_id: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.process.exec_id == exec_id)
    }

    pub fn find(&self, exec_id: &str) -> Result<usize, ProcessError> {
        self.position(exec_id).ok_or_else(|| ProcessError::NotFound(exec_id.to_owned()))
    }

    pub fn task_state(&self, shim_pid: u32) -> TaskState {
        TaskState { init: self.init().state(), execs: self.entries[1..].iter().map(|e| e.process.state()).collect(), shim_pid }
    }

    /// Add an exec, created. Its id must be new and not empty, and the init
    /// must be running. Past [`MAX_EXITED_EXECS`] exited execs the oldest
    /// exited one is forgotten first; then `handles` makes the new one's.
    pub fn add_exec<E: From<ProcessError>>(
        &mut self,
        exec_id: String,
        spec: serde_json::Value,
        handles: impl FnOnce() -> Result<T, E>,
    ) -> Result<ProcessState, E> {
        if exec_id.is_empty() || self.position(&exec_id).is_some() {
            return Err(ProcessError::AlreadyExists(exec_id).into());
        }
        if !self.init().is_live() {
            return Err(ProcessError::ContainerNotRunning.into());
        }
        // Clients that never delete their execs must not grow the shim without bound.
        let exited: Vec<usize> = (1..self.entries.len()).filter(|&i| self.entries[i].process.status == ProcessStatus::Exited).collect();
        if exited.len() >= MAX_EXITED_EXECS {
            let oldest = exited.into_iter().min_by_key(|&i| self.entries[i].process.exited_at).unwrap_or(1);
            self.entries.remove(oldest);
            self.generation += 1;
        }
        let process = Process::new(exec_id, Some(spec));
        let state = process.state();
        self.entries.push(Entry { process, handles: handles()? });
        Ok(state)
    }

    /// The position of a process that may be started: created, and for an
    /// exec, in a running container.
    pub fn check_start(&self, exec_id: &str) -> Result<usize, ProcessError> {
        let index = self.find(exec_id)?;
        match self.entries[index].process.status {
            ProcessStatus::Created => {}
            ProcessStatus::Exited => return Err(ProcessError::AlreadyRan),
            ProcessStatus::Running | ProcessStatus::Paused => return Err(ProcessError::AlreadyRunning),
        }
        if index != INIT && !self.init().is_live() {
            return Err(ProcessError::ContainerNotRunning);
        }
        Ok(index)
    }

    /// The runtime reported the process's pid.
    pub fn set_pid(&mut self, index: usize, pid: u32) {
        self.entries[index].process.pid = pid;
    }

    /// The process was started at `now`.
    pub fn started(&mut self, index: usize, now: i64) -> ProcessState {
        let p = &mut self.entries[index].process;
        p.status = ProcessStatus::Running;
        p.started_at = now;
        p.state()
    }

    /// A start failed at `now`: nothing runs, and the process reads as exited with 128.
    pub fn start_failed(&mut self, index: usize, now: i64) {
        let p = &mut self.entries[index].process;
        p.status = ProcessStatus::Exited;
        p.exit_code = 128;
        p.exited_at = now;
    }

    /// A child `pid` exited with `code` at `now`: the position of the live
    /// process it was, if any.
    pub fn exited(&mut self, pid: u32, code: i32, now: i64) -> Option<usize> {
        let index = self.entries.iter().position(|e| e.process.pid == pid && e.process.is_live())?;
        let p = &mut self.entries[index].process;
        p.status = ProcessStatus::Exited;
        p.exit_code = code;
        p.exited_at = now;
        Some(index)
    }

    /// A wait: the state now if the process has exited, `None` if its exit is still to come.
    pub fn wait(&self, exec_id: &str) -> Result<Option<ProcessState>, ProcessError> {
        let p = &self.entries[self.find(exec_id)?].process;
        Ok((p.status == ProcessStatus::Exited).then(|| p.state()))
    }

    /// Who delivers `signal` to the process (`all`: to every process of the
    /// container, when it is the init).
    pub fn kill(&self, exec_id: &str, signal: i32, all: bool) -> Result<Delivery, ProcessError> {
        let index = self.find(exec_id)?;
        if !self.entries[index].process.is_live() {
            return Err(ProcessError::NotRunning);
        }
        if index == INIT && all {
            return Ok(Delivery::RuntimeAll);
        }
        match Signal::from_named_raw(signal) {
            Some(signal) => Ok(Delivery::Direct { index, signal }),
            None if index == INIT => Ok(Delivery::Runtime),
            None => Err(ProcessError::MainProcessOnly(signal)),
        }
    }

    /// The position of a process that may be deleted: one that is not
    /// running, or any with `force` (the caller kills it first).
    pub fn check_delete(&self, exec_id: &str, force: bool) -> Result<usize, ProcessError> {
        let index = self.find(exec_id)?;
        if self.entries[index].process.is_live() && !force {
            return Err(ProcessError::StillRunning);
        }
        Ok(index)
    }

    /// Forget the exec at `index`, with its handles; its last state. `None`
    /// for the init, which stays.
    pub fn remove_exec(&mut self, index: usize) -> Option<ProcessState> {
        if index == INIT || index >= self.entries.len() {
            return None;
        }
        let entry = self.entries.remove(index);
        self.generation += 1;
        Some(entry.process.state())
    }

    /// Whether the container may be paused (`pause`) or resumed (not `pause`).
    pub fn check_pause(&self, pause: bool) -> Result<(), ProcessError> {
        match (pause, self.init().status) {
            (true, ProcessStatus::Running) | (false, ProcessStatus::Paused) => Ok(()),
            (true, ProcessStatus::Paused) => Err(ProcessError::AlreadyPaused),
            (false, ProcessStatus::Running) => Err(ProcessError::NotPaused),
            _ => Err(ProcessError::ContainerNotRunning),
        }
    }

    /// The container was paused (or resumed): so is every live process.
    pub fn set_paused(&mut self, pause: bool) {
        for e in &mut self.entries {
            let p = &mut e.process;
            match (pause, p.status) {
                (true, ProcessStatus::Running) => p.status = ProcessStatus::Paused,
                (false, ProcessStatus::Paused) => p.status = ProcessStatus::Running,
                _ => {}
            }
        }
    }
}

