//! The `polytrace` command line: `up` runs an app, `check` validates one,
//! `build` runs its components' build commands.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use polytrace::app::{App, load_components};
use polytrace::http::allowed_hosts::AllowedHosts;
use polytrace::http::listener::{ConnectionLimits, ListenerStats};
use polytrace::manifest::Manifest;
use polytrace::runtime::{Runtime, default_cache_dir};
use polytrace::store::AnswerBudget;
use polytrace::telemetry::Settings;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// mimalloc instead of glibc's malloc: in four alternating runs each of the
/// overhead benchmark, ~7 µs less CPU per traced request and +8% requests
/// per second traced, +5% untraced (docs/benchmarks.md, issue 13 round 5).
/// It keeps ~15 MB more resident at start and ~30 MB more under load;
/// `MIMALLOC_ARENA_EAGER_COMMIT=0` in the environment gives that back.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "polytrace",
    version,
    about = "Run wasm components from any language with tracing supplied by the host"
)]
struct Cli {
    /// Host log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "POLYTRACE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Directory for compiled components (default: ~/.cache/polytrace).
    #[arg(long, global = true, env = "POLYTRACE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Instances alive at once (requests in flight, in-process calls
    /// included); beyond it requests are answered 503.
    #[arg(long, global = true, env = "POLYTRACE_MAX_INSTANCES",
          default_value_t = polytrace::runtime::DEFAULT_MAX_INSTANCES,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_instances: u32,
    /// Connections open at once on each listener (the app's, a
    /// component's own, the viewer's); past it a client gets a 503.
    #[arg(long, global = true, env = "POLYTRACE_MAX_CONNECTIONS",
          default_value_t = polytrace::http::listener::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(usize))]
    max_connections: usize,
    /// How long a client has to send a request's headers, counted from
    /// when the connection waits for them (so also how long an idle
    /// keep-alive connection stays open).
    #[arg(
        long,
        global = true,
        env = "POLYTRACE_HEADER_TIMEOUT",
        default_value = "10s"
    )]
    header_timeout: String,
    /// A connection that moves no byte for this long is closed (a client
    /// that stalls its request body or stops reading the response), unless
    /// a handler is working with its whole request.
    #[arg(
        long,
        global = true,
        env = "POLYTRACE_IDLE_TIMEOUT",
        default_value = "60s"
    )]
    idle_timeout: String,
    #[command(subcommand)]
    command: Command,
}

/// The embedded trace store and its viewer.
#[derive(clap::Args)]
struct ViewerArgs {
    /// Where traces are kept: a SQLite file, `memory` for a throwaway run,
    /// or `none` (no store, no viewer). Default: .polytrace/traces.db
    /// beside the manifest.
    #[arg(long, env = "POLYTRACE_STORE")]
    store: Option<String>,
    /// Address of the trace viewer and its Jaeger-compatible API.
    #[arg(long, env = "POLYTRACE_UI", default_value = DEFAULT_UI)]
    ui: String,
    /// Do not serve the viewer (the store still keeps traces).
    #[arg(long)]
    no_ui: bool,
    /// More host names the viewer answers to, comma-separated (`*`: any).
    /// It always answers to its address and, on loopback, to `localhost`;
    /// other names are refused, which stops DNS rebinding.
    #[arg(long, env = "POLYTRACE_UI_ALLOWED_HOSTS", value_delimiter = ',')]
    ui_allowed_hosts: Vec<String>,
    /// Spans one answer of the query API may hold; a search past it returns
    /// the traces that fit and names the rest in `errors`.
    #[arg(long, env = "POLYTRACE_QUERY_MAX_SPANS",
          default_value_t = polytrace::query::DEFAULT_MAX_ANSWER_SPANS,
          value_parser = clap::value_parser!(usize))]
    query_max_spans: usize,
    /// Megabytes of span data one answer of the query API may hold.
    #[arg(long, env = "POLYTRACE_QUERY_MAX_MB",
          default_value_t = polytrace::query::DEFAULT_MAX_ANSWER_BYTES >> 20,
          value_parser = clap::value_parser!(usize))]
    query_max_mb: usize,
    /// Keep traces this long (`30m`, `12h`, `7d`).
    #[arg(long, env = "POLYTRACE_RETENTION", default_value = "7d")]
    retention: String,
    /// Keep the store under this size, in MB; the oldest go first.
    #[arg(long, env = "POLYTRACE_STORE_MAX_MB", default_value_t = 1024)]
    store_max_mb: u64,
    /// Guest log records printed on stdout: `off`, or the lowest level
    /// shown (`trace`, `debug`, `info`, `warn`, `error`, `fatal`), with
    /// `,json` for JSON lines (`debug,json`).
    #[arg(long, env = "POLYTRACE_GUEST_LOGS", default_value = "info")]
    guest_logs: String,
}

