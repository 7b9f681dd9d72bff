//! berth-load: many concurrent gRPC clients against berthd (or containerd,
//! through the same code), and a soak of run/rm and exec cycles. See
//! bench/README.md ("load" and "soak") and bench/load.sh; and pod starts through a CRI
//! socket (bench/pods.sh).

mod pods;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_api::v1;
use clap::{Parser, Subcommand};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Bound on any one call: a call that takes longer counts as an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(name = "berth-load", about = "Drive an agent with many concurrent gRPC clients, or soak it")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// For a fixed time, CLIENTS clients each call List, Get, Inspect and
    /// Stats in a fixed mix as fast as answers come, EVENTS more hold an
    /// event subscription, and (berthd) one more runs and removes containers.
    Load {
        /// berthd's socket.
        #[arg(long, conflicts_with = "containerd", required_unless_present = "containerd")]
        berth: Option<PathBuf>,
        /// containerd's socket: the same mix through its Containers, Tasks, Images and Events services.
        #[arg(long)]
        containerd: Option<PathBuf>,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        events: usize,
        /// Seconds.
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Calls per second of all the clients together, each client's spread
        /// evenly (a client whose answer comes late calls again at once);
        /// 0: every client calls again as soon as it has its answer.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Image the churn runs `true` in (berthd only; without it, no churn).
        #[arg(long)]
        churn_image: Option<String>,
        /// The agent's pid, for its RSS, threads and descriptors each second.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// RUNS `run --rm` cycles, then EXECS exec cycles in one container; then
    /// checks that the agent's RSS (±10%), descriptors, threads, mounts,
    /// shims and bundles are back where they were. Exits 1 if not.
    Soak {
        #[arg(long)]
        berth: PathBuf,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        image: String,
        #[arg(long, default_value_t = 5000)]
        runs: usize,
        #[arg(long, default_value_t = 5000)]
        execs: usize,
        /// Cycles run at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// berthd's pid.
        #[arg(long)]
        pid: u32,
        /// berthd's state directory (its bundles are counted under `tasks/`).
        #[arg(long)]
        state: PathBuf,
        /// The containers' network: none, host, a network's name, or the agent's default.
        #[arg(long, default_value = "")]
        net: String,
        /// How much (percent) the agent's RSS may grow.
        #[arg(long, default_value_t = 10)]
        rss_slack: u64,
    },
    /// Pod starts through a CRI socket (berthd's or containerd's), as a kubelet makes
    /// them: RunPodSandbox, CreateContainer, StartContainer. SINGLE pods one after
    /// another (prints each one's milliseconds), then BURST pods at once (prints the
    /// seconds until all run). Every pod is removed after.
    Pods {
        /// The CRI socket.
        #[arg(long)]
        cri: PathBuf,
        /// The container's image, already in the runtime's k8s.io namespace.
        #[arg(long)]
        image: String,
        #[arg(long, default_value_t = 10)]
        single: usize,
        #[arg(long, default_value_t = 30)]
        burst: usize,
        /// Names this run's pods.
        #[arg(long, default_value = "run")]
        tag: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Load { berth, containerd, namespace, clients, events, duration, rate, churn_image, pid } => {
                let target = match (berth, containerd) {
                    (Some(p), _) => Target::Berth(p),
                    (None, Some(p)) => Target::Containerd(p),
                    (None, None) => unreachable!("clap requires one"),
                };
                let mix = Mix { clients, events, duration: Duration::from_secs(duration), rate };
                load(target, &namespace, mix, churn_image, pid).await
            }
            Cmd::Pods { cri, image, single, burst, tag } => pods::pods(&cri, &pods::PodRuns { single, burst, image, tag }).await,
            Cmd::Soak { berth, namespace, image, runs, execs, parallel, pid, state, net, rss_slack } => {
                let cycles = Cycles { image, runs, execs, parallel: parallel.max(1), net, rss_slack };
                soak(&berth, &namespace, &cycles, pid, &state).await
            }
        }
    });
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("berth-load: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

#[derive(Clone)]
enum Target {
    Berth(PathBuf),
    Containerd(PathBuf),
}

impl Target {
    fn socket(&self) -> &Path {
        match self {
            Target::Berth(p) | Target::Containerd(p) => p,
        }
    }
}

/// One client: its own connection, the namespace header on every call.
#[derive(Clone)]
struct Client {
    channel: Channel,
    header: &'static str,
    ns: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl Client {
    async fn connect(target: &Target, ns: &str) -> Result<Self, Error> {
        let channel = berth_api::connect(target.socket(), Duration::from_secs(10)).await?;
        let header = match target {
            Target::Berth(_) => berth_api::NAMESPACE_HEADER,
            Target::Containerd(_) => "containerd-namespace",
        };
        Ok(Client { channel, header, ns: ns.parse()? })
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(self.header, self.ns.clone());
        r.set_timeout(CALL_TIMEOUT);
        r
    }

    async fn unary<Q, A>(&self, path: &'static str, msg: Q) -> Result<A, tonic::Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        let mut g = tonic::client::Grpc::new(self.channel.clone());
        g.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Q, A>::default();
        Ok(g.unary(self.request(msg), PathAndQuery::from_static(path), codec).await?.into_inner())
    }

    async fn stream<Q, A>(&self, path: &'static str, msg: Q) -> Result<tonic::Streaming<A>, tonic::Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        A: prost::Message + Default + Send + Sync + 'static,
    {
        let mut g = tonic::client::Grpc::new(self.channel.clone());
        g.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Q, A>::default();
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(self.header, self.ns.clone());
        Ok(g.server_streaming(r, PathAndQuery::from_static(path), codec).await?.into_inner())
    }
}

/// containerd's messages, as far as this tool reads them (field numbers
/// from containerd's API; other fields are skipped when decoded).
mod ctrd {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Filters {
        #[prost(string, repeated, tag = "1")]
        pub filters: Vec<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Id {
        #[prost(string, tag = "1")]
        pub id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Filter {
        #[prost(string, tag = "1")]
        pub filter: String,
    }
    /// Any reply: a list of messages in field 1, read as bytes.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct List {
        #[prost(bytes = "vec", repeated, tag = "1")]
        pub items: Vec<Vec<u8>>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Container {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "3")]
        pub image: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Containers {
        #[prost(message, repeated, tag = "1")]
        pub containers: Vec<Container>,
    }
    pub const CONTAINERS_LIST: &str = "/containerd.services.containers.v1.Containers/List";
    pub const CONTAINERS_GET: &str = "/containerd.services.containers.v1.Containers/Get";
    pub const TASKS_LIST: &str = "/containerd.services.tasks.v1.Tasks/List";
    pub const TASKS_GET: &str = "/containerd.services.tasks.v1.Tasks/Get";
    pub const TASKS_METRICS: &str = "/containerd.services.tasks.v1.Tasks/Metrics";
    pub const IMAGES_GET: &str = "/containerd.services.images.v1.Images/Get";
    pub const EVENTS_SUBSCRIBE: &str = "/containerd.services.events.v1.Events/Subscribe";
}

/// The calls of the mix, in the order they are reported.
const KINDS: [&str; 5] = ["list", "get", "inspect", "stats", "run"];

/// What the clients measured.
#[derive(Default)]
struct Record {
    /// Latencies in microseconds, by kind.
    times: BTreeMap<&'static str, Vec<u32>>,
    errors: BTreeMap<&'static str, u64>,
    first_error: BTreeMap<&'static str, String>,
}

impl Record {
    fn add(&mut self, kind: &'static str, took: Duration, result: Result<(), String>) {
        match result {
            Ok(()) => self.times.entry(kind).or_default().push(took.as_micros().min(u32::MAX as u128) as u32),
            Err(e) => {
                *self.errors.entry(kind).or_default() += 1;
                self.first_error.entry(kind).or_insert(e);
            }
        }
    }

    fn merge(&mut self, other: Record) {
        for (k, mut v) in other.times {
            self.times.entry(k).or_default().append(&mut v);
        }
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        for (k, e) in other.first_error {
            self.first_error.entry(k).or_insert(e);
        }
    }
}

/// A small xorshift generator: the mix needs no more.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The containers the mix reads, and the image it inspects.
struct Subjects {
    ids: Vec<String>,
    image: String,
}

async fn subjects(target: &Target, c: &Client) -> Result<Subjects, Error> {
    match target {
        Target::Berth(_) => {
            let list = v1::containers_client::ContainersClient::new(c.channel.clone())
                .list(c.request(v1::ListContainersRequest { filters: vec!["status==running".into()] }))
                .await?
                .into_inner()
                .containers;
            let image = list.first().map(|c| c.image.clone()).unwrap_or_default();
            // Not the churn's: they come and go.
            let ids = list.into_iter().filter(|c| !c.name.contains("churn")).map(|c| c.id).collect();
            Ok(Subjects { ids, image })
        }
        Target::Containerd(_) => {
            let list: ctrd::Containers = c.unary(ctrd::CONTAINERS_LIST, ctrd::Filters::default()).await?;
            let image = list.containers.first().map(|c| c.image.clone()).unwrap_or_default();
            let ids = list.containers.into_iter().map(|c| c.id).filter(|id| !id.contains("churn")).collect();
            Ok(Subjects { ids, image })
        }
    }
}

/// berthd's methods of the mix.
const LIST: &str = "/berth.v1.Containers/List";
const GET: &str = "/berth.v1.Containers/Get";
const INSPECT: &str = "/berth.v1.Images/Inspect";
const STATS: &str = "/berth.v1.Tasks/Stats";

/// One call of the mix: what `ps`, `inspect`, `image inspect` and `stats` need.
async fn call(target: &Target, c: &Client, kind: &'static str, id: &str, image: &str) -> Result<(), String> {
    let e = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
    match (target, kind) {
        // Each reply is read as deep as containerd's below: the messages of its first
        // field, as bytes (a full decode of 200 containers cost the tool, which shares
        // the cores with the agent, more than the agent's answer).
        (Target::Berth(_), "list") => {
            let _: ctrd::List = c.unary(LIST, v1::ListContainersRequest::default()).await.map_err(e)?;
        }
        (Target::Berth(_), "get") => {
            let _: ctrd::List = c.unary(GET, v1::GetContainerRequest { id: id.to_owned() }).await.map_err(e)?;
        }
        (Target::Berth(_), "inspect") => {
            let _: ctrd::List =
                c.unary(INSPECT, v1::InspectImageRequest { name: image.to_owned(), ..Default::default() }).await.map_err(e)?;
        }
        (Target::Berth(_), "stats") => {
            // Flat numbers: read whole.
            let _: v1::StatsResponse = c.unary(STATS, v1::StatsRequest { container_id: id.to_owned() }).await.map_err(e)?;
        }
        // containerd keeps containers and tasks apart: a list of both, as `ps` needs.
        (Target::Containerd(_), "list") => {
            let _: ctrd::List = c.unary(ctrd::CONTAINERS_LIST, ctrd::Filters::default()).await.map_err(e)?;
            let _: ctrd::List = c.unary(ctrd::TASKS_LIST, ctrd::Filter::default()).await.map_err(e)?;
        }
        (Target::Containerd(_), "get") => {
            let _: ctrd::List = c.unary(ctrd::CONTAINERS_GET, ctrd::Id { id: id.to_owned() }).await.map_err(e)?;
            let _: ctrd::List = c.unary(ctrd::TASKS_GET, ctrd::Id { id: id.to_owned() }).await.map_err(e)?;
        }
        (Target::Containerd(_), "inspect") => {
            let _: ctrd::List = c.unary(ctrd::IMAGES_GET, ctrd::Id { id: image.to_owned() }).await.map_err(e)?;
        }
        (Target::Containerd(_), "stats") => {
            let _: ctrd::List = c.unary(ctrd::TASKS_METRICS, ctrd::Filters { filters: vec![format!("id=={id}")] }).await.map_err(e)?;
        }
        _ => return Err(format!("no call {kind}")),
    }
    Ok(())
}

/// The mix: half lists (the kubelet's and `ps`'s poll), the rest reads of one container or image.
fn pick(rng: &mut Rng) -> &'static str {
    match rng.below(20) {
        0..=9 => "list",
        10..=13 => "get",
        14..=15 => "inspect",
        _ => "stats",
    }
}

/// The agent's resources, read from /proc.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Usage {
    rss_kb: u64,
    /// Of which the heap and other private memory (the rest is mapped files: code).
    anon_kb: u64,
    threads: u64,
    fds: u64,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
    Usage { rss_kb: field("VmRSS:"), anon_kb: field("RssAnon:"), threads: field("Threads:"), fds }
}

/// Sample `pid` every second until `stop`; returns the samples.
fn sampler(pid: Option<u32>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Usage>> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        let Some(pid) = pid else { return out };
        while !stop.load(Ordering::Relaxed) {
            out.push(usage(pid));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        out.push(usage(pid));
        out
    })
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// How hard the clients press.
struct Mix {
    clients: usize,
    events: usize,
    duration: Duration,
    /// Calls per second in all (0: as fast as answers come).
    rate: u64,
}

async fn load(target: Target, ns: &str, mix: Mix, churn_image: Option<String>, pid: Option<u32>) -> Result<bool, Error> {
    let Mix { clients, events, duration, rate } = mix;
    // Each client's pace: one call per `interval`.
    let interval = (rate > 0).then(|| Duration::from_secs_f64(clients as f64 / rate as f64));
    let first = Client::connect(&target, ns).await?;
    let subjects = Arc::new(subjects(&target, &first).await?);
    if subjects.ids.is_empty() {
        return Err("no running container to read".into());
    }
    // Every client connects before the clock starts.
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Client::connect(&target, ns).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let samples = sampler(pid, stop.clone());
    let deadline = Instant::now() + duration;
    let received = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    for _ in 0..events {
        let c = Client::connect(&target, ns).await?;
        let (received, target) = (received.clone(), target.clone());
        subs.push(tokio::spawn(async move {
            let stream = match target {
                Target::Berth(_) => {
                    let path = "/berth.v1.Events/Subscribe";
                    c.stream::<v1::SubscribeRequest, ctrd::List>(path, v1::SubscribeRequest::default()).await
                }
                Target::Containerd(_) => c.stream::<ctrd::Filters, ctrd::List>(ctrd::EVENTS_SUBSCRIBE, ctrd::Filters::default()).await,
            };
            let Ok(mut stream) = stream else { return false };
            while let Ok(Ok(Some(_))) = tokio::time::timeout_at(deadline.into(), stream.message()).await {
                received.fetch_add(1, Ordering::Relaxed);
            }
            true
        }));
    }
    let record = Arc::new(Mutex::new(Record::default()));
    let mut workers = Vec::new();
    for (n, c) in conns.into_iter().enumerate() {
        let (target, subjects, record) = (target.clone(), subjects.clone(), record.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
            let mut mine = Record::default();
            // Clients start spread over one interval.
            let mut next = Instant::now() + interval.map(|i| i.mul_f64((rng.below(1000) as f64) / 1000.0)).unwrap_or_default();
            while Instant::now() < deadline {
                // Paced, a call is timed from when it was due: the wait for a
                // late answer before it counts (no coordinated omission).
                let t0 = match interval {
                    Some(i) => {
                        tokio::time::sleep_until(next.into()).await;
                        let due = next;
                        next += i;
                        due
                    }
                    None => Instant::now(),
                };
                let kind = pick(&mut rng);
                let id = &subjects.ids[rng.below(subjects.ids.len())];
                let r = call(&target, &c, kind, id, &subjects.image).await;
                mine.add(kind, t0.elapsed(), r);
            }
            record.lock().unwrap_or_else(|e| e.into_inner()).merge(mine);
        }));
    }
    let churn = match (&target, churn_image) {
        (Target::Berth(_), Some(image)) => {
            let c = Client::connect(&target, ns).await?;
            let record = record.clone();
            Some(tokio::spawn(async move {
                let mut mine = Record::default();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    let t0 = Instant::now();
                    let r = run_rm(&c, &image, &["true"], &format!("load-churn-{}-{i}", std::process::id()), "none").await;
                    mine.add("run", t0.elapsed(), r);
                }
                record.lock().unwrap_or_else(|e| e.into_inner()).merge(mine);
            }))
        }
        _ => None,
    };
    for w in workers {
        w.await?;
    }
    if let Some(c) = churn {
        c.await?;
    }
    let mut subscribed = 0;
    for s in subs {
        subscribed += s.await? as usize;
    }
    stop.store(true, Ordering::Relaxed);
    let samples = samples.await?;
    let record = std::mem::take(&mut *record.lock().unwrap_or_else(|e| e.into_inner()));

    let agent = match target {
        Target::Berth(_) => "berthd",
        Target::Containerd(_) => "containerd",
    };
    let pace = if rate > 0 { format!("{rate} calls/s in all") } else { "each as fast as answers come".into() };
    println!(
        "{agent}: {} clients ({pace}) for {:.0} s against {} running containers; {subscribed}/{events} event subscriptions got {} events",
        clients,
        duration.as_secs_f64(),
        subjects.ids.len(),
        received.load(Ordering::Relaxed)
    );
    println!("{:<8} {:>8} {:>7} {:>9} {:>9} {:>9}", "rpc", "calls", "errors", "p50 ms", "p99 ms", "max ms");
    let mut summary = serde_json::Map::new();
    summary.insert("agent".into(), agent.into());
    summary.insert("rate".into(), rate.into());
    let mut errors = 0;
    for kind in KINDS {
        let mut t = record.times.get(kind).cloned().unwrap_or_default();
        let errs = record.errors.get(kind).copied().unwrap_or(0);
        if t.is_empty() && errs == 0 {
            continue;
        }
        errors += errs;
        t.sort_unstable();
        let (p50, p99, max) = (percentile(&t, 0.5), percentile(&t, 0.99), percentile(&t, 1.0));
        println!("{kind:<8} {:>8} {errs:>7} {p50:>9.2} {p99:>9.2} {max:>9.2}", t.len());
        if let Some(e) = record.first_error.get(kind) {
            println!("         first error: {e}");
        }
        summary.insert(format!("{kind}_calls"), t.len().into());
        summary.insert(format!("{kind}_p50_ms"), p50.into());
        summary.insert(format!("{kind}_p99_ms"), p99.into());
        summary.insert(format!("{kind}_max_ms"), max.into());
    }
    summary.insert("errors".into(), errors.into());
    summary.insert("events".into(), received.load(Ordering::Relaxed).into());
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        let max = |f: fn(&Usage) -> u64| samples.iter().map(f).max().unwrap_or(0);
        println!(
            "{agent} RSS {:.1} MB at the start, {:.1} MB at most, {:.1} MB at the end; fds {} / {} / {}; threads {} / {} / {}",
            first.rss_kb as f64 / 1024.0,
            max(|u| u.rss_kb) as f64 / 1024.0,
            last.rss_kb as f64 / 1024.0,
            first.fds,
            max(|u| u.fds),
            last.fds,
            first.threads,
            max(|u| u.threads),
            last.threads
        );
        summary.insert("rss_max_mb".into(), (max(|u| u.rss_kb) as f64 / 1024.0).into());
        summary.insert("rss_end_mb".into(), (last.rss_kb as f64 / 1024.0).into());
        summary.insert("fds_max".into(), max(|u| u.fds).into());
    }
    println!("RESULT {}", serde_json::Value::Object(summary));
    Ok(errors == 0 && subscribed == events)
}

