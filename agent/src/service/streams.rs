//! The streaming sessions the CRI hands out: Exec, Attach and PortForward answer with a URL
//! on the agent's streaming server, and the kubelet (or the client it proxies) connects to
//! it. Each URL carries a one-time token, good for a minute, that stands for the request.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::pods::PodService;
use super::Error;
use crate::runtime::TaskState;

/// How long a URL can wait for its connection.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Most sessions waiting for their connection at once.
const MAX_PENDING: usize = 1024;

/// What a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRequest {
    Exec {
        ns: String,
        container: String,
        cmd: Vec<String>,
        io: StreamIo,
    },
    /// `stdin_once`: the client's end of input closes the container's stdin.
    Attach {
        ns: String,
        container: String,
        io: StreamIo,
        stdin_once: bool,
    },
    PortForward {
        ns: String,
        pod: String,
        ports: Vec<u16>,
    },
}

/// Which of a process's streams a session carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamIo {
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

impl StreamIo {
    /// The CRI's rules: something to carry, and no stderr beside a terminal (a terminal has
    /// one output).
    pub fn check(&self) -> Result<(), Error> {
        if self.tty && self.stderr {
            return Err(Error::InvalidArgument("tty and stderr cannot both be true".into()));
        }
        if !self.stdin && !self.stdout && !self.stderr {
            return Err(Error::InvalidArgument("one of stdin, stdout or stderr must be true".into()));
        }
        Ok(())
    }
}

impl StreamRequest {
    /// The URL path's first part for this kind of session.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamRequest::Exec { .. } => "exec",
            StreamRequest::Attach { .. } => "attach",
            StreamRequest::PortForward { .. } => "portforward",
        }
    }
}

pub struct StreamService {
    pods: PodService,
    tokens: Tokens,
}

impl StreamService {
    pub(crate) fn new(pods: PodService) -> Self {
        StreamService { pods, tokens: Tokens::default() }
    }

    /// Where the streaming server listens (set once, when it starts).
    pub fn set_base_url(&self, url: String) {
        let _ = self.tokens.base.set(url);
    }

    /// The request behind `token` of a `kind` URL, once: a token is spent by its first use,
    /// and worth nothing after [`TOKEN_TTL`].
    pub fn take(&self, kind: &str, token: &str) -> Option<StreamRequest> {
        self.tokens.take(kind, token)
    }

    fn register(&self, req: StreamRequest) -> Result<String, Error> {
        self.tokens.register(req)
    }

    /// A session that runs `cmd` in a pod's running container.
    pub async fn exec(&self, ns: &str, id: &str, cmd: Vec<String>, io: StreamIo) -> Result<String, Error> {
        io.check()?;
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command".into()));
        }
        let container = self.running(ns, id).await?.id;
        self.register(StreamRequest::Exec { ns: ns.to_owned(), container, cmd, io })
    }

    /// A session attached to a pod's running container's process.
    pub async fn attach(&self, ns: &str, id: &str, io: StreamIo) -> Result<String, Error> {
        io.check()?;
        let c = self.running(ns, id).await?;
        self.register(StreamRequest::Attach { ns: ns.to_owned(), container: c.id, io, stdin_once: c.stdin_once })
    }

    /// A session that forwards connections to ports of a pod's network.
    pub async fn port_forward(&self, ns: &str, pod: &str, ports: &[i32]) -> Result<String, Error> {
        let ports = ports
            .iter()
            .map(|&p| u16::try_from(p).ok().filter(|&p| p > 0).ok_or_else(|| Error::InvalidArgument(format!("invalid port {p}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let view = self.pods.get(ns, pod).await?.ok_or_else(|| Error::NotFound(format!("pod sandbox {pod} not found")))?;
        if !view.ready {
            return Err(Error::FailedPrecondition(format!("pod sandbox {pod} is not ready")));
        }
        self.register(StreamRequest::PortForward { ns: ns.to_owned(), pod: view.id, ports })
    }

    async fn running(&self, ns: &str, id: &str) -> Result<super::pods::PodContainerView, Error> {
        let c = self.pods.container(ns, id).await?.ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        if c.state != TaskState::Running {
            return Err(Error::FailedPrecondition(format!("container {id} is not running")));
        }
        Ok(c)
    }
}

/// The one-time tokens of the sessions waiting for their connection.
#[derive(Default)]
struct Tokens {
    /// `http://ADDRESS:PORT` of the streaming server, once it listens.
    base: OnceLock<String>,
    pending: Mutex<HashMap<String, (Instant, StreamRequest)>>,
}

impl Tokens {
    /// Register `req` and return the URL that serves it.
    fn register(&self, req: StreamRequest) -> Result<String, Error> {
        let base = self.base.get().ok_or_else(|| Error::Unavailable("the streaming server is not running".into()))?;
        let token = crate::content::random_hex(16);
        let url = format!("{base}/{}/{token}", req.kind());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        pending.retain(|_, (at, _)| now.duration_since(*at) < TOKEN_TTL);
        if pending.len() >= MAX_PENDING {
            return Err(Error::ResourceExhausted(format!("{MAX_PENDING} streaming sessions are waiting for their connection")));
        }
        pending.insert(token, (now, req));
        Ok(url)
    }

    /// The request behind `token` of a `kind` URL, once: a token is spent by its first use,
    /// and worth nothing after [`TOKEN_TTL`].
    fn take(&self, kind: &str, token: &str) -> Option<StreamRequest> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (at, req) = pending.remove(token)?;
        (at.elapsed() < TOKEN_TTL && req.kind() == kind).then_some(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> StreamRequest {
        StreamRequest::Exec {
            ns: "k8s.io".into(),
            container: "c".into(),
            cmd: vec!["sh".into()],
            io: StreamIo { stdout: true, ..Default::default() },
        }
    }

    #[test]
    fn a_token_is_used_once_and_only_for_its_kind() {
        let s = Tokens::default();
        assert!(matches!(s.register(exec()), Err(Error::Unavailable(_))), "no server, no URL");
        s.base.set("http://127.0.0.1:1234".into()).unwrap();
        let url = s.register(exec()).unwrap();
        let token = url.strip_prefix("http://127.0.0.1:1234/exec/").unwrap();
        assert_eq!(token.len(), 32);
        assert_eq!(s.take("attach", token), None, "the wrong kind spends it too");
        let url = s.register(exec()).unwrap();
        let token = url.rsplit('/').next().unwrap();
        assert_eq!(s.take("exec", token), Some(exec()));
        assert_eq!(s.take("exec", token), None, "once");
        assert_eq!(s.take("exec", "nothing"), None);
    }

    #[test]
    fn the_cri_rules_for_streams() {
        assert!(StreamIo { tty: true, stderr: true, stdout: true, stdin: false }.check().is_err());
        assert!(StreamIo::default().check().is_err());
        assert!(StreamIo { tty: true, stdin: true, stdout: true, stderr: false }.check().is_ok());
    }
}
