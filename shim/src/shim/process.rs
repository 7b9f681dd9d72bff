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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type Table = ProcessTable<()>;

    /// A table whose init runs as pid 100, started at time 1.
    fn running() -> Table {
        let mut t = Table::new(());
        t.check_start("").unwrap();
        t.set_pid(INIT, 100);
        t.started(INIT, 1);
        t
    }

    fn add(t: &mut Table, id: &str) -> Result<ProcessState, ProcessError> {
        t.add_exec(id.to_owned(), json!({"args": ["sh"]}), || Ok(()))
    }

    /// Add, start (as `pid`) and exit (with `code`, at `at`) an exec.
    fn run_exec(t: &mut Table, id: &str, pid: u32, code: i32, at: i64) {
        add(t, id).unwrap();
        let i = t.check_start(id).unwrap();
        t.set_pid(i, pid);
        t.started(i, at);
        assert_eq!(t.exited(pid, code, at), Some(i));
    }

    fn exec_ids(t: &Table) -> Vec<&str> {
        t.iter().skip(1).map(|(p, ())| p.exec_id()).collect()
    }

    #[test]
    fn a_new_table_holds_the_init_created() {
        let t = Table::new(());
        let state = t.task_state(7);
        assert_eq!(
            state.init,
            ProcessState { exec_id: String::new(), pid: 0, status: ProcessStatus::Created, exit_code: 0, started_at: 0, exited_at: 0 }
        );
        assert!(state.execs.is_empty());
        assert_eq!(state.shim_pid, 7);
        assert!(!t.init().is_live());
        assert_eq!(t.init().exit_code(), None);
    }

    #[test]
    fn starting_the_init_makes_it_running() {
        let mut t = Table::new(());
        assert_eq!(t.check_start(""), Ok(INIT));
        t.set_pid(INIT, 42);
        let state = t.started(INIT, 1_000);
        assert_eq!((state.status, state.pid, state.started_at), (ProcessStatus::Running, 42, 1_000));
        assert!(t.init().is_live());
    }

    #[test]
    fn a_running_process_cannot_be_started_again() {
        let t = running();
        assert_eq!(t.check_start(""), Err(ProcessError::AlreadyRunning));
    }

    #[test]
    fn an_exited_process_cannot_be_started_again() {
        let mut t = running();
        t.exited(100, 0, 2);
        assert_eq!(t.check_start(""), Err(ProcessError::AlreadyRan));
    }

    #[test]
    fn a_failed_start_reads_as_exited_with_code_128() {
        let mut t = Table::new(());
        t.start_failed(INIT, 5);
        let init = t.init().state();
        assert_eq!((init.status, init.exit_code, init.exited_at, init.started_at), (ProcessStatus::Exited, 128, 5, 0));
        assert_eq!(t.wait("").unwrap().map(|s| s.exit_code), Some(128));
        assert_eq!(t.check_start(""), Err(ProcessError::AlreadyRan));
    }

    #[test]
    fn an_exec_is_refused_while_the_init_is_not_running() {
        let mut t = Table::new(());
        assert_eq!(add(&mut t, "e1"), Err(ProcessError::ContainerNotRunning));
        let mut t = running();
        t.exited(100, 0, 2);
        assert_eq!(add(&mut t, "e1"), Err(ProcessError::ContainerNotRunning));
        assert!(exec_ids(&t).is_empty());
    }

    #[test]
    fn an_exec_is_added_created_with_its_process_object() {
        let mut t = running();
        let state = add(&mut t, "e1").unwrap();
        assert_eq!((state.exec_id.as_str(), state.status, state.pid), ("e1", ProcessStatus::Created, 0));
        let i = t.find("e1").unwrap();
        assert_eq!(t.process(i).spec(), Some(&json!({"args": ["sh"]})));
        assert_eq!(t.task_state(1).execs, vec![state]);
    }

    #[test]
    fn a_duplicate_exec_id_is_refused() {
        let mut t = running();
        add(&mut t, "e1").unwrap();
        assert_eq!(add(&mut t, "e1"), Err(ProcessError::AlreadyExists("e1".into())));
        assert_eq!(exec_ids(&t), ["e1"]);
    }

    #[test]
    fn an_empty_exec_id_is_refused_as_the_init_s() {
        let mut t = running();
        assert_eq!(add(&mut t, ""), Err(ProcessError::AlreadyExists(String::new())));
    }

    #[test]
    fn an_exec_whose_handles_cannot_be_made_is_not_added() {
        let mut t = running();
        let r = t.add_exec("e1".into(), json!({}), || Err(ProcessError::NotRunning));
        assert_eq!(r, Err(ProcessError::NotRunning));
        assert_eq!(t.position("e1"), None);
    }

    #[test]
    fn an_exec_starts_only_while_the_container_runs() {
        let mut t = running();
        add(&mut t, "e1").unwrap();
        t.exited(100, 0, 2);
        assert_eq!(t.check_start("e1"), Err(ProcessError::ContainerNotRunning));
    }

    #[test]
    fn an_exit_is_recorded_for_the_live_process_with_that_pid() {
        let mut t = running();
        add(&mut t, "e1").unwrap();
        let i = t.check_start("e1").unwrap();
        t.set_pid(i, 200);
        t.started(i, 3);
        // A re-parented orphan, or a process that has not started: nothing to record.
        assert_eq!(t.exited(999, 1, 4), None);
        assert_eq!(t.exited(0, 1, 4), None);
        assert_eq!(t.exited(200, 137, 5), Some(i));
        let e = t.process(i).state();
        assert_eq!((e.status, e.exit_code, e.started_at, e.exited_at), (ProcessStatus::Exited, 137, 3, 5));
        // Its pid, reaped once, is not matched again.
        assert_eq!(t.exited(200, 0, 6), None);
        assert!(t.init().is_live());
    }

    #[test]
    fn the_init_s_exit_record_holds_its_pid_code_and_times() {
        let mut t = running();
        t.exited(100, 3, 9);
        assert_eq!(t.init().exit_record(), ExitRecord { pid: 100, exit_code: 3, started_at: 1, exited_at: 9 });
    }

    #[test]
    fn a_wait_on_an_exited_process_answers_at_once() {
        let mut t = running();
        run_exec(&mut t, "e1", 200, 7, 4);
        let state = t.wait("e1").unwrap().expect("exited");
        assert_eq!((state.exec_id.as_str(), state.exit_code), ("e1", 7));
    }

    #[test]
    fn a_wait_on_a_live_or_created_process_waits() {
        let mut t = running();
        add(&mut t, "e1").unwrap();
        assert_eq!(t.wait(""), Ok(None));
        assert_eq!(t.wait("e1"), Ok(None));
    }

    #[test]
    fn requests_for_an_unknown_exec_are_not_found() {
        let mut t = running();
        let nf = ProcessError::NotFound("nope".into());
        assert_eq!(t.wait("nope"), Err(nf.clone()));
        assert_eq!(t.check_start("nope"), Err(nf.clone()));
        assert_eq!(t.check_delete("nope", true), Err(nf.clone()));
        assert_eq!(t.kill("nope", 15, false), Err(nf));
        run_exec(&mut t, "e1", 200, 0, 4);
        let i = t.find("e1").unwrap();
        t.remove_exec(i).unwrap();
        assert_eq!(t.find("e1"), Err(ProcessError::NotFound("e1".into())));
    }

    #[test]
    fn killing_an_exited_or_created_process_is_refused() {
        let mut t = running();
        add(&mut t, "created").unwrap();
        run_exec(&mut t, "exited", 200, 0, 4);
        assert_eq!(t.kill("created", 15, false), Err(ProcessError::NotRunning));
        assert_eq!(t.kill("exited", 15, false), Err(ProcessError::NotRunning));
        t.exited(100, 0, 5);
        assert_eq!(t.kill("", 9, true), Err(ProcessError::NotRunning));
    }

    #[test]
    fn a_named_signal_is_sent_by_the_shim_to_the_process() {
        let mut t = running();
        add(&mut t, "e1").unwrap();
        let i = t.check_start("e1").unwrap();
        t.set_pid(i, 200);
        t.started(i, 3);
        assert_eq!(t.kill("", 15, false), Ok(Delivery::Direct { index: INIT, signal: Signal::TERM }));
        // `all` means the container's processes only for the init.
        assert_eq!(t.kill("e1", 9, true), Ok(Delivery::Direct { index: i, signal: Signal::KILL }));
    }

    #[test]
    fn a_signal_to_every_process_goes_through_the_runtime() {
        let t = running();
        assert_eq!(t.kill("", 15, true), Ok(Delivery::RuntimeAll));
    }

    #[test]
    fn a_real_time_signal_goes_through_the_runtime_and_only_to_the_init() {
        let mut t = running();
        add(&mut t, "e1").unwrap();
        let i = t.check_start("e1").unwrap();
        t.set_pid(i, 200);
        t.started(i, 3);
        let rt = 40;
        assert_eq!(t.kill("", rt, false), Ok(Delivery::Runtime));
        assert_eq!(t.kill("e1", rt, false), Err(ProcessError::MainProcessOnly(rt)));
    }

    #[test]
    fn a_paused_process_can_still_be_signalled() {
        let mut t = running();
        t.set_paused(true);
        assert_eq!(t.kill("", 9, false), Ok(Delivery::Direct { index: INIT, signal: Signal::KILL }));
    }

    #[test]
    fn pausing_pauses_every_live_process_and_resuming_resumes_them() {
        let mut t = running();
        add(&mut t, "created").unwrap();
        run_exec(&mut t, "exited", 200, 0, 4);
        add(&mut t, "live").unwrap();
        let i = t.check_start("live").unwrap();
        t.set_pid(i, 300);
        t.started(i, 5);
        let statuses = |t: &Table| t.iter().map(|(p, ())| p.status()).collect::<Vec<_>>();
        assert_eq!(t.check_pause(true), Ok(()));
        t.set_paused(true);
        use ProcessStatus::*;
        assert_eq!(statuses(&t), [Paused, Created, Exited, Paused]);
        assert_eq!(t.check_pause(false), Ok(()));
        t.set_paused(false);
        assert_eq!(statuses(&t), [Running, Created, Exited, Running]);
    }

    #[test]
    fn pausing_twice_or_resuming_a_running_container_is_refused() {
        let mut t = running();
        assert_eq!(t.check_pause(false), Err(ProcessError::NotPaused));
        t.set_paused(true);
        assert_eq!(t.check_pause(true), Err(ProcessError::AlreadyPaused));
    }

    #[test]
    fn a_container_that_is_not_running_cannot_be_paused_or_resumed() {
        let mut t = Table::new(());
        assert_eq!(t.check_pause(true), Err(ProcessError::ContainerNotRunning));
        assert_eq!(t.check_pause(false), Err(ProcessError::ContainerNotRunning));
        t.start_failed(INIT, 1);
        assert_eq!(t.check_pause(true), Err(ProcessError::ContainerNotRunning));
    }

    #[test]
    fn a_running_process_is_deleted_only_with_force() {
        let mut t = running();
        assert_eq!(t.check_delete("", false), Err(ProcessError::StillRunning));
        assert_eq!(t.check_delete("", true), Ok(INIT));
        t.set_paused(true);
        assert_eq!(t.check_delete("", false), Err(ProcessError::StillRunning));
    }

    #[test]
    fn a_created_or_exited_process_is_deleted_without_force() {
        let mut t = running();
        add(&mut t, "created").unwrap();
        run_exec(&mut t, "exited", 200, 0, 4);
        assert!(t.check_delete("created", false).is_ok());
        assert!(t.check_delete("exited", false).is_ok());
    }

    #[test]
    fn a_deleted_exec_is_forgotten_and_positions_move() {
        let mut t = running();
        run_exec(&mut t, "e1", 200, 1, 4);
        add(&mut t, "e2").unwrap();
        let generation = t.generation();
        let i = t.check_delete("e1", false).unwrap();
        let state = t.remove_exec(i).unwrap();
        assert_eq!((state.exec_id.as_str(), state.exit_code), ("e1", 1));
        assert_eq!(exec_ids(&t), ["e2"]);
        assert_eq!(t.find("e2"), Ok(i));
        assert_ne!(t.generation(), generation);
    }

    #[test]
    fn the_init_is_never_removed() {
        let mut t = running();
        t.exited(100, 0, 2);
        let generation = t.generation();
        assert_eq!(t.remove_exec(INIT), None);
        assert_eq!(t.remove_exec(5), None);
        assert_eq!(t.init().exit_code(), Some(0));
        assert_eq!(t.generation(), generation);
    }

    #[test]
    fn adding_an_exec_under_the_cap_keeps_positions() {
        let mut t = running();
        let generation = t.generation();
        for i in 0..MAX_EXITED_EXECS as u32 {
            run_exec(&mut t, &format!("e{i}"), 200 + i, 0, 10 + i as i64);
        }
        assert_eq!(t.generation(), generation);
        assert_eq!(t.task_state(1).execs.len(), MAX_EXITED_EXECS);
    }

    #[test]
    fn an_exec_past_the_cap_forgets_the_oldest_exited() {
        let mut t = running();
        // Exit times out of order: "e5" exits first.
        for i in 0..MAX_EXITED_EXECS as u32 {
            let at = if i == 5 { 1 } else { 100 + i as i64 };
            run_exec(&mut t, &format!("e{i}"), 200 + i, 0, at);
        }
        let generation = t.generation();
        add(&mut t, "new").unwrap();
        assert_eq!(t.position("e5"), None);
        assert!(t.position("e0").is_some() && t.position("new").is_some());
        assert_eq!(t.task_state(1).execs.len(), MAX_EXITED_EXECS);
        assert_ne!(t.generation(), generation);
        // The new one has not exited: no room is needed for the next one yet.
        add(&mut t, "newer").unwrap();
        assert!(t.position("e0").is_some());
        // Once the new one has exited too, the next exec forgets "e0", now the oldest.
        let i = t.check_start("new").unwrap();
        t.set_pid(i, 900);
        t.started(i, 500);
        t.exited(900, 0, 501);
        add(&mut t, "newest").unwrap();
        assert_eq!(t.position("e0"), None);
        assert!(t.position("e1").is_some());
    }

    #[test]
    fn live_and_created_execs_are_never_forgotten() {
        let mut t = running();
        add(&mut t, "created").unwrap();
        add(&mut t, "live").unwrap();
        let i = t.check_start("live").unwrap();
        t.set_pid(i, 300);
        t.started(i, 5);
        for i in 0..MAX_EXITED_EXECS as u32 + 3 {
            run_exec(&mut t, &format!("e{i}"), 1000 + i, 0, 10 + i as i64);
        }
        assert!(t.position("created").is_some() && t.position("live").is_some());
        assert_eq!(t.position("e0"), None);
        assert_eq!(t.task_state(1).execs.len(), MAX_EXITED_EXECS + 2);
    }

    #[test]
    fn process_errors_become_the_right_protocol_errors() {
        let cases = [
            (ProcessError::NotFound("x".into()), ErrorKind::NotFound, "exec \"x\" not found"),
            (ProcessError::AlreadyExists("x".into()), ErrorKind::AlreadyExists, "exec \"x\" already exists"),
            (ProcessError::AlreadyRan, ErrorKind::FailedPrecondition, "the process has already run; delete the task to start again"),
            (ProcessError::AlreadyRunning, ErrorKind::FailedPrecondition, "the process is already running"),
            (ProcessError::ContainerNotRunning, ErrorKind::FailedPrecondition, "the container is not running"),
            (ProcessError::NotRunning, ErrorKind::FailedPrecondition, "the process is not running"),
            (ProcessError::StillRunning, ErrorKind::FailedPrecondition, "the process is still running; stop it first"),
            (ProcessError::AlreadyPaused, ErrorKind::FailedPrecondition, "the container is already paused"),
            (ProcessError::NotPaused, ErrorKind::FailedPrecondition, "the container is not paused"),
            (ProcessError::MainProcessOnly(40), ErrorKind::InvalidArgument, "signal 40 can only be sent to the main process"),
        ];
        for (e, kind, message) in cases {
            assert_eq!(ShimError::from(e), ShimError { kind, message: message.into() });
        }
    }
}
