//! archvsync compatibility: `runmirrors` (the command a hub's ftpsync runs after its own sync)
//! and [`import`] (`import-runmirrors`, converting `runmirrors.mirror` files).
//!
//! pushmirror answers as runmirrors in two ways: the `runmirrors` subcommand, and when the binary
//! is invoked under the name `runmirrors` (a symlink that ftpsync finds in `$BINDIR` or `$PATH`).
//! Which mirror gets which strings is runmirrors' `signal()`, reproduced in [`crate::push::plan::part_of`].
//!
//! ftpsync runs under sshd with a minimal environment and sends its output to its own log file,
//! so the config is found without the caller's shell ([`discover_config`]) and the report starts
//! with a line saying what was pushed, when, and why.

pub mod args;
mod conf;
mod findings;
pub mod import;
mod ssh_options;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{self, Config, DEFAULT_CONFIG};
use crate::push::engine::Options;
use crate::push::plan::PushRequest;
use crate::push::report::Report;
use crate::vocab::model::Timestamp;
use crate::vocab::output::{self, Ended, Format, Stop, Verdict};
use args::{RunmirrorsArgs, RunmirrorsCli};

/// The name ftpsync calls (`${BINDIR:+$BINDIR/}runmirrors`).
pub const RUNMIRRORS: &str = "runmirrors";

/// The report's origin for pushes made through runmirrors.
pub const ORIGIN: &str = "runmirrors";

/// Whether the program was started as `runmirrors` (by the file name in argv\[0\]).
pub fn invoked_as_runmirrors(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name() == Some(OsStr::new(RUNMIRRORS))
}

/// The config runmirrors uses: `$PUSHMIRROR_CONFIG`, else the user's
/// `~/.config/pushmirror/pushmirror.yaml` if it exists, else `/etc/pushmirror/pushmirror.yaml`.
///
/// The home directory comes from `$HOME`, else the password database, so neither a login shell
/// nor a profile is needed (ftpsync under sshd has neither).
pub fn discover_config() -> PathBuf {
    let from_env = std::env::var_os("PUSHMIRROR_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from);
    from_env.unwrap_or_else(|| config_under(std::env::home_dir().as_deref()))
}

/// The user's config if `home` has one, else the system-wide file.
fn config_under(home: Option<&Path>) -> PathBuf {
    home.map(|h| h.join(".config/pushmirror/pushmirror.yaml"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

/// pushmirror invoked as `runmirrors`: discovered config, table report.
pub async fn run_standalone(cli: RunmirrorsCli) -> u8 {
    output::conclude(run(&discover_config(), &cli.args, Format::Table).await)
}

/// One runmirrors push of the archive's mirrors.
pub async fn run(config_path: &Path, args: &RunmirrorsArgs, format: Format) -> Ended {
    let shown = |errors: config::ConfigErrors| {
        eprintln!("{errors}");
        eprintln!("{}: {} error(s); runmirrors pushed nothing", config_path.display(), errors.0.len());
        Stop::Shown
    };
    let config = config::load(config_path).map_err(shown)?;
    // The ownership rule, said for runmirrors' usual caller: ftpsync runs it as the mirror user,
    // who cannot `sudo`; that user needs a configuration of its own.
    if let Err(refused) = crate::sys::owner::require_owner(&config.state_dir, config_path) {
        eprintln!("{}: {refused}", config_path.display());
        eprintln!(
            "runmirrors pushed nothing. Called from ftpsync (HUB=true), it runs as ftpsync's user: give that user \
             its own configuration, ~/.config/pushmirror/pushmirror.yaml, with a state_dir it owns."
        );
        return Err(Stop::Shown);
    }
    config::verify_files(&config).map_err(shown)?;
    let request = PushRequest {
        archive: args.archive(),
        kind: args.kind,
        from_ftpsync: args.from_ftpsync,
        ..PushRequest::default()
    };
    let report = push(&config, &request).await.map_err(|e| Stop::Usage(format!("runmirrors: {e:#}")))?;
    if format == Format::Table {
        println!("{}", header(&report, args, config_path));
    }
    output::print(&report, format);
    Ok(verdict(&report, args))
}

/// Plans and carries out the push with the production transports, between the archive's
/// hooks (runmirrors' HOOK1 and HOOK3), its notifications queued and delivered.
async fn push(config: &Config, request: &PushRequest) -> anyhow::Result<Report> {
    let mut plan = crate::push::plan_push(config, request)?;
    let oneshot = crate::notify::oneshot::begin(config, &mut plan).await;
    let report = crate::push::once(config, &plan, &Options::default(), ORIGIN).await?;
    oneshot.end(config, &report).await;
    Ok(report)
}

/// The first line of the report: in ftpsync's log it says what this block of lines is.
fn header(report: &Report, args: &RunmirrorsArgs, config_path: &Path) -> String {
    let from = if args.from_ftpsync { " -f (from ftpsync)" } else { "" };
    format!(
        "{} runmirrors -a {} -k {}{from}: pushmirror {} with {}",
        Timestamp(SystemTime::now()),
        report.archive,
        args.kind,
        env!("CARGO_PKG_VERSION"),
        config_path.display()
    )
}

/// The report's verdict, except that failed mirrors exit 0 under `-f`: ftpsync runs runmirrors
/// under `set -e`, so a non-zero exit would end the hub's own, successful sync as failed (skipping
/// its last hook), and its upstream would then withhold the hub's stage 2. runmirrors exited 0.
fn verdict(report: &Report, args: &RunmirrorsArgs) -> Verdict {
    let verdict = report.verdict();
    if verdict == Verdict::Failed && args.from_ftpsync {
        eprintln!(
            "runmirrors: {} mirror(s) failed (see above); exit 0 because -f: ftpsync's sync itself succeeded",
            report.summary.failed
        );
        return Verdict::Clean;
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_file_name_runmirrors_selects_runmirrors_mode() {
        assert!(invoked_as_runmirrors(OsStr::new("runmirrors")));
        assert!(invoked_as_runmirrors(OsStr::new("/home/archvsync/bin/runmirrors")));
        assert!(!invoked_as_runmirrors(OsStr::new("/usr/bin/pushmirror")));
        assert!(!invoked_as_runmirrors(OsStr::new("runmirrors.sh")));
    }

    #[test]
    fn the_user_config_is_used_only_when_it_exists() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(config_under(Some(home.path())), PathBuf::from(DEFAULT_CONFIG));
        assert_eq!(config_under(None), PathBuf::from(DEFAULT_CONFIG));
        let user = home.path().join(".config/pushmirror/pushmirror.yaml");
        std::fs::create_dir_all(user.parent().unwrap()).unwrap();
        std::fs::write(&user, "").unwrap();
        assert_eq!(config_under(Some(home.path())), user);
    }
}
