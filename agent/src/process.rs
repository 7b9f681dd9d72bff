//! Child processes with a bound on how long they may run.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run `cmd` to completion within `timeout`; kill it past that. Returns
/// stderr (trimmed) as the error when it fails.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", cmd.get_program()))?;
    let start = Instant::now();
    let mut sleep = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if status.success() {
                    return Ok(());
                }
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    use std::io::Read;
                    let _ = s.by_ref().take(64 * 1024).read_to_string(&mut err);
                }
                return Err(format!("{:?} failed ({status}): {}", cmd.get_program(), err.trim()));
            }
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{:?} did not finish within {timeout:?}", cmd.get_program()));
            }
            Ok(None) => {
                std::thread::sleep(sleep);
                sleep = (sleep * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("waiting for {:?}: {e}", cmd.get_program())),
        }
    }
}
