//! # loadgen
//!
//! Load generator for consumer-host's chat: opens one real WebSocket per user
//! of a seed plan, sends chat messages, matches every delivery to its send, and
//! prints one JSON report on stdout (progress goes to stderr). It only ever
//! targets loopback addresses.
//!
//! ```text
//! export JWT_SECRET=some-secret
//! consumer-host seed --db db.sqlite3 --rooms 10 --users-per-room 10 --token-lifetime 86400 > plan.json
//! consumer-host serve --db db.sqlite3 --listen 127.0.0.1:8123 &
//! loadgen --url ws://127.0.0.1:8123 --plan plan.json --duration 5 --rate 20 \
//!     --server-pid $! --db db.sqlite3
//! ```
//!
//! Modes:
//! - `--rate R`: each client sends R messages a second (open loop).
//! - `--rate 0` (default): saturating; each client keeps `--window` of its own
//!   messages in flight (sent, not yet echoed back to it) and sends again as
//!   soon as one returns.
//! - `--idle`: connect everyone and hold the connections for `--duration`
//!   (with `--server-pid`: idle memory per connection).
//!
//! A body is `<client>:<seq>:<µs since loadgen start>`, so a receiver knows
//! who sent it, when, and whether it already saw it. Messages sent during
//! `--warmup` are sent and saved but not counted; every statistic covers the
//! `--duration` after it, except `messages_sent_total`, which matches `saved`
//! (`--db`). A message is owed one delivery per room member connected when
//! sending started, the sender included; what has not come `--drain` seconds
//! after sending stopped is `lost`.
//!
//! `--server-pid` reports the server's RSS (start, peak, end) and CPU seconds
//! next to the loadgen's own, to show which side was the bottleneck.
//! `--deploy-file chat.wasm --deploy-at 3 --admin-url http://127.0.0.1:8123
//! --admin-token T` hot-swaps the consumer mid-run and splits latency into
//! `steady`, `during` (from the request until 1 s after the answer) and
//! `after` windows.
//!
//! Past ~28k connections one source address runs out of ephemeral ports:
//! spread them with `--sources N` (127.0.0.1 ..= 127.0.0.N). The loadgen raises
//! its own open-file limit; the server needs one high enough too.

mod client;
mod db;
mod deploy;
mod plan;
mod proc;
mod report;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::sync::{Semaphore, watch};

use crate::client::{Control, Counters, Mode, Schedule, Shared, UNSET};
use crate::deploy::DeployReport;
use crate::report::{Latency, Report, ServerStats, Totals, Windows};
use crate::target::Target;

/// Longest sending period a run may ask for.
const MAX_DURATION_SECS: f64 = 600.0;
/// Longest warmup.
const MAX_WARMUP_SECS: f64 = 60.0;
/// Longest wait for outstanding deliveries.
const MAX_DRAIN_SECS: f64 = 120.0;
/// Highest per-client rate: beyond it the loadgen, not the server, is measured.
const MAX_RATE: f64 = 10_000.0;
/// How long clients get to close and hand in their results.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Command line of the load generator.
#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for consumer-host chat: real WebSocket clients on loopback, every delivery matched to its send."
)]
struct Args {
    /// Base URL of the server; only loopback hosts (127.0.0.0/8, ::1, localhost).
    /// Give it several times to spread each room over several nodes: member
    /// `n` of a room connects to the `n % count`-th URL.
    #[arg(long, default_value = "ws://127.0.0.1:8000")]
    url: Vec<String>,
    /// Seed plan printed by `consumer-host seed`, or `-` for stdin.
    #[arg(long)]
    plan: String,
    /// Seconds of counted sending (after the warmup).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of sending before that, not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Messages per second per client; 0 saturates (see --window).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// With --rate: every client sends at the same instants (each room gets
    /// a burst of one message per member at once), instead of spread over
    /// the period.
    #[arg(long)]
    lockstep: bool,
    /// Own messages each client keeps in flight when saturating.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    window: u32,
    /// Connect everyone, send nothing, hold the connections for --duration.
    #[arg(long)]
    idle: bool,
    /// Connections opened at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    connect_concurrency: u32,
    /// Spread connections over source addresses 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    sources: u8,
    /// The server's pid: sample its memory and CPU.
    #[arg(long)]
    server_pid: Option<u32>,
    /// The server's SQLite database: count the messages it saved.
    #[arg(long)]
    db: Option<PathBuf>,
    /// A consumer component to deploy during the run (hot swap).
    #[arg(long, requires_all = ["deploy_at", "admin_url"])]
    deploy_file: Option<PathBuf>,
    /// Seconds after sending starts (warmup included) to deploy.
    #[arg(long, requires = "deploy_file")]
    deploy_at: Option<f64>,
    /// Base URL of the admin API, e.g. http://127.0.0.1:8123 (loopback only).
    #[arg(long, requires = "deploy_file")]
    admin_url: Option<String>,
    /// Admin bearer token.
    #[arg(long, env = "CONSUMER_HOST_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The consumer to deploy.
    #[arg(long, default_value = "chat")]
    consumer: String,
    /// Seconds to wait for outstanding deliveries after sending stops.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
}

