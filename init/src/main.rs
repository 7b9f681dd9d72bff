//! berth-init: the first process of a container run with `--init`.
//!
//! It runs the container's command as its child and then only waits:
//! every signal it gets (but SIGCHLD) goes to the child, and every process
//! that ends in the container is reaped, the child's orphans included. When
//! the child exits, berth-init exits with the child's status (128+N for a
//! signal N), and the kernel ends what is left in the container.
//!
//! A process that is PID 1 gets no signal it has no handler for, so a shell
//! loop run as the container's command ignores `stop`'s SIGTERM and waits for
//! the SIGKILL 10 s later; under berth-init it is PID 2 and ends at once.
//!
//! Usage: `berth-init [--] COMMAND [ARG...]`, or `berth-init --pause`: the
//! process that holds a pod's namespaces open (the CRI's sandbox). It runs
//! nothing, reaps what ends in the pod (when the pod shares its PID namespace)
//! and exits on SIGTERM, SIGINT or SIGQUIT. No dependencies: the agent
//! compiles this file alone with rustc, statically linked (see agent/build.rs).

use std::ffi::OsString;
use std::process::{exit, Command};

/// What the C library declares, for Linux (glibc and musl agree on these
/// sizes and values on x86_64 and aarch64).
#[allow(unsafe_code)]
mod sys {
    use std::ffi::c_int;

    /// `sigset_t`: 1024 bits.
    #[repr(C)]
    pub struct SigSet([u64; 16]);

    /// `siginfo_t`: 128 bytes, the signal's number first.
    #[repr(C)]
    pub struct SigInfo {
        pub signo: c_int,
        _rest: [u8; 124],
    }

    #[repr(C)]
    pub struct TimeSpec {
        pub sec: i64,
        pub nsec: i64,
    }

    pub const SIG_SETMASK: c_int = 2;
    pub const SIGINT: c_int = 2;
    pub const SIGQUIT: c_int = 3;
    pub const SIGTERM: c_int = 15;
    pub const SIGPIPE: c_int = 13;
    pub const SIGCHLD: c_int = 17;
    pub const WNOHANG: c_int = 1;
    const SIG_DFL: usize = 0;

    extern "C" {
        fn sigemptyset(set: *mut SigSet) -> c_int;
        fn sigfillset(set: *mut SigSet) -> c_int;
        #[link_name = "signal"]
        fn set_handler(sig: c_int, handler: usize) -> usize;
        fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
        fn sigtimedwait(set: *const SigSet, info: *mut SigInfo, timeout: *const TimeSpec) -> c_int;
        fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
        fn kill(pid: c_int, sig: c_int) -> c_int;
        fn getpid() -> c_int;
        fn setpgid(pid: c_int, pgid: c_int) -> c_int;
        fn isatty(fd: c_int) -> c_int;
        fn tcsetpgrp(fd: c_int, pgrp: c_int) -> c_int;
    }

    /// Every signal.
    pub fn all() -> SigSet {
        let mut set = SigSet([0; 16]);
        // SAFETY: `set` is a valid sigset_t to fill.
        unsafe { sigfillset(&mut set) };
        set
    }

    /// Block `set` (signals then wait for `wait_signal`).
    pub fn block(set: &SigSet) -> bool {
        // SAFETY: a valid set; the old mask is not asked for.
        unsafe { sigprocmask(SIG_SETMASK, set, std::ptr::null_mut()) == 0 }
    }

    /// Give `command` the signal state a process expects: nothing blocked
    /// (the standard library keeps the parent's mask) and SIGPIPE's default
    /// action (the standard library ignores it in its own processes). It
    /// leads a process group of its own, the terminal's foreground one when
    /// there is a terminal: ^C reaches it once, from the terminal (berth-init,
    /// in another group, does not get it to pass on again).
    pub fn reset_in_child(command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec the closure calls only
        // async-signal-safe functions, on memory of its own.
        unsafe {
            command.pre_exec(|| {
                setpgid(0, 0);
                // Still with every signal blocked: SIGTTOU does not stop it here.
                if isatty(0) == 1 {
                    tcsetpgrp(0, getpid());
                }
                let mut none = SigSet([0; 16]);
                sigemptyset(&mut none);
                set_handler(SIGPIPE, SIG_DFL);
                if sigprocmask(SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
    }

    /// The next pending signal of `set`, waiting at most one second.
    pub fn wait_signal(set: &SigSet) -> Option<c_int> {
        let mut info = SigInfo { signo: 0, _rest: [0; 124] };
        let timeout = TimeSpec { sec: 1, nsec: 0 };
        // SAFETY: valid pointers for the call's duration.
        let n = unsafe { sigtimedwait(set, &mut info, &timeout) };
        (n > 0).then_some(n)
    }

    /// A child that has ended: its pid and wait status.
    pub fn reap() -> Option<(c_int, c_int)> {
        let mut status = 0;
        // SAFETY: `status` is valid to write.
        let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
        (pid > 0).then_some((pid, status))
    }

    pub fn signal(pid: c_int, sig: c_int) {
        // SAFETY: kill(2) takes any values.
        unsafe { kill(pid, sig) };
    }
}

/// A wait status as a shell shows it: the exit code, or 128+N for signal N.
fn exit_code(status: i32) -> i32 {
    if status & 0x7f == 0 {
        (status >> 8) & 0xff
    } else {
        128 + (status & 0x7f)
    }
}

/// A pod's pause process: waits for a stop signal, reaping every process that ends.
fn pause(all: &sys::SigSet) -> ! {
    loop {
        if let Some(sys::SIGTERM | sys::SIGINT | sys::SIGQUIT) = sys::wait_signal(all) {
            exit(0);
        }
        while sys::reap().is_some() {}
    }
}

fn main() {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.len() == 1 && args[0] == "--pause" {
        let all = sys::all();
        if !sys::block(&all) {
            eprintln!("berth-init: cannot block signals: {}", std::io::Error::last_os_error());
            exit(1);
        }
        pause(&all);
    }
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
    }
    if args.is_empty() {
        eprintln!("berth-init: no command to run (usage: berth-init [--] COMMAND [ARG...])");
        exit(2);
    }
    let all = sys::all();
    if !sys::block(&all) {
        eprintln!("berth-init: cannot block signals: {}", std::io::Error::last_os_error());
        exit(1);
    }
    let mut command = Command::new(&args[0]);
    command.args(&args[1..]);
    sys::reset_in_child(&mut command);
    let child = match command.spawn() {
        Ok(c) => c.id() as i32,
        Err(e) => {
            eprintln!("berth-init: cannot run {}: {e}", args[0].to_string_lossy());
            exit(if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 });
        }
    };
    loop {
        match sys::wait_signal(&all) {
            Some(sys::SIGCHLD) | None => {}
            Some(sig) => sys::signal(child, sig),
        }
        // Reap every process that has ended; leave with the child.
        while let Some((pid, status)) = sys::reap() {
            if pid == child {
                exit(exit_code(status));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::exit_code;

    #[test]
    fn wait_statuses_read_as_shells_show_them() {
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(9), 137);
        assert_eq!(exit_code(15 | 0x80), 143);
    }
}