const DEFAULT_UI: &str = "127.0.0.1:16686";

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the app described by MANIFEST (a polytrace.toml, or its directory).
    Up {
        manifest: PathBuf,
        /// Address of the HTTP listener.
        #[arg(long, default_value = "127.0.0.1:3000", env = "POLYTRACE_LISTEN")]
        listen: SocketAddr,
        /// Run the components' build commands first (as `polytrace build`).
        #[arg(long)]
        build: bool,
        #[command(flatten)]
        viewer: ViewerArgs,
    },
    /// Validate MANIFEST and every component against the world.
    Check { manifest: PathBuf },
    /// Run every component's `build` command, from the manifest's directory.
    Build {
        manifest: PathBuf,
        /// Builds to run at once (default: the number of cores).
        #[arg(short, long)]
        jobs: Option<usize>,
    },
}

fn main() -> ExitCode {
    // Errors the host hands to guests (a request body's failure, read with
    // `wasi:io/error.to-debug-string`) would carry a backtrace of the
    // host's own source when RUST_BACKTRACE is set, and a guest may pass
    // that on to its client. RUST_BACKTRACE keeps its meaning for panics;
    // RUST_LIB_BACKTRACE=1 brings error backtraces back.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: the first statement of main: no other thread is running
        // to read the environment at the same time.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limits = match connection_limits(&cli) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    raise_open_files_limit(&limits);
    let cache_dir = cli.cache_dir.or_else(default_cache_dir);
    let max_instances = cli.max_instances;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up {
                manifest,
                listen,
                build,
                viewer,
            } => {
                if build {
                    let m = Manifest::load(&manifest)?;
                    polytrace::build::build_all(&m, polytrace::build::default_parallelism())
                        .await?;
                }
                up(&manifest, listen, max_instances, limits, cache_dir, viewer).await
            }
            Command::Check { manifest } => check(&manifest, max_instances, cache_dir),
            Command::Build { manifest, jobs } => {
                let m = Manifest::load(&manifest)?;
                let jobs = jobs.unwrap_or_else(polytrace::build::default_parallelism);
                polytrace::build::build_all(&m, jobs).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    // TLS failures are reported by the export workers, once per 30 s with
    // their cause; the certificate verifier would log every attempt, so it
    // is silenced unless POLYTRACE_LOG names it.
    const QUIET: &str = "rustls_platform_verifier=off";
    let filter = match std::env::var("POLYTRACE_LOG") {
        Ok(directives) if directives.contains("rustls_platform_verifier") => {
            tracing_subscriber::EnvFilter::new(directives)
        }
        Ok(directives) => tracing_subscriber::EnvFilter::new(format!("{directives},{QUIET}")),
        Err(_) => {
            tracing_subscriber::EnvFilter::new(format!("info,wasmtime=warn,cranelift=warn,{QUIET}"))
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn max_memory(manifest: &Manifest) -> u64 {
    manifest
        .components
        .iter()
        .map(|c| c.memory_bytes)
        .max()
        .unwrap_or(polytrace::manifest::DEFAULT_MEMORY_MB << 20)
}

/// Raise the soft limit on open files to the hard one (as Go does at start):
/// every connection is a descriptor, and the common soft limit of 1024
/// would run out long before `--max-connections`. Warns when even the hard
/// limit cannot hold the app's and the viewer's caps.
fn raise_open_files_limit(limits: &ConnectionLimits) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit write or read the struct given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        let needed = (limits.max_connections as u64).saturating_mul(2) + 256;
        if lim.rlim_cur < needed {
            tracing::warn!(
                "the open-files limit is {}: too few for --max-connections {} on the app's and the \
                 viewer's listeners; past it new connections fail instead of getting a 503 \
                 (raise `ulimit -n` or lower --max-connections)",
                lim.rlim_cur,
                limits.max_connections
            );
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = limits;
}

/// The listeners' bounds from `--max-connections`, `--header-timeout` and
/// `--idle-timeout`.
fn connection_limits(cli: &Cli) -> anyhow::Result<ConnectionLimits> {
    let timeout = |flag: &str, value: &str| {
        polytrace::query::parse_duration(value)
            .and_then(|d| {
                if d.is_zero() {
                    Err("it must be above 0".to_string())
                } else {
                    Ok(d)
                }
            })
            .map_err(|e| anyhow::anyhow!("--{flag} {value}: {e}"))
    };
    if cli.max_connections == 0 {
        anyhow::bail!("--max-connections 0: at least one connection must be allowed");
    }
    Ok(ConnectionLimits {
        max_connections: cli.max_connections,
        header_read_timeout: timeout("header-timeout", &cli.header_timeout)?,
        idle_timeout: timeout("idle-timeout", &cli.idle_timeout)?,
    })
}

async fn up(
    path: &Path,
    listen: SocketAddr,
    max_instances: u32,
    limits: ConnectionLimits,
    cache_dir: Option<PathBuf>,
    viewer: ViewerArgs,
) -> anyhow::Result<()> {
    let manifest = Manifest::load(path)?;
    let keep = viewer.store.as_deref() != Some("none");
    let store_config = polytrace::store::StoreConfig {
        path: match viewer.store.as_deref() {
            Some("memory") => None,
            Some(p) => Some(PathBuf::from(p)),
            None => Some(polytrace::store::default_path(&manifest.dir)),
        },
        max_age: polytrace::query::parse_duration(&viewer.retention)
            .and_then(|d| {
                if d.is_zero() {
                    Err("0 would keep nothing: use `--store none` to keep no traces".into())
                } else {
                    Ok(d)
                }
            })
            .map_err(|e| anyhow::anyhow!("--retention {}: {e}", viewer.retention))?,
        max_bytes: viewer.store_max_mb << 20,
    };
    if keep && store_config.max_bytes < polytrace::store::MIN_MAX_BYTES {
        anyhow::bail!(
            "--store-max-mb {}: the store needs at least 1 MB (use `--store none` to keep no traces)",
            viewer.store_max_mb
        );
    }
    let store = if keep {
        Some(polytrace::store::Store::open(store_config)?)
    } else {
        None
    };
    let mut settings = Settings::from_env(&manifest.telemetry)
        .map_err(|e| anyhow::anyhow!("telemetry settings: {e}"))?;
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    settings.console_logs = polytrace::telemetry::config::ConsoleLogs::parse(&viewer.guest_logs)
        .map_err(|e| anyhow::anyhow!("--guest-logs {e}"))?;
    let mut outputs = Vec::new();
    if settings.traces.exporter == polytrace::telemetry::config::Exporter::Otlp {
        outputs.push(format!(
            "otlp {:?} to {}",
            settings.traces.otlp.protocol, settings.traces.otlp.endpoint
        ));
    }
    if settings.traces.console {
        outputs.push("console".to_string());
    }
    let exporter = if outputs.is_empty() {
        "none".to_string()
    } else {
        outputs.join(" + ")
    };
    let runtime = Runtime::new(max_memory(&manifest), max_instances, cache_dir)?;
    let app = App::new(manifest, runtime, settings, store.clone())?;
    app.apply_sql_schemas().await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (is another process using it? pass --listen ADDR)")
        })?;
    let local = listener.local_addr()?;
    // Components with a listener of their own.
    let mut own = Vec::new();
    for i in 0..app.telemetry.component_count() {
        let c = app.component(i);
        if let Some(addr) = c.listen {
            let l = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "component `{}`: cannot listen on {addr} (its `listen` in the manifest)",
                    c.id
                )
            })?;
            own.push((i, l, ListenerStats::new(format!("component:{}", c.id))));
        }
    }
    for i in 0..app.telemetry.component_count() {
        let c = app.component(i);
        let mut at: Vec<String> = c
            .route
            .iter()
            .map(|r| format!("http://{local}{}", r.pattern()))
            .collect();
        for (_, l, _) in own.iter().filter(|(j, _, _)| *j == i) {
            at.push(format!("http://{}/ (own listener)", l.local_addr()?));
        }
        if at.is_empty() {
            at.push("(in-process only)".into());
        }
        tracing::info!(component = %c.id, "serving {}", at.join(" and "));
    }
    // One shutdown signal stops every listener.
    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |mut rx: tokio::sync::broadcast::Receiver<()>| async move {
        let _ = rx.recv().await;
    };
    let app_stats = ListenerStats::new("app");
    let viewer_stats = ListenerStats::new("viewer");
    let mut listeners = vec![app_stats.clone(), viewer_stats.clone()];
    listeners.extend(own.iter().map(|(_, _, s)| s.clone()));
    let metrics: polytrace::query::MetricsSource = {
        let app = app.clone();
        // OTEL_SDK_DISABLED: no metric at all, the listeners' included.
        let listeners = if app.telemetry.settings.disabled {
            Vec::new()
        } else {
            listeners
        };
        std::sync::Arc::new(move || {
            let mut text = app.telemetry.metrics.prometheus();
            text.push_str(&polytrace::http::listener::prometheus(&listeners));
            text
        })
    };
    let where_kept = store.as_ref().map(|store| {
        store
            .config
            .path
            .as_ref()
            .map_or("in memory".to_string(), |p| p.display().to_string())
    });
    let viewer_task = if viewer.no_ui {
        match &where_kept {
            Some(w) => tracing::info!("traces kept {w}; viewer off (--no-ui)"),
            None => tracing::info!("trace store off (--store none); viewer off (--no-ui)"),
        }
        None
    } else {
        match bind_viewer(&viewer.ui).await? {
            Some(l) => {
                let at = l.local_addr()?;
                match &where_kept {
                    Some(w) => tracing::info!(
                        "viewer on http://{at} (traces kept {w}; Jaeger API under /api; \
                         Prometheus metrics at /metrics)"
                    ),
                    None => tracing::info!(
                        "trace store off (--store none); no viewer; Prometheus metrics on http://{at}/metrics"
                    ),
                }
                let options = polytrace::query::ViewerOptions {
                    limits,
                    hosts: AllowedHosts::new(at, &viewer.ui_allowed_hosts),
                    budget: AnswerBudget {
                        max_spans: viewer.query_max_spans.max(1),
                        max_bytes: viewer.query_max_mb.max(1) << 20,
                    },
                };
                // The viewer runs on a runtime of its own, at a lower CPU
                // priority: its queries, the JSON of their answers and its
                // page never take the app's workers, and under load the
                // app's requests go first.
                let runtime = viewer_runtime()?;
                let l = l.into_std()?;
                let (store, shutdown) = (store.clone(), stopped(stop.subscribe()));
                let task = runtime.spawn(async move {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => {
                            polytrace::query::serve(
                                store,
                                metrics,
                                l,
                                options,
                                viewer_stats,
                                shutdown,
                            )
                            .await
                        }
                        Err(e) => tracing::error!("viewer not started: {e}"),
                    }
                });
                Some((runtime, task))
            }
            None => None,
        }
    };
    // Listening for the signals before saying so.
    let signal = shutdown_signal();
    tracing::info!(spans = %exporter, "app `{}` listening on http://{local}", app.manifest.app);
    let mut servers = tokio::task::JoinSet::new();
    for (i, l, stats) in own {
        servers.spawn(polytrace::http::server::serve(
            app.clone(),
            l,
            polytrace::http::server::Target::Component(i),
            limits,
            stats,
            stopped(stop.subscribe()),
        ));
    }
    let main = polytrace::http::server::serve(
        app.clone(),
        listener,
        polytrace::http::server::Target::Routes,
        limits,
        app_stats,
        stopped(stop.subscribe()),
    );
    tokio::spawn(async move {
        signal.await;
        let _ = stop.send(());
    });
    main.await?;
    while let Some(done) = servers.join_next().await {
        done??;
    }
    if let Some((runtime, task)) = viewer_task {
        let _ = task.await;
        runtime.shutdown_background();
    }
    if !app.wait_idle(Duration::from_secs(10)).await {
        tracing::warn!("some requests had not finished after 10 s; flushing what there is");
    }
    tracing::info!("requests finished; flushing spans, metrics and logs");
    let flushed = app.telemetry.flush(Duration::from_secs(10)).await;
    if let Some(store) = &store {
        let flushed = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.flush(Duration::from_secs(10)))
                .await
                .unwrap_or(false)
        };
        tracing::info!(
            stored = store
                .stats
                .stored
                .load(std::sync::atomic::Ordering::Relaxed),
            store_dropped = store
                .stats
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            "trace store {}",
            if flushed {
                "flushed"
            } else {
                "not flushed in time"
            }
        );
    }
    let stats = app.telemetry.traces.export().stats();
    let (exported, dropped) = (
        stats.exported.load(std::sync::atomic::Ordering::Relaxed),
        stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
    );
    if flushed {
        tracing::info!(exported, dropped, "stopped");
    } else {
        tracing::warn!(
            exported,
            dropped,
            "stopped; the last spans could not be flushed in time"
        );
    }
    Ok(())
}