/// Create, start, wait for and remove a container running `args` on network
/// `net` ("": the agent's default), through the API.
async fn run_rm(c: &Client, image: &str, args: &[&str], name: &str, net: &str) -> Result<(), String> {
    let e = |what: &str, s: tonic::Status| format!("{what}: {:?}: {}", s.code(), s.message());
    let mut cc = v1::containers_client::ContainersClient::new(c.channel.clone());
    let mut tc = v1::tasks_client::TasksClient::new(c.channel.clone());
    let config = v1::ContainerConfig {
        command: args.iter().map(|s| s.to_string()).collect(),
        command_set: true,
        network: net.to_owned(),
        ..Default::default()
    };
    let created = cc
        .create(c.request(v1::CreateContainerRequest {
            image: image.to_owned(),
            name: name.to_owned(),
            config: Some(config),
            ..Default::default()
        }))
        .await
        .map_err(|s| e("create", s))?;
    let id = created.into_inner().container.map(|c| c.id).unwrap_or_default();
    let run = async {
        tc.start(c.request(v1::StartTaskRequest { container_id: id.clone(), ..Default::default() })).await.map_err(|s| e("start", s))?;
        let w = tc
            .wait(c.request(v1::WaitTaskRequest { container_id: id.clone(), timeout_ms: 20_000, ..Default::default() }))
            .await
            .map_err(|s| e("wait", s))?;
        match w.into_inner().exit_code {
            0 => Ok(()),
            code => Err(format!("exit code {code}")),
        }
    };
    let ran = run.await;
    let removed =
        cc.delete(c.request(v1::DeleteContainerRequest { id, force: true, ..Default::default() })).await.map_err(|s| e("remove", s));
    ran.and(removed.map(|_| ()))
}

