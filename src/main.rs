#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use pushmirror::compat::runmirrors::args::RunmirrorsCli;
use pushmirror::operator::cli::Cli;

/// jemalloc, not glibc's malloc: a daemon's memory stays level over months of pushes (README,
/// "Soak").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // ftpsync runs `runmirrors` by name; a symlink to pushmirror answers with runmirrors' options.
    if std::env::args_os().next().is_some_and(|argv0| pushmirror::compat::runmirrors::invoked_as_runmirrors(&argv0)) {
        let cli = RunmirrorsCli::parse();
        pushmirror::sys::fdlimit::raise();
        pushmirror::sys::logging::init(0, false);
        return block_on(pushmirror::compat::runmirrors::run_standalone(cli));
    }
    let cli = Cli::parse_args();
    // Every trigger in flight is a socket: the soft open-file limit goes up to the hard one —
    // except in `receive`, whose sync commands would inherit it.
    if !matches!(cli.command, pushmirror::operator::cli::Command::Receive { .. }) {
        pushmirror::sys::fdlimit::raise();
    }
    // Services log what they do (journald); one-shot commands only what goes wrong.
    let daemon = matches!(
        cli.command,
        pushmirror::operator::cli::Command::Daemon { .. } | pushmirror::operator::cli::Command::Receive { .. }
    );
    pushmirror::sys::logging::init(cli.verbose + u8::from(daemon), cli.quiet);
    block_on(pushmirror::operator::commands::run(cli))
}

fn block_on(work: impl Future<Output = u8>) -> ExitCode {
    use pushmirror::vocab::output::{Stop, conclude};
    let runtime = match pushmirror::sys::runtime::build() {
        Ok(rt) => rt,
        Err(e) => {
            return ExitCode::from(conclude(Err(Stop::usage(format_args!("cannot start the async runtime: {e}")))));
        }
    };
    ExitCode::from(runtime.block_on(work))
}