/// A deploy to do during the run.
struct DeployPlan {
    module: Vec<u8>,
    at: Duration,
    admin: Target,
    token: String,
    consumer: String,
}

/// The arguments, checked.
struct Settings {
    target: Target,
    /// Every node (the first is `target`).
    targets: Vec<Target>,
    mode: Mode,
    duration: Duration,
    warmup: Duration,
    drain: Duration,
    deploy: Option<DeployPlan>,
}

/// A seconds option as a duration, refused when out of bounds.
fn secs(name: &str, value: f64, max: f64, allow_zero: bool) -> Result<Duration> {
    if !value.is_finite() || value < 0.0 || (!allow_zero && value == 0.0) {
        bail!("--{name} must be a positive number of seconds");
    }
    if value > max {
        bail!("--{name} {value} is too long: at most {max} seconds");
    }
    Ok(Duration::from_secs_f64(value))
}

impl Settings {
    /// Checks the arguments and reads the module to deploy, before any connection.
    fn from_args(args: &Args) -> Result<Self> {
        let targets = args
            .url
            .iter()
            .map(|url| target::parse(url, "ws").context("--url"))
            .collect::<Result<Vec<_>>>()?;
        let target = targets[0].clone();
        let duration = secs("duration", args.duration, MAX_DURATION_SECS, false)?;
        let warmup = secs("warmup", args.warmup, MAX_WARMUP_SECS, true)?;
        let drain = secs("drain", args.drain, MAX_DRAIN_SECS, true)?;
        if !args.rate.is_finite() || args.rate < 0.0 || args.rate > MAX_RATE {
            bail!("--rate must be between 0 (saturating) and {MAX_RATE} messages per second");
        }
        let mode = if args.idle {
            Mode::Idle
        } else if args.rate > 0.0 {
            Mode::Rate {
                period: Duration::from_secs_f64(1.0 / args.rate),
                lockstep: args.lockstep,
            }
        } else {
            Mode::Saturating {
                window: args.window,
            }
        };
        let deploy = match &args.deploy_file {
            None => None,
            Some(file) => {
                if args.idle {
                    bail!(
                        "--deploy-file measures latency around a swap: it needs traffic, drop --idle"
                    );
                }
                let at = secs(
                    "deploy-at",
                    args.deploy_at.unwrap_or_default(),
                    MAX_DURATION_SECS,
                    true,
                )?;
                if at >= warmup + duration {
                    bail!(
                        "--deploy-at {} is not within the {} s of sending (warmup included)",
                        at.as_secs_f64(),
                        (warmup + duration).as_secs_f64()
                    );
                }
                let admin = target::parse(args.admin_url.as_deref().unwrap_or(""), "http")
                    .context("--admin-url")?;
                let Some(token) = args.admin_token.clone() else {
                    bail!("--deploy-file needs --admin-token (or CONSUMER_HOST_ADMIN_TOKEN)");
                };
                if token.is_empty() || token.contains(['\r', '\n']) {
                    bail!("--admin-token must be one non-empty line");
                }
                if args.consumer.is_empty()
                    || !args
                        .consumer
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    bail!("--consumer must be a plain consumer name");
                }
                let module = std::fs::read(file)
                    .with_context(|| format!("reading --deploy-file {}", file.display()))?;
                Some(DeployPlan {
                    module,
                    at,
                    admin,
                    token,
                    consumer: args.consumer.clone(),
                })
            }
        };
        Ok(Self {
            target,
            targets,
            mode,
            duration,
            warmup,
            drain,
            deploy,
        })
    }
}