/// The viewer's runtime: one worker and its blocking pool (the store's
/// reads), every thread at nice [`VIEWER_NICE`] (Linux nice values are per
/// thread), so that the app's requests win the CPU from the viewer's
/// queries. Before, 8 clients asking for 1,500 traces at once cut
/// hello-rust from ~5,000 to 350 requests/s (p99 536 ms): the answers'
/// JSON was built on the app's two workers.
fn viewer_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("polytrace-viewer")
        .on_thread_start(|| {
            #[cfg(target_os = "linux")]
            // SAFETY: setpriority on this thread's own id; no memory is
            // passed. A failure leaves the thread at the default priority.
            unsafe {
                libc::setpriority(
                    libc::PRIO_PROCESS,
                    libc::gettid() as libc::id_t,
                    VIEWER_NICE,
                );
            }
        })
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the viewer's runtime: {e}"))
}

/// The nice value of the viewer's threads (0 is the default; 19 the
/// lowest priority): at 10 a busy viewer thread gets about a tenth of the
/// CPU a busy app thread gets.
const VIEWER_NICE: libc::c_int = 10;

/// The viewer's listener. The default address being taken (another
/// polytrace, a local Jaeger) is a warning; an address asked for is a must.
async fn bind_viewer(addr: &str) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let explicit = addr != DEFAULT_UI;
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(Some(l)),
        Err(e) if !explicit => {
            tracing::warn!(
                "viewer not started: cannot listen on {addr}: {e} (pass --ui ADDR, or --no-ui)"
            );
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!("--ui {addr}: cannot listen: {e}")),
    }
}

