//! The command line: clap definitions and one function per command. `main.rs` only
//! calls [`main`].

mod admin_client;
mod demo;
mod demo_active;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::daemon::{self, Listeners};

#[derive(Debug, Parser)]
#[command(
    name = "jenkins-ha-proxy",
    version,
    about = "Active/passive HA reverse proxy for Jenkins masters sharing one JENKINS_HOME",
    long_about = "Active/passive HA reverse proxy for Jenkins masters sharing one JENKINS_HOME.\n\n\
        Exactly one master (the active one) receives traffic. A heartbeat probes every master;\n\
        when the active one fails, traffic moves to the next healthy master in file order.\n\n\
        First time? Run `jenkins-ha-proxy demo` and follow what it prints."
)]
struct Cli {
    /// Log format for the daemon's logs (stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Where the running daemon's admin API is, and its token.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// Base URL of the admin listener.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8404")]
    admin: String,
    /// File holding the admin token (as in `admin.token_file`), if one is set.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// With an https:// --admin (`[admin.tls]`): PEM file of the CA that signed the
    /// admin certificate. Default: the system's CA roots.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground (what the systemd unit starts).
    Run {
        /// Path of the TOML config file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config file and print a summary; exits 1 on an invalid file.
    Check {
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show the running daemon's /status as a table.
    Status {
        /// Base URL of the admin listener.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8404")]
        admin: String,
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// With an https:// --admin: PEM file of the CA that signed the admin
        /// certificate. Default: the system's CA roots.
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
    },
    /// Planned switchover: move traffic to a healthy master now (the old one is drained).
    Switchover {
        /// The master to make active.
        #[arg(long, value_name = "NAME")]
        to: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Take a master out of the election for maintenance (traffic moves away if it is active).
    Disable {
        /// The master's name.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Put a master back into the election after maintenance.
    Enable {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make the running daemon re-read its config file (like `systemctl reload`).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Start two sample masters and the proxy on loopback, to watch a failover happen.
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where the demo admin API listens.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8404")]
        admin_listen: String,
        /// Standby mode of both sample masters: none, hot (quiet-down, reload before
        /// traffic) or cold (started by a command before traffic).
        #[arg(long, value_name = "MODE", default_value = "none")]
        standby: String,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key).
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Three sample replicas that all take traffic (pool.mode = "active-active",
        /// as in front of CloudBees CI High Availability), with loads you set.
        #[arg(long, conflicts_with = "standby")]
        active_active: bool,
    },
}

/// Parses the command line, initialises logging, runs the command. Errors are printed
/// with their whole chain and turn into exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    log_panics();
    // Our configs name the provider; this is for any library that asks for a default.
    crate::tls::install_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Panics (bugs) go to the log like everything else, JSON included, with where they
/// happened. A panic in a connection's task ends that connection only; one in a task
/// the daemon cannot do without makes it exit (see `daemon::Fatal`).
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|at| format!("{}:{}", at.file(), at.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        tracing::error!(%location, thread, "panic: {message} (a bug: please report it with this line)");
    }));
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => run(&config).await,
        Command::Check { config } => check(&config),
        Command::Status {
            admin,
            json,
            cacert,
        } => status::print(&admin, cacert.as_deref(), json).await,
        Command::Switchover { to, admin } => {
            admin_client::call(&admin, &format!("/switchover?to={}", encode(&to))).await
        }
        Command::Disable { name, admin } => {
            admin_client::call(&admin, &format!("/backends/{}/disable", encode(&name))).await
        }
        Command::Enable { name, admin } => {
            admin_client::call(&admin, &format!("/backends/{}/enable", encode(&name))).await
        }
        Command::Reload { admin } => admin_client::call(&admin, "/reload").await,
        Command::Demo {
            listen,
            admin_listen,
            standby,
            tls_cert,
            tls_key,
            active_active,
        } => {
            let tls = tls_cert.zip(tls_key);
            demo::run(demo::Demo {
                listen: &listen,
                admin_listen: &admin_listen,
                standby: &standby,
                tls: tls.as_ref(),
                active_active,
            })
            .await
        }
    }
}

async fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    // Fail at start rather than refuse every admin call later.
    admin_token(&config)?;
    crate::sys::fd_limit::prepare(&fd_budget(&config));
    let listeners = Listeners::bind(&config).await?;
    daemon::run(
        config,
        Some(path.to_path_buf()),
        listeners,
        daemon::shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// What the configured limits may hold open, for the open-file limit check.
fn fd_budget(config: &Config) -> crate::sys::fd_limit::Budget {
    let sum = |counts: &mut dyn Iterator<Item = usize>| counts.map(|n| n as u64).sum();
    crate::sys::fd_limit::Budget {
        clients: config.proxy.max_connections as u64,
        masters: sum(&mut config.backends.iter().map(|b| b.max_connections)),
        forwards: sum(&mut config.tcp.iter().map(|t| t.max_connections)),
    }
}

/// `check` fails where `run` would: on the config file, on `admin.token_file` and on
/// the `[upstream_tls]` files, read by the same functions. An unusable `jenkins.api_token_file` does not stop `run`
/// (it logs an error and hot promotion fails), so `check` warns about it.
fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    admin_token(&config)?;
    // As `run` builds it: the PEM files of [upstream_tls], or the system's roots.
    daemon::upstream_tls(&config)?;
    if let Err(error) = daemon::jenkins_credentials(&config) {
        eprintln!("warning: {error}");
    }
    if config.pool.active_active() {
        eprintln!("warning: {}", crate::config::ACTIVE_ACTIVE_WARNING);
    }
    let certificates = server_certificates(&config)?;
    println!("{} is valid.\n", path.display());
    print!("{}", config.summary());
    print!("{certificates}");
    Ok(())
}

/// Reads `[proxy.tls]`'s files as the daemon will (an unusable one fails `check`),
/// and describes each certificate; those that expire soon get a warning.
fn server_certificates(config: &Config) -> anyhow::Result<String> {
    use std::fmt::Write;
    let served = crate::tls::ListenerCertificates::load(config)?.served();
    if served.is_empty() {
        return Ok(String::new());
    }
    let now = std::time::SystemTime::now();
    let mut text = String::from("TLS certificates:\n");
    for (listener, served) in &served {
        let days_left = served.info.days_left(now);
        let chosen_for = if served.server_names.is_empty() {
            "default".to_owned()
        } else {
            served.server_names.join(", ")
        };
        let _ = writeln!(
            text,
            "  {listener}.tls {} ({chosen_for}): {}, names [{}], expires {} ({days_left} days left)",
            served.cert_file.display(),
            served.info.subject,
            served.info.names.join(", "),
            served.info.not_after_text(),
        );
        if days_left < crate::tls::EXPIRY_WARNING_DAYS {
            eprintln!(
                "warning: {}: the certificate expires in {days_left} days ({}); renew it and run \
                 `jenkins-ha-proxy reload`",
                served.cert_file.display(),
                served.info.not_after_text()
            );
        }
    }
    Ok(text)
}

/// Reads `admin.token_file` (if set) as the daemon will; the error names the file.
fn admin_token(config: &Config) -> anyhow::Result<()> {
    crate::admin::Token::load(config.admin.token_file.as_deref())?;
    Ok(())
}

/// Master names are limited to [A-Za-z0-9._-] by validation; anything else is
/// percent-encoded so a typo still reaches the daemon and gets its "no master" answer.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