/// Builds the runtime, runs, prints the report; a refusal or failure exits 2.
fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("loadgen: cannot start the runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("loadgen: cannot write the report: {err}");
                ExitCode::from(2)
            }
        },
        Err(err) => {
            eprintln!("loadgen: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Progress lines on stderr, about once a second.
struct Progress {
    started: Instant,
    next: Instant,
    last_at: Instant,
    last_received: u64,
}

impl Progress {
    /// Starts the clock the progress lines show.
    fn new() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            next: now + Duration::from_secs(1),
            last_at: now,
            last_received: 0,
        }
    }

    /// Prints a line if a second has passed since the last one.
    fn maybe_print(&mut self, shared: &Shared, stage: &str) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + Duration::from_secs(1);
        let (mut sent, mut received) = (0u64, 0u64);
        for counters in shared.counters.iter() {
            sent += counters.sent.load(Ordering::Relaxed);
            received += counters.received.load(Ordering::Relaxed);
        }
        let span = now.duration_since(self.last_at).as_secs_f64().max(1e-3);
        let per_sec = (received - self.last_received.min(received)) as f64 / span;
        self.last_at = now;
        self.last_received = received;
        let connected = shared.connected.load(Ordering::Relaxed);
        let ended = shared.ended.load(Ordering::Relaxed);
        eprintln!(
            "loadgen [{:6.1}s] {stage:<10} open {} (failed {}, closed {ended}), sent {sent}, received {received}, {per_sec:.0} deliveries/s",
            now.duration_since(self.started).as_secs_f64(),
            connected.saturating_sub(ended),
            shared.failed.load(Ordering::Relaxed),
        );
    }
}

/// Sums of the published counters: (expected, distinct).
fn delivery_totals(shared: &Shared) -> (u64, u64) {
    shared
        .counters
        .iter()
        .fold((0, 0), |(expected, distinct), counters| {
            (
                expected + counters.expected.load(Ordering::Relaxed),
                distinct + counters.distinct.load(Ordering::Relaxed),
            )
        })
}

/// Saved messages, counted off the runtime (SQLite blocks).
async fn count_saved(path: Option<PathBuf>) -> Result<Option<u64>> {
    match path {
        None => Ok(None),
        Some(path) => tokio::task::spawn_blocking(move || db::count_messages(&path))
            .await
            .context("counting saved messages")?
            .map(Some),
    }
}

