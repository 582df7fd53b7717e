//! `shardcast`: parse flags and config, start logging, run the shards until a signal.

use std::process::ExitCode;

use clap::Parser;
use shardcast::server::cli::{self, Cli, Startup};

fn main() -> ExitCode {
    let args = Cli::parse();
    let loaded = match cli::startup(&args, &mut std::io::stdout()) {
        Ok(Startup::Run(loaded)) => loaded,
        Ok(Startup::Exit) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardcast: {e}");
            // 78 (EX_CONFIG): the systemd unit does not restart on a config error.
            return ExitCode::from(cli::EXIT_CONFIG_ERROR);
        }
    };
    if let Err(e) = shardcast::server::logging::init(
        loaded.config.server.log_format,
        &loaded.config.server.log_level,
    ) {
        eprintln!("shardcast: {e}");
        return ExitCode::from(2);
    }
    tracing::info!("using {}", loaded.source);
    match shardcast::server::run(loaded.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("shardcast: {e}");
            ExitCode::FAILURE
        }
    }
}
