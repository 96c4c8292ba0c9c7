#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use pushmirror::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Services log what they do (journald); one-shot commands only what goes wrong.
    let daemon =
        matches!(cli.command, pushmirror::cli::Command::Daemon { .. } | pushmirror::cli::Command::Receive { .. });
    pushmirror::init_logging(cli.verbose + u8::from(daemon), cli.quiet);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(pushmirror::commands::EXIT_USAGE);
        }
    };
    ExitCode::from(runtime.block_on(pushmirror::commands::run(cli)))
}
