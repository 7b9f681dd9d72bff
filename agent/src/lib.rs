//! berthd, the Berth node agent, as a library: [`server::run`] serves the
//! agent until a shutdown future completes; [`main`] is the daemon's entry.
//!
//! Layers, top down: `server` (the socket, read through `authority`, which
//! lets any HTTP/2 `:authority` in) and `api/` (gRPC: validation and
//! conversion only) call `service/` (the use cases and their policy), which
//! calls the core: `image` (names, import, unpack, garbage collection),
//! `container`, `runtime` (tasks and shims), `registry`, `snapshot`,
//! `content` (blobs), `metadata` (redb) and `archive` (the layer format).
//! `agent` wires them together. See docs/architecture.md.

pub mod agent;
pub mod api;
pub use berth_archive as archive;
mod authority;
pub mod build;
pub mod config;
pub mod container;
pub mod content;
pub mod digest;
pub mod disk;
pub mod events;
pub mod image;
mod keyed;
pub mod memory;
pub mod metadata;
pub mod network;
pub mod process;
pub mod registry;
pub mod runtime;
pub mod server;
pub mod service;
pub mod snapshot;
pub mod volume;

use clap::Parser;

/// The daemon's `main`: parse flags, set up logging, serve until SIGTERM or SIGINT.
pub fn main() -> i32 {
    memory::limit_arenas();
    let args = config::Args::parse();
    let cfg = match config::Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berthd: {e}");
            return 2;
        }
    };
    init_logging(&cfg);
    raise_nofile_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthd: starting the runtime: {e}");
            return 1;
        }
    };
    let result = rt.block_on(async {
        let shutdown = async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                std::future::pending::<()>().await;
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
            }
        };
        server::run(cfg, shutdown).await
    });
    // Do not wait for blocking tasks (a stalled upload) past the shutdown.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => 0,
        Err(e) => {
            // Said once: the log (on standard error) carries it.
            tracing::error!(error = %e, "berthd failed");
            1
        }
    }
}

/// Raise the soft open-file limit to the hard one (deep layers hold one
/// descriptor per directory level). Raising the hard limit would need
/// CAP_SYS_RESOURCE, which a careful agent does not assume.
fn raise_nofile_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, lim) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
        }
    }
}

fn init_logging(cfg: &config::Config) {
    use tracing_subscriber::EnvFilter;
    let filter = match &cfg.log_level {
        Some(l) => EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info")),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    if cfg.log_format == "json" {
        builder.json().init();
    } else {
        builder.fmt_fields(log_fields()).init();
    }
}

/// How the text log writes an event's fields: `name=value` (the message
/// bare), with every control character of a value escaped, so a name that
/// came from outside (an archive, a registry, a client) cannot forge log
/// lines or send escape sequences to a terminal. JSON logs escape by format.
fn log_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let v = format!("{value:?}");
        let v = berth_common::text::printable(&v);
        match field.name() {
            "message" => write!(w, "{v}"),
            name => write!(w, "{name}={v}"),
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_escape_control_characters_in_every_field() {
        let out = Captured::default();
        let w = out.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || w.clone()).fmt_fields(super::log_fields()).finish();
        let name = "evil\u{1b}[2J\nFAKE line";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(image = %name, error = %format!("bad {name}"), "pull of {name} failed");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "one line: {text:?}");
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert_eq!(text.matches("evil\\u{1b}[2J\\nFAKE line").count(), 3, "{text:?}");
        assert!(text.contains("image=evil") && text.contains("error=bad evil") && text.contains("pull of evil"), "{text:?}");
    }
}