/// Connects, sends, drains, and gathers the report.
async fn run(args: Args) -> Result<Report> {
    let mut settings = Settings::from_args(&args)?;
    let (rooms, specs) = plan::clients(plan::read(&args.plan)?)?;
    let total = specs.len();
    let sources = target::sources(&settings.target, args.sources)?;

    let limit = proc::raise_nofile(total as u64 + 256);
    if limit < total as u64 + 64 {
        eprintln!(
            "loadgen: warning: the open-file limit is {limit}, below the {total} connections asked for; expect connect failures"
        );
    }
    if let Some(pid) = args.server_pid
        && proc::rss_kib(pid).is_none()
    {
        bail!("--server-pid {pid}: cannot read /proc/{pid}/status");
    }

    let saved_before = count_saved(args.db.clone()).await?;
    let server_cpu_start = args
        .server_pid
        .and_then(|pid| proc::cpu_secs(&pid.to_string()));
    let rss_start = args.server_pid.and_then(proc::rss_kib);
    let sampler = args.server_pid.map(proc::RssSampler::start);
    let own_cpu_start = proc::cpu_secs("self").unwrap_or(0.0);

    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        servers: settings
            .targets
            .iter()
            .map(|target| (target.addr, format!("ws://{}", target.authority)))
            .collect(),
        sources,
        connect_permits: Semaphore::new(args.connect_concurrency as usize),
        mode: settings.mode,
        counters: (0..total).map(|_| Counters::default()).collect(),
        room_connected: (0..rooms.len()).map(|_| AtomicU32::new(0)).collect(),
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        done_sending: AtomicUsize::new(0),
        ended: AtomicUsize::new(0),
        deploy_started_us: AtomicU64::new(UNSET),
        deploy_finished_us: AtomicU64::new(UNSET),
        deploy_windows: settings.deploy.is_some(),
    });
    drop(rooms);

    // Connect everyone before anyone sends, so a message's fan-out is known.
    eprintln!(
        "loadgen: opening {total} connections to {} from {} source address(es)",
        settings
            .targets
            .iter()
            .map(|target| target.authority.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        shared.sources.len()
    );
    let (control, control_rx) = watch::channel(Control::Connecting);
    let connect_started = Instant::now();
    let mut handles: Vec<_> = specs
        .into_iter()
        .map(|spec| tokio::spawn(client::run(spec, shared.clone(), control_rx.clone())))
        .collect();
    drop(control_rx);
    let mut progress = Progress::new();
    wait_for_connections(&shared, total, &mut progress).await;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::Acquire);
    eprintln!(
        "loadgen: {connected} connected, {} failed, in {connect_secs:.2}s",
        shared.failed.load(Ordering::Acquire)
    );

    let send_start = Instant::now();
    let warmup = if settings.mode == Mode::Idle {
        Duration::ZERO
    } else {
        settings.warmup
    };
    let send_end = send_start + warmup + settings.duration;
    let schedule = Schedule {
        send_start,
        warmup_end_us: (send_start + warmup)
            .duration_since(shared.epoch)
            .as_micros() as u64,
        send_end,
        hard_end: send_end + settings.drain,
    };
    let mut drain_secs = 0.0;
    let mut deploy_report: Option<DeployReport> = None;
    if connected > 0 {
        control.send_replace(Control::Start(schedule));
        let deploy_task = settings
            .deploy
            .take()
            .map(|deploy| tokio::spawn(deploy_at(deploy, shared.clone(), send_start)));
        hold_traffic(
            &shared,
            &settings,
            connected,
            send_start + warmup,
            send_end,
            &mut progress,
        )
        .await;
        let drain_started = Instant::now();
        drain(&shared, &settings, connected, send_end, &mut progress).await;
        drain_secs = drain_started.elapsed().as_secs_f64();
        if let Some(task) = deploy_task {
            deploy_report = Some(task.await.context("the deploy task failed")?);
        }
    }

    // Measured with the connections still open: idle memory shows here.
    let server = args.server_pid.map(|pid| {
        let (peak, end) = sampler.expect("sampler runs with a pid").finish(pid);
        ServerStats {
            pid,
            rss_kib_start: rss_start,
            rss_kib_peak: peak,
            rss_kib_end: end,
            cpu_secs: proc::cpu_secs(&pid.to_string())
                .zip(server_cpu_start)
                .map(|(end, start)| round3(end - start)),
        }
    });
    let loadgen_cpu_secs = round3(proc::cpu_secs("self").unwrap_or(0.0) - own_cpu_start);

    control.send_replace(Control::Stop);
    let totals = collect(&mut handles, shared.deploy_windows).await;

    let saved_after = count_saved(args.db.clone()).await?;
    let saved = saved_before
        .zip(saved_after)
        .map(|(before, after)| after.saturating_sub(before));

    let duration_secs = settings.duration.as_secs_f64();
    let closed_early = totals.closed_early_reasons.values().sum();
    let connect_failures = totals.connect_failure_reasons.values().sum();
    let windows = shared.deploy_windows.then(|| Windows {
        steady: Latency::of(&totals.histograms[1]),
        during: Latency::of(&totals.histograms[2]),
        after: Latency::of(&totals.histograms[3]),
    });
    Ok(Report {
        mode: match settings.mode {
            Mode::Idle => "idle",
            Mode::Rate { lockstep: true, .. } => "rate-lockstep",
            Mode::Rate { .. } => "rate",
            Mode::Saturating { .. } => "saturating",
        },
        connections: totals.connections,
        connect_failures,
        connect_failure_reasons: totals.connect_failure_reasons,
        connect_secs: round3(connect_secs),
        connects_per_sec: round3(totals.connections as f64 / connect_secs.max(1e-9)),
        duration_secs,
        warmup_secs: warmup.as_secs_f64(),
        rate_per_client: matches!(settings.mode, Mode::Rate { .. }).then_some(args.rate),
        window: match settings.mode {
            Mode::Saturating { window } => Some(window),
            _ => None,
        },
        messages_sent: totals.sent_tracked,
        sends_skipped: totals.skipped,
        messages_sent_total: totals.sent_total,
        deliveries_expected: totals.expected,
        deliveries_received: totals.distinct,
        lost: totals.expected.saturating_sub(totals.distinct),
        duplicated: totals.duplicated,
        errors: totals.errors,
        error_codes: totals.error_codes,
        unmatched: totals.unmatched,
        closed_early,
        closed_early_reasons: totals.closed_early_reasons,
        deliveries_per_sec: round3(totals.distinct as f64 / duration_secs),
        messages_per_sec: round3(totals.sent_tracked as f64 / duration_secs),
        drain_secs: round3(drain_secs),
        latency_us: Latency::of(&totals.histograms[0]),
        server,
        loadgen_cpu_secs,
        saved,
        deploy: deploy_report,
        windows,
    })
}

