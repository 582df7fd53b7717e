//! The command line: which config files to read, flags that override them, and the
//! `--print-config` / `--check-config` modes.
//!
//! Precedence, lowest first: built-in defaults, the config files (each `--config`
//! overriding the keys it sets in the ones before it; `./shardcast.toml` when no
//! `--config` is given), then flags. The merged result is validated once, so a flag
//! can repair a file's bad value and the error always names the key that is wrong.

use std::fmt;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::Parser;

use super::config::{parse_layers, Config, ConfigError, Cores, LogFormat};

/// The file used when no `--config` is given, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "shardcast.toml";

/// Exit status for a configuration error (sysexits' EX_CONFIG). The systemd unit's
/// `RestartPreventExitStatus=78` keeps it from restarting into the same error.
pub const EXIT_CONFIG_ERROR: u8 = 78;

/// Config files larger than this are refused: a config is a few KiB, and a mistaken
/// path such as /dev/zero must not fill memory.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

#[derive(Clone, Debug, Default, Parser)]
#[command(
    name = "shardcast",
    version,
    about = "Thread-per-core live video streaming server: RTMP, HTTP-FLV, HLS, LL-HLS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Config file (TOML). Repeat to layer overlays: later files override the keys
    /// they set. Without it, ./shardcast.toml is used if present.
    #[arg(long = "config", value_name = "PATH", global = true)]
    pub config: Vec<PathBuf>,
    /// CPUs to run shards on: "all" or a list such as "0-3,8" [server.cores].
    #[arg(long, value_name = "LIST")]
    pub cores: Option<String>,
    /// IP address all listeners bind to, e.g. 0.0.0.0 [server.bind].
    #[arg(long, value_name = "IP")]
    pub bind: Option<IpAddr>,
    /// RTMP port [rtmp.port].
    #[arg(long, value_name = "PORT")]
    pub rtmp_port: Option<u16>,
    /// HTTP port for HTTP-FLV, HLS, API and metrics [http.port].
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// Log line format [server.log_format].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Tracing filter, e.g. "info,shardcast_proto=debug"; RUST_LOG still wins
    /// [server.log_level].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Directory recordings are written under [record.dir].
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
    /// Print the effective configuration (files plus flags) as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Validate the configuration and exit: 0 if it is usable.
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Print a signed token for one stream (or APP/* for a whole app), with the keys
    /// of the effective config ([[auth.keys]]).
    Token(TokenArgs),
}

#[derive(Clone, Debug, clap::Args)]
pub struct TokenArgs {
    /// The stream, APP/STREAM, or APP/* for every stream of the app.
    #[arg(long, value_name = "APP/STREAM")]
    pub stream: String,
    /// What the token allows.
    #[arg(long, value_parser = ["publish", "play"])]
    pub action: String,
    /// Seconds until it expires.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=10 * 365 * 86_400))]
    pub ttl: u64,
    /// The key to sign with; default the first of [[auth.keys]].
    #[arg(long, value_name = "ID")]
    pub key_id: Option<String>,
    /// Bind the token to this client IP.
    #[arg(long, value_name = "IP")]
    pub ip: Option<IpAddr>,
}

/// Mint the token `args` asks for with the keys of `config`.
pub fn mint_token(config: &Config, args: &TokenArgs) -> Result<String, String> {
    use proto::auth::{Action, Scope};
    use proto::media::StreamKey;
    let keys =
        crate::server::access::keys::load_keyring(&config.auth).map_err(|e| e.to_string())?;
    if keys.is_empty() {
        return Err("no signing keys: add an [[auth.keys]] entry to the config (see the README, \"Access control\")".into());
    }
    let scope = match args.stream.strip_suffix("/*") {
        Some(app) => {
            StreamKey::new(app, "x").map_err(|e| format!("--stream {}: {e}", args.stream))?;
            Scope::App(app.to_owned())
        }
        None => Scope::Stream(
            StreamKey::from_path(&format!("/{}", args.stream))
                .ok_or_else(|| format!("--stream {}: expected APP/STREAM or APP/*", args.stream))?,
        ),
    };
    let action: Action = args
        .action
        .parse()
        .map_err(|_| format!("--action {}", args.action))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    keys.mint(
        args.key_id.as_deref(),
        action,
        &scope,
        args.ip,
        now + args.ttl,
    )
    .map_err(|e| e.to_string())
}

/// Where the configuration came from, for the start-up log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// Given with `--config`, in order.
    Files(Vec<PathBuf>),
    /// No `--config`; found at [`DEFAULT_CONFIG_PATH`].
    DefaultFile(PathBuf),
    /// No `--config` and no default file.
    BuiltIn,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Files(paths) => {
                let paths: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
                write!(f, "config file {}", paths.join(" + "))
            }
            ConfigSource::DefaultFile(path) => {
                write!(f, "config file {} (no --config given)", path.display())
            }
            ConfigSource::BuiltIn => {
                f.write_str("built-in defaults (no --config given and no ./shardcast.toml)")
            }
        }
    }
}

/// A validated configuration and where it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub source: ConfigSource,
}

/// What `main` should do after [`startup`].
#[derive(Debug)]
pub enum Startup {
    /// Start the server with this configuration (boxed: it is large and made once).
    Run(Box<Loaded>),
    /// `--print-config` or `--check-config` did their job: exit with status 0.
    Exit,
}

impl Cli {
    /// Apply the flags that were given on top of `config`.
    pub fn apply_overrides(&self, config: &mut Config) -> Result<(), ConfigError> {
        if let Some(cores) = &self.cores {
            config.server.cores = cores.parse::<Cores>()?;
        }
        if let Some(bind) = self.bind {
            config.server.bind = bind;
        }
        if let Some(port) = self.rtmp_port {
            config.rtmp.port = port;
        }
        if let Some(port) = self.http_port {
            config.http.port = port;
        }
        if let Some(format) = self.log_format {
            config.server.log_format = format;
        }
        if let Some(level) = &self.log_level {
            config.server.log_level = level.clone();
        }
        if let Some(dir) = &self.record_dir {
            config.record.dir = dir.clone();
        }
        Ok(())
    }
}

/// Read the config files named by `cli` (or `./shardcast.toml`), apply the flags and
/// validate the result.
pub fn load(cli: &Cli) -> Result<Loaded, ConfigError> {
    load_with_default(cli, Path::new(DEFAULT_CONFIG_PATH))
}

/// [`load`] with the no-`--config` fallback file given explicitly (for tests).
pub fn load_with_default(cli: &Cli, default_path: &Path) -> Result<Loaded, ConfigError> {
    let (source, texts) = if cli.config.is_empty() {
        match read_config(default_path) {
            Ok(text) => (
                ConfigSource::DefaultFile(default_path.to_owned()),
                vec![(default_path.to_owned(), text)],
            ),
            Err(ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                (ConfigSource::BuiltIn, Vec::new())
            }
            Err(e) => return Err(e),
        }
    } else {
        let texts = cli
            .config
            .iter()
            .map(|path| Ok((path.clone(), read_config(path)?)))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        (ConfigSource::Files(cli.config.clone()), texts)
    };
    let origins: Vec<String> = texts.iter().map(|(p, _)| p.display().to_string()).collect();
    let mut config = parse_layers(
        origins
            .iter()
            .zip(&texts)
            .map(|(origin, (_, text))| (origin.as_str(), text.as_str())),
    )?;
    cli.apply_overrides(&mut config)?;
    config.validate()?;
    Ok(Loaded { config, source })
}

fn read_config(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(read_error(std::io::Error::other(format!(
            "larger than {MAX_CONFIG_BYTES} bytes; is this a config file?"
        ))));
    }
    Ok(text)
}

/// Load the configuration and handle `--print-config` and `--check-config`, writing
/// their output to `out` (stdout in `main`). Errors are for `main` to print to stderr
/// before exiting non-zero.
pub fn startup(cli: &Cli, out: &mut dyn Write) -> Result<Startup, ConfigError> {
    let loaded = load(cli)?;
    if let Some(Command::Token(args)) = &cli.command {
        let token = mint_token(&loaded.config, args).map_err(ConfigError::Token)?;
        writeln!(out, "{token}").map_err(ConfigError::Output)?;
        return Ok(Startup::Exit);
    }
    if cli.print_config {
        let text = loaded.config.to_toml()?;
        writeln!(
            out,
            "# effective shardcast configuration, from {}\n",
            loaded.source
        )
        .and_then(|()| out.write_all(text.as_bytes()))
        .map_err(ConfigError::Output)?;
    }
    if cli.check_config {
        writeln!(out, "shardcast: configuration OK ({})", loaded.source)
            .map_err(ConfigError::Output)?;
    }
    if cli.print_config || cli.check_config {
        return Ok(Startup::Exit);
    }
    Ok(Startup::Run(Box::new(loaded)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("shardcast").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn flag_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        for flag in [
            "--config <PATH>",
            "--cores <LIST>",
            "--print-config",
            "--check-config",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
    }

    #[test]
    fn flags_parse_into_overrides() {
        let cli = cli(&[
            "--cores",
            "0-1",
            "--bind",
            "0.0.0.0",
            "--rtmp-port",
            "1936",
            "--http-port",
            "8081",
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--record-dir",
            "/srv/rec",
        ]);
        let mut config = Config::default();
        cli.apply_overrides(&mut config).unwrap();
        assert_eq!(config.server.cores, Cores::List(vec![0, 1]));
        assert_eq!(config.server.bind.to_string(), "0.0.0.0");
        assert_eq!((config.rtmp.port, config.http.port), (1936, 8081));
        assert_eq!(config.server.log_format, LogFormat::Json);
        assert_eq!(config.server.log_level, "debug");
        assert_eq!(config.record.dir, PathBuf::from("/srv/rec"));
    }

    #[test]
    fn bad_flag_values_are_refused() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("shardcast").chain(args.iter().copied()))
        };
        assert!(parse(&["--rtmp-port", "70000"]).is_err());
        assert!(parse(&["--bind", "localhost"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
        let err = cli(&["--cores", "3-1"]).apply_overrides(&mut Config::default());
        assert!(err
            .unwrap_err()
            .to_string()
            .starts_with("server.cores = \"3-1\""));
    }

    #[test]
    fn missing_default_file_means_built_in_defaults() {
        let loaded =
            load_with_default(&Cli::default(), Path::new("/nonexistent/shardcast.toml")).unwrap();
        assert_eq!(loaded.source, ConfigSource::BuiltIn);
        assert_eq!(loaded.config, Config::default());
    }

    #[test]
    fn oversized_config_is_refused() {
        let cli = cli(&["--config", "/dev/zero"]);
        let err = load(&cli).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read config file /dev/zero"),
            "{err}"
        );
    }
}