fn check(path: &Path, max_instances: u32, cache_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let manifest = Manifest::load(path)?;
    let mut problems = Vec::new();
    match Settings::from_env(&manifest.telemetry) {
        Ok(settings) => {
            for warning in settings.warnings {
                eprintln!("warning: {warning}");
            }
        }
        Err(e) => problems.push(format!("telemetry settings: {e}")),
    }
    let runtime = Runtime::new(max_memory(&manifest), max_instances, cache_dir)?;
    if let Err(diags) = load_components(&manifest, &runtime) {
        problems.extend(diags.iter().map(|d| d.to_string()));
    }
    if problems.is_empty() {
        println!(
            "{}: app `{}` is valid ({} component{})",
            manifest.path.display(),
            manifest.app,
            manifest.components.len(),
            if manifest.components.len() == 1 {
                ""
            } else {
                "s"
            }
        );
        Ok(())
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        anyhow::bail!(
            "{} problem{} found",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        )
    }
}

/// SIGINT or SIGTERM (Ctrl-C elsewhere), listened for from the moment this
/// returns: the handlers are installed here, not when the future is first
/// polled, so a signal sent right after the `listening` line stops the app
/// cleanly instead of killing it (the default action) before a task has
/// run. Must be called within the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let recv = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            let (interrupt, terminate) = signals;
            tokio::select! {
                () = recv(interrupt) => {}
                () = recv(terminate) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
    }
}