/// Create, start, wait for and delete an exec of `args` in container `id`.
async fn exec_once(c: &Client, id: &str, args: &[&str]) -> Result<(), String> {
    let e = |what: &str, s: tonic::Status| format!("{what}: {:?}: {}", s.code(), s.message());
    let mut tc = v1::tasks_client::TasksClient::new(c.channel.clone());
    let ex = tc
        .exec(c.request(v1::ExecRequest {
            container_id: id.to_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }))
        .await
        .map_err(|s| e("exec", s))?
        .into_inner()
        .exec_id;
    tc.start(c.request(v1::StartTaskRequest { container_id: id.to_owned(), exec_id: ex.clone() })).await.map_err(|s| e("start", s))?;
    let w = tc
        .wait(c.request(v1::WaitTaskRequest { container_id: id.to_owned(), exec_id: ex.clone(), timeout_ms: 20_000 }))
        .await
        .map_err(|s| e("wait", s))?;
    tc.delete(c.request(v1::DeleteTaskRequest { container_id: id.to_owned(), exec_id: ex, force: true }))
        .await
        .map_err(|s| e("delete", s))?;
    match w.into_inner().exit_code {
        0 => Ok(()),
        code => Err(format!("exit code {code}")),
    }
}

/// What a soak compares before and after.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Footprint {
    usage: Usage,
    mounts: usize,
    shims: usize,
    bundles: usize,
}