/// Waits until every client has connected or failed to, printing progress.
async fn wait_for_connections(shared: &Shared, total: usize, progress: &mut Progress) {
    while shared.connected.load(Ordering::Acquire) + shared.failed.load(Ordering::Acquire) < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
        progress.maybe_print(shared, "connecting");
    }
}

/// Deploys the planned module at its time into the run, and reports how
/// the server answered; the deploy window's edges go into `shared`.
async fn deploy_at(deploy: DeployPlan, shared: Arc<Shared>, send_start: Instant) -> DeployReport {
    tokio::time::sleep_until((send_start + deploy.at).into()).await;
    let now = Instant::now();
    shared.deploy_started_us.store(
        now.duration_since(shared.epoch).as_micros() as u64,
        Ordering::Relaxed,
    );
    eprintln!(
        "loadgen: deploying {} bytes to {}",
        deploy.module.len(),
        deploy.consumer
    );
    let report = deploy::put(
        &deploy.admin,
        &deploy.consumer,
        &deploy.token,
        &deploy.module,
        now.duration_since(send_start).as_secs_f64(),
    )
    .await;
    shared
        .deploy_finished_us
        .store(shared.epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
    eprintln!(
        "loadgen: deploy answered {:?} in {:.1} ms",
        report.status, report.request_ms
    );
    report
}

/// The sending phase: waits until `send_end` (or until the server has
/// closed every connection), printing progress.
async fn hold_traffic(
    shared: &Shared,
    settings: &Settings,
    connected: usize,
    warmup_end: Instant,
    send_end: Instant,
    progress: &mut Progress,
) {
    while Instant::now() < send_end {
        if shared.ended.load(Ordering::Acquire) >= connected {
            eprintln!("loadgen: the server closed every connection; stopping");
            break;
        }
        let wake = (Instant::now() + Duration::from_millis(100)).min(send_end);
        tokio::time::sleep_until(wake.into()).await;
        let stage = match settings.mode {
            Mode::Idle => "holding",
            _ if Instant::now() < warmup_end => "warmup",
            _ => "sending",
        };
        progress.maybe_print(shared, stage);
    }
}

/// Waits until every client's owed deliveries are final and have come, or
/// cannot come (every connection closed), or `--drain` has passed.
async fn drain(
    shared: &Shared,
    settings: &Settings,
    connected: usize,
    send_end: Instant,
    progress: &mut Progress,
) {
    let drain_deadline = send_end + settings.drain;
    loop {
        let (expected, distinct) = delivery_totals(shared);
        if shared.done_sending.load(Ordering::Acquire) >= connected && distinct >= expected {
            break;
        }
        // Deliveries owed to closed connections will never come.
        if shared.ended.load(Ordering::Acquire) >= connected {
            break;
        }
        if Instant::now() >= drain_deadline {
            eprintln!(
                "loadgen: gave up waiting for {} deliveries after {:.1}s",
                expected.saturating_sub(distinct),
                settings.drain.as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        progress.maybe_print(shared, "draining");
    }
}

/// Every client's results, added up; a client that does not hand them in
/// within [`JOIN_TIMEOUT`] is counted and left out.
async fn collect(
    handles: &mut [tokio::task::JoinHandle<client::ClientResult>],
    deploy_windows: bool,
) -> Totals {
    let mut totals = Totals::new(if deploy_windows { 3 } else { 0 });
    let join_deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    let mut unfinished = 0usize;
    for handle in handles {
        match tokio::time::timeout_at(join_deadline, &mut *handle).await {
            Ok(Ok(result)) => totals.add(result),
            Ok(Err(_)) => unfinished += 1,
            Err(_) => {
                handle.abort();
                unfinished += 1;
            }
        }
    }
    if unfinished > 0 {
        eprintln!("loadgen: warning: {unfinished} clients did not hand in their results");
    }
    totals
}

/// Three decimals are plenty for a report read by people.
fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
