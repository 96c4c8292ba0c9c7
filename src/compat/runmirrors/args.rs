//! The command lines of archvsync's `runmirrors` and of `import-runmirrors` (clap derive):
//! `pushmirror runmirrors`, a `runmirrors` symlink and `import-runmirrors` share them.

use std::path::PathBuf;

use clap::{Args, Parser};

use crate::push::plan::PushKind;

/// The options of archvsync's `runmirrors` (getopts `a:k:fh`), shared by `pushmirror runmirrors`
/// and a `runmirrors` symlink.
#[derive(Debug, Args, Clone)]
pub struct RunmirrorsArgs {
    /// Archive to push (runmirrors read runmirrors-ARCHIVE.conf); default: the only configured one.
    #[arg(short = 'a', value_name = "ARCHIVE")]
    pub archive: Option<String>,
    /// Old style `runmirrors ARCHIVE`, the same as -a ARCHIVE.
    #[arg(value_name = "ARCHIVE", conflicts_with = "archive")]
    pub old_style_archive: Option<String>,
    /// Type of push: all, stage2 or mhop. mhop: complete push, mhop mirrors told sync:mhop
    /// (with -f: only stage 1 to staged and mhop mirrors). all: complete push without sync:mhop.
    /// stage2: stage 2 to staged and mhop mirrors, sync:all to the others.
    #[arg(short = 'k', value_name = "KIND", default_value = "mhop")]
    pub kind: PushKind,
    /// Run from within ftpsync (HUB=true). Mirror failures are reported but exit 0, as runmirrors
    /// did: ftpsync runs it under `set -e`, and a non-zero exit would fail the hub's own sync.
    #[arg(short = 'f')]
    pub from_ftpsync: bool,
}

impl RunmirrorsArgs {
    /// The archive named by `-a` or old style; an empty name means none (ftpsync's `sync:archive:`).
    pub fn archive(&self) -> Option<String> {
        self.archive.clone().or_else(|| self.old_style_archive.clone()).filter(|a| !a.is_empty())
    }
}

/// The command line of pushmirror invoked as `runmirrors`: runmirrors' options, nothing else.
#[derive(Debug, Parser)]
#[command(
    name = "runmirrors",
    about = "pushmirror as archvsync's runmirrors: push the archive's mirrors over SSH and print the report",
    long_about = None,
    after_help = "Config: $PUSHMIRROR_CONFIG, else $HOME/.config/pushmirror/pushmirror.yaml if it exists, \
                  else /etc/pushmirror/pushmirror.yaml.\n\
                  Exit: 0 all ok (or -f), 1 a mirror failed, 2 usage or config error.",
    max_term_width = 100
)]
pub struct RunmirrorsCli {
    /// runmirrors' options.
    #[command(flatten)]
    pub args: RunmirrorsArgs,
}

/// Arguments of `import-runmirrors`.
#[derive(Debug, Args, Clone)]
pub struct ImportArgs {
    /// The runmirrors.mirror file to convert.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Its runmirrors.conf: KEYFILE, PUSHDELAY and SSH_OPTS are converted, the rest reported.
    #[arg(long, value_name = "FILE")]
    pub conf: Option<PathBuf>,
    /// Where to write SHORTNAME.yaml files (created if missing).
    #[arg(long, value_name = "DIR", default_value = "mirrors.d")]
    pub out: PathBuf,
    /// The archive these mirrors carry [default: NAME of a runmirrors-NAME.mirror file].
    #[arg(long, value_name = "NAME")]
    pub archive: Option<String>,
    /// The home directory of the user who will push: runmirrors ran in its user's home, so a
    /// relative KEYFILE is resolved there [default: the service user pushmirror's home].
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
}