impl std::fmt::Display for Footprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let u = &self.usage;
        write!(
            f,
            "RSS {:.1} MB ({:.1} MB anonymous), {} fds, {} threads, {} mounts, {} shims, {} bundles",
            u.rss_kb as f64 / 1024.0,
            u.anon_kb as f64 / 1024.0,
            u.fds,
            u.threads,
            self.mounts,
            self.shims,
            self.bundles
        )
    }
}

fn footprint(pid: u32, state: &Path) -> Footprint {
    let state_s = state.to_string_lossy();
    // In the agent's mount namespace (a rootfs is mounted in its shim's own).
    let mounts =
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default().lines().filter(|l| l.contains(&*state_s)).count();
    let shims = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let mut args = cmd.split(|&b| b == 0);
            let exe = args.next().unwrap_or_default();
            exe.ends_with(b"berth-shim") && args.next().is_some_and(|a| a.starts_with(state_s.as_bytes()))
        })
        .count();
    let bundles = std::fs::read_dir(state.join("tasks"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|ns| std::fs::read_dir(ns.path()).map(|d| d.count()).unwrap_or(0))
        .sum();
    Footprint { usage: usage(pid), mounts, shims, bundles }
}

/// What a soak runs.
struct Cycles {
    image: String,
    runs: usize,
    execs: usize,
    /// Cycles at once.
    parallel: usize,
    net: String,
    /// How much (percent) RSS may grow.
    rss_slack: u64,
}

