//! The command line: `serve`, `demo`, `simulate`, `status`. Parses flags into configuration
//! layers, sets up logging, and runs the command. Bad configuration exits 64 with one line
//! naming the key, before any port is bound.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::app::{App, AppOptions};
use crate::config::{self, Config, ConfigError, Layers, LogFormat};
use crate::sim::{SimOptions, SimPlatform, Simulator};

/// Exit status for bad configuration (EX_CONFIG would be 78; the contract fixes 64, EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(
    name = "wxkeeper",
    version,
    about = "Keeps WeChat third-party platform credentials fresh: one fenced leader refreshes, every replica serves."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// One replica: callback receiver, lease, refresher (while leader), token API, admin endpoints.
    Serve(ServeArgs),
    /// The whole system on this machine: simulator, three replicas, embedded store, compressed time.
    Demo(crate::demo::DemoArgs),
    /// The WeChat simulator alone: the component API and a ticket pusher.
    Simulate(SimulateArgs),
    /// What the store holds now: leader, fencing epoch, ticket age, each credential's expiry.
    Status(StatusArgs),
}

/// Settings that may be given as flags; each overrides its `WXKEEPER_*` variable.
#[derive(Args, Debug, Default, Clone)]
pub struct SettingFlags {
    /// TOML configuration file (WXKEEPER_CONFIG).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Store URL: redis://, rediss:// or memory:// (WXKEEPER_REDIS_URL).
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Prefix of every key and channel (WXKEEPER_KEY_PREFIX).
    #[arg(long, value_name = "PREFIX")]
    pub key_prefix: Option<String>,
    /// Callback receiver and token API address (WXKEEPER_LISTEN).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Admin address: /metrics /healthz /readyz /status (WXKEEPER_ADMIN_LISTEN).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Base URL of the WeChat API (WXKEEPER_WECHAT_API_BASE).
    #[arg(long, value_name = "URL")]
    pub wechat_api_base: Option<String>,
    /// Lease time-to-live, at least 1s (WXKEEPER_LEASE_TTL).
    #[arg(long, value_name = "DURATION")]
    pub lease_ttl: Option<String>,
    /// Refresh the token this long before expiry (WXKEEPER_REFRESH_MARGIN).
    #[arg(long, value_name = "DURATION")]
    pub refresh_margin: Option<String>,
    /// Never hand out a pre-auth code with less than this left (WXKEEPER_PRE_AUTH_MARGIN).
    #[arg(long, value_name = "DURATION")]
    pub pre_auth_margin: Option<String>,
    /// Fresh pre-auth codes kept ready per platform (WXKEEPER_PRE_AUTH_POOL).
    #[arg(long, value_name = "N")]
    pub pre_auth_pool: Option<String>,
    /// Refuse pushes whose timestamp is further than this from now (WXKEEPER_CALLBACK_MAX_SKEW).
    #[arg(long, value_name = "DURATION")]
    pub callback_max_skew: Option<String>,
    /// How long SIGTERM waits for in-flight requests (WXKEEPER_SHUTDOWN_GRACE).
    #[arg(long, value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// text or json (WXKEEPER_LOG_FORMAT).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

impl SettingFlags {
    fn into_layers(self) -> Result<Layers, ConfigError> {
        let mut flags = BTreeMap::new();
        let mut put = |name: &str, v: Option<String>| {
            if let Some(v) = v {
                flags.insert(name.to_owned(), v);
            }
        };
        put("redis_url", self.redis_url);
        put("key_prefix", self.key_prefix);
        put("listen", self.listen);
        put("admin_listen", self.admin_listen);
        put("wechat_api_base", self.wechat_api_base);
        put("lease_ttl", self.lease_ttl);
        put("refresh_margin", self.refresh_margin);
        put("pre_auth_margin", self.pre_auth_margin);
        put("pre_auth_pool", self.pre_auth_pool);
        put("callback_max_skew", self.callback_max_skew);
        put("shutdown_grace", self.shutdown_grace);
        put("log_format", self.log_format);
        Layers::from_process(flags, self.config)
    }

    pub fn load(self) -> Result<Config, ConfigError> {
        config::load(&self.into_layers()?)
    }
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub settings: SettingFlags,
}

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// TOML configuration file with the platforms (WXKEEPER_CONFIG).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub sim: SimOptions,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub settings: SettingFlags,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print the refresh history (the last 1,000 refreshes) with intervals.
    #[arg(long)]
    pub history: bool,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("wxkeeper: configuration error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Other(e)) => {
            eprintln!("wxkeeper: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub enum Failure {
    Config(ConfigError),
    Other(anyhow::Error),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(args) => {
            let config = args.settings.load()?;
            init_logging(config.log_format);
            let app = App::build(config, AppOptions::default()).await?;
            let shutdown = signal_shutdown();
            app.run_until_stopped(shutdown).await?;
            Ok(())
        }
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Simulate(args) => {
            let layers = SettingFlags {
                config: args.config,
                ..SettingFlags::default()
            }
            .into_layers()?;
            let config = config::load(&layers)?;
            init_logging(config.log_format);
            let platforms: Vec<SimPlatform> =
                config.platforms.iter().map(SimPlatform::from).collect();
            let listener = tokio::net::TcpListener::bind(args.sim.listen)
                .await
                .map_err(|e| anyhow::anyhow!("binding {}: {e}", args.sim.listen))?;
            let sim = Simulator::new(platforms, args.sim.clone());
            info!(listen = %listener.local_addr().map_err(anyhow::Error::from)?, "WeChat simulator serving");
            let shutdown = signal_shutdown();
            let pusher = sim.spawn_pusher(shutdown.clone());
            sim.serve(listener, shutdown)
                .await
                .map_err(anyhow::Error::from)?;
            let _ = pusher.await;
            Ok(())
        }
        Command::Status(args) => {
            let config = args.settings.load()?;
            let store = {
                use secrecy::ExposeSecret;
                crate::store::open(
                    config.redis_url.expose_secret(),
                    &config.key_prefix,
                    std::time::Duration::from_secs(2),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?
            };
            if args.history {
                let events = store
                    .history(crate::store::HISTORY_LEN)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&events).map_err(anyhow::Error::from)?
                    );
                } else {
                    print!("{}", crate::status::render_history(&events));
                }
                return Ok(());
            }
            let platforms: Vec<String> = config.platforms.iter().map(|p| p.appid.clone()).collect();
            let margin = config.pre_auth_margin.as_millis() as i64;
            let report = crate::status::from_store(&store, &platforms, margin)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)?
                );
            } else {
                print!("{}", crate::status::render_text(&report));
            }
            Ok(())
        }
    }
}

/// Logs to stderr as text or JSON, filtered by `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    init_logging_with("info", format)
}

/// As [`init_logging`] with another default filter.
pub fn init_logging_with(default_filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colours only on a terminal: `kubectl logs` and log shippers get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A token cancelled by the first SIGTERM or SIGINT; a second signal exits at once.
pub fn signal_shutdown() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("signal received: shutting down (a second signal exits at once)");
        t.cancel();
        wait_for_signal().await;
        eprintln!("wxkeeper: second signal: exiting now");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
