//! `floodgate`: list, ban and unban clients in a floodgate SQLite file, a Redis server, a
//! Redis Cluster or a running app's admin API; import a FlaskFloodgate database.
//!
//! Exit status: 0 when the command did what it says, 1 when it failed (a store or HTTP
//! error, an unreadable file), 2 for a usage error (a bad option, client or duration).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod backend;
mod http;
mod import;
mod output;

use backend::Backend;

#[derive(Parser, Debug)]
#[command(
    name = "floodgate",
    version,
    about = "Operate floodgate: see and lift bans, ban clients, find the worst offenders."
)]
struct Cli {
    /// A floodgate SQLite file.
    #[arg(long, value_name = "FILE", group = "where")]
    sqlite: Option<std::path::PathBuf>,
    /// The table in the SQLite file (default: floodgate_clients).
    #[arg(long)]
    table: Option<String>,
    /// A Redis server holding a floodgate's state.
    #[arg(long, value_name = "URL", group = "where", group = "redis_store")]
    redis: Option<String>,
    /// A Redis Cluster holding a floodgate's state: the URLs of one or more of its nodes,
    /// separated by commas (one reachable node is enough).
    #[arg(
        long,
        value_name = "URL[,URL..]",
        value_delimiter = ',',
        group = "where",
        group = "redis_store"
    )]
    redis_cluster: Option<Vec<String>>,
    /// The key prefix of the floodgate in Redis.
    #[arg(long, default_value = "floodgate", requires = "redis_store")]
    prefix: String,
    /// A running app's admin API, such as http://127.0.0.1:8080/_floodgate.
    #[arg(long, value_name = "URL", group = "where")]
    url: Option<String>,
    /// The admin token (default: the FLOODGATE_TOKEN environment variable).
    #[arg(
        long,
        env = "FLOODGATE_TOKEN",
        hide_env_values = true,
        requires = "url"
    )]
    token: Option<String>,
    /// IPv6 clients are keyed by this prefix, as the app keys them.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u8).range(1..=128))]
    ipv6_prefix: u8,
    /// JSON for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The bans in force, soonest-ending first.
    Bans,
    /// One client's ban and last request.
    Status(ClientArg),
    /// Bans a client for a while (--for 1h) or forever (--forever).
    Ban(BanArgs),
    /// Bans a client forever.
    Blacklist(ClientArg),
    /// Lifts a client's ban or blacklist.
    Unban(ClientArg),
    /// The clients refused or reported most lately (needs --url: the app counts them).
    Top {
        /// How many clients.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Carries a FlaskFloodgate 1.0.x SQLite file's blacklists (and, with --amount, its
    /// running blocks) into a floodgate SQLite file.
    ImportFlaskfloodgate(import::ImportArgs),
}

#[derive(Args, Debug)]
struct ClientArg {
    /// An IP address, a network (2001:db8::/64) or a custom key.
    client: String,
}

#[derive(Args, Debug)]
struct BanArgs {
    /// An IP address, a network (2001:db8::/64) or a custom key.
    client: String,
    /// How long: 30s, 10m, 1h, 7d.
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_length, required_unless_present = "forever")]
    length: Option<Duration>,
    /// Forever (a blacklist).
    #[arg(long, conflicts_with = "length")]
    forever: bool,
}

fn parse_length(text: &str) -> Result<Duration, String> {
    match floodgate::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("a ban lasts longer than 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A failure of the command: its message, and whether it was the user's (exit 2).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) usage: bool,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            usage: false,
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            usage: true,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = actix_rt::System::new().block_on(run(cli));
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("floodgate: {}", f.message);
            ExitCode::from(if f.usage { 2 } else { 1 })
        }
    }
}

async fn run(cli: Cli) -> Result<String, Failure> {
    if let Command::ImportFlaskfloodgate(args) = &cli.command {
        return import::run(args, cli.json).await;
    }
    let backend = Backend::open(&cli).await?;
    let json = cli.json;
    match cli.command {
        Command::Bans => Ok(output::bans(&backend.bans().await?, json)),
        Command::Status(c) => Ok(output::status(&backend.status(&c.client).await?, json)),
        Command::Ban(b) => {
            let length = if b.forever { None } else { b.length };
            let st = backend.ban(&b.client, length).await?;
            Ok(output::status(&st, json))
        }
        Command::Blacklist(c) => Ok(output::status(&backend.ban(&c.client, None).await?, json)),
        Command::Unban(c) => Ok(output::unbanned(backend.unban(&c.client).await?, json)),
        Command::Top { limit } => Ok(output::top(&backend.top(limit).await?, json)),
        Command::ImportFlaskfloodgate(args) => import::run(&args, json).await,
    }
}