async fn soak(sock: &Path, ns: &str, cycles: &Cycles, pid: u32, state: &Path) -> Result<bool, Error> {
    let (image, runs, execs, parallel, net) = (cycles.image.as_str(), cycles.runs, cycles.execs, cycles.parallel, cycles.net.as_str());
    let target = Target::Berth(sock.to_owned());
    let c = Client::connect(&target, ns).await?;
    let tag = std::process::id();
    // A warm-up, so that the first figures are those of an agent that has run containers.
    // The execs' container, running from before the first figures to the end.
    let name = format!("soak-exec-{tag}");
    let mut cc = v1::containers_client::ContainersClient::new(c.channel.clone());
    let mut tc = v1::tasks_client::TasksClient::new(c.channel.clone());
    let config = v1::ContainerConfig {
        command: vec!["sleep".into(), "3600".into()],
        command_set: true,
        network: net.to_owned(),
        ..Default::default()
    };
    let id = cc
        .create(c.request(v1::CreateContainerRequest { image: image.to_owned(), name, config: Some(config), ..Default::default() }))
        .await?
        .into_inner()
        .container
        .map(|c| c.id)
        .unwrap_or_default();
    tc.start(c.request(v1::StartTaskRequest { container_id: id.clone(), ..Default::default() })).await?;
    // A warm-up of both kinds, so that the first figures are those of an
    // agent that has run containers and execs (code paged in, pools made).
    // (A tenth of the runs, 20 to 200: the first cycles grow the agent's pools to their size.)
    let warm = (runs / 10).clamp(20, 200);
    for i in 0..warm {
        run_rm(&c, image, &["true"], &format!("soak-warm-{tag}-{i}"), net).await?;
        exec_once(&c, &id, &["true"]).await?;
    }
    settle(pid, state, None).await;
    let before = footprint(pid, state);
    let t0 = Instant::now();
    let record = Arc::new(Mutex::new(Record::default()));
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..parallel {
        let (c, image, record, next, net) = (c.clone(), image.to_owned(), record.clone(), next.clone(), net.to_owned());
        workers.push(tokio::spawn(async move {
            let mut mine = Record::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= runs as u64 {
                    break;
                }
                let t = Instant::now();
                let r = run_rm(&c, &image, &["true"], &format!("soak-{tag}-{i}"), &net).await;
                mine.add("run", t.elapsed(), r);
            }
            record.lock().unwrap_or_else(|e| e.into_inner()).merge(mine);
        }));
    }
    for w in workers {
        w.await?;
    }
    let runs_took = t0.elapsed();
    let t1 = Instant::now();
    next.store(0, Ordering::Relaxed);
    let mut workers = Vec::new();
    for _ in 0..parallel {
        let (c, id, record, next) = (c.clone(), id.clone(), record.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut mine = Record::default();
            loop {
                if next.fetch_add(1, Ordering::Relaxed) >= execs as u64 {
                    break;
                }
                let t = Instant::now();
                let r = exec_once(&c, &id, &["true"]).await;
                mine.add("exec", t.elapsed(), r);
            }
            record.lock().unwrap_or_else(|e| e.into_inner()).merge(mine);
        }));
    }
    for w in workers {
        w.await?;
    }
    let execs_took = t1.elapsed();
    cc.delete(c.request(v1::DeleteContainerRequest { id, force: true, ..Default::default() })).await?;
    let after = settle(pid, state, Some(before)).await;
    let record = std::mem::take(&mut *record.lock().unwrap_or_else(|e| e.into_inner()));

    let errors: u64 = record.errors.values().sum();
    for (kind, e) in &record.first_error {
        println!("{kind}: {} errors; the first: {e}", record.errors.get(kind).copied().unwrap_or(0));
    }
    println!(
        "{runs} run --rm cycles in {:.1} s, {execs} execs in {:.1} s ({parallel} at once), {errors} errors",
        runs_took.as_secs_f64(),
        execs_took.as_secs_f64()
    );
    let mb = |kb: u64| kb as f64 / 1024.0;
    println!("before: {before}");
    println!("after:  {after}");
    let rss_ok = (after.usage.rss_kb as f64) <= before.usage.rss_kb as f64 * (1.0 + cycles.rss_slack as f64 / 100.0);
    let same = after.usage.fds <= before.usage.fds
        && after.usage.threads <= before.usage.threads
        && after.mounts <= before.mounts
        && after.shims <= before.shims
        && after.bundles <= before.bundles;
    let ok = errors == 0 && rss_ok && same;
    println!(
        "RESULT {}",
        serde_json::json!({
            "ok": ok, "errors": errors, "rss_before_mb": mb(before.usage.rss_kb), "rss_after_mb": mb(after.usage.rss_kb),
            "fds": [before.usage.fds, after.usage.fds], "threads": [before.usage.threads, after.usage.threads],
            "mounts": [before.mounts, after.mounts], "shims": [before.shims, after.shims], "bundles": [before.bundles, after.bundles],
        })
    );
    if !ok {
        println!("the soak left the agent changed");
    }
    Ok(ok)
}

/// Wait (up to 20 s) until the background work of the last cycles is done:
/// nothing beyond `target`'s, or (no target) counts that stay still.
async fn settle(pid: u32, state: &Path, target: Option<Footprint>) -> Footprint {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = footprint(pid, state);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = footprint(pid, state);
        let done = match target {
            // (The runtime's idle blocking threads end after 10 s.)
            Some(t) => {
                now.bundles <= t.bundles
                    && now.shims <= t.shims
                    && now.mounts <= t.mounts
                    && now.usage.fds <= t.usage.fds
                    && now.usage.threads <= t.usage.threads
            }
            None => now.bundles == last.bundles && now.shims == last.shims && now.usage.threads == last.usage.threads,
        };
        if (done && now.usage.threads == last.usage.threads) || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}
