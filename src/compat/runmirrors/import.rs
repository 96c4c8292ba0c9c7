//! `import-runmirrors`: archvsync's `runmirrors.mirror` (and `runmirrors.conf`) → `mirrors.d/`.
//!
//! Every mirror line becomes `DIR/SHORTNAME.yaml` with what runmirrors actually did with it:
//! ssh's first port wins (SSH_OPTS before the line's own options), runmirrors' own
//! `-o user=USER` comes first so the line's USER is the login, the archive is the URL's or the
//! file's, a line's key file (`2 KEYFILE`, `-i`, `IdentityFile=`) is the mirror's `identity:` and
//! its bind address (`-b`, `BindAddress=`) its `source_address:`. Whatever a mirror file cannot say is reported as `FILE:LINE: what: why` — nothing is
//! dropped silently — and makes the exit code 1.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::args::ImportArgs;
use super::conf::{self, Conf, DEFAULT_KEYFILE, DEFAULT_PUSHDELAY};
use super::findings::{Finding, Findings};
use super::ssh_options::{self, SshOption};
use crate::config::{MirrorKind, parse_source_address, split_host_port, valid_name};
use crate::vocab::output::{Ended, Format, Stop, Verdict, print_json};

/// One mirror file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorFile {
    /// The mirror's name (SHORTNAME), also the file's stem.
    pub name: String,
    /// The source line it comes from.
    pub line: usize,
    /// The file's contents.
    pub yaml: String,
}

/// The result of converting a runmirrors.mirror (+ runmirrors.conf).
#[derive(Debug, Clone, Default)]
pub struct Conversion {
    /// Mirror files, in source order.
    pub mirrors: Vec<MirrorFile>,
    /// Lines for pushmirror.yaml (the `identity:` key), with comments.
    pub main_config: String,
    /// The sender key runmirrors used, when its path is known.
    pub identity: Option<PathBuf>,
    /// Everything not carried over exactly.
    pub findings: Findings,
}

/// A runmirrors source file: its path and contents.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Where it was read from (for messages).
    pub path: &'a Path,
    /// Its text.
    pub text: &'a str,
}

/// What `--format json` prints.
#[derive(Debug, Serialize)]
struct JsonOutput<'a> {
    written: Vec<PathBuf>,
    identity: Option<&'a Path>,
    findings: &'a [Finding],
    not_converted: usize,
}

/// The `import-runmirrors` command.
pub fn run(args: &ImportArgs, format: Format) -> Ended {
    if let Some(a) = args.archive.as_deref().filter(|a| !valid_name(a)) {
        let why = "archive names may hold only letters, digits, `.`, `_` and `-`";
        return Err(Stop::usage(format_args!("--archive {a}: {why}")));
    }
    let mirrors = read_source(&args.file)?;
    let conf = match &args.conf {
        Some(path) => Some((path.as_path(), read_source(path)?)),
        None => None,
    };
    // runmirrors resolved a relative KEYFILE in the home of the user who pushed: here the service
    // user's, whoever imports (root's would be wrong); on a host without it, this user's.
    let user = crate::sys::owner::SERVICE_USER;
    let home = match (&args.home, crate::sys::owner::home_of(user)) {
        (Some(home), _) => home.clone(),
        (None, Some(home)) => home,
        (None, None) => {
            let home =
                std::env::home_dir().ok_or_else(|| Stop::usage("no home directory: name one with --home DIR"))?;
            eprintln!(
                "import-runmirrors: user {user} does not exist here: a relative KEYFILE is taken in {} (this user's \
                 home); name the pushing user's home with --home DIR",
                home.display()
            );
            home
        }
    };
    let mut conversion = convert(
        Source { path: &args.file, text: &mirrors },
        conf.as_ref().map(|(path, text)| Source { path, text }),
        args.archive.as_deref(),
        &home,
    );
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Stop::usage(format_args!("cannot create {}: {e}", args.out.display())))?;
    let written = write_files(&args.out, &args.file, &conversion.mirrors, &mut conversion.findings);
    for finding in &conversion.findings.0 {
        eprintln!("{finding}");
    }
    let lost = conversion.findings.lost_count();
    match format {
        Format::Table => print!("{}", conversion.main_config),
        Format::Json => print_json(&JsonOutput {
            written: written.clone(),
            identity: conversion.identity.as_deref(),
            findings: &conversion.findings.0,
            not_converted: lost,
        }),
    }
    eprintln!(
        "import-runmirrors: {} mirror file(s) written to {}; {}",
        written.len(),
        args.out.display(),
        match lost {
            0 => "everything converted".to_string(),
            n => format!("{n} thing(s) not converted, listed above"),
        }
    );
    Ok(if lost == 0 { Verdict::Clean } else { Verdict::Failed })
}

fn read_source(path: &Path) -> Result<String, Stop> {
    crate::sys::fsutil::read_bounded_text(path, crate::sys::fsutil::limit::CONFIG_FILE)
        .map_err(|e| Stop::usage(format_args!("cannot read {}: {e}", path.display())))
}

/// Writes each file unless one of that name exists; returns the files written.
fn write_files(dir: &Path, source: &Path, files: &[MirrorFile], findings: &mut Findings) -> Vec<PathBuf> {
    let mut written = Vec::new();
    for file in files {
        let path = dir.join(format!("{}.yaml", file.name));
        // create_new: an existing file is never replaced, even one appearing while we run. Mode
        // 0644 whatever the umask: a mirror file is configuration (no secrets; those live in
        // `*_file`s), written by root and read by the service user (the ownership rule).
        let result = OpenOptions::new().write(true).create_new(true).open(&path);
        let readable = |f: std::fs::File| {
            use std::os::unix::fs::PermissionsExt as _;
            f.set_permissions(std::fs::Permissions::from_mode(0o644)).map(|()| f)
        };
        match result.and_then(readable).and_then(|mut f| f.write_all(file.yaml.as_bytes())) {
            Ok(()) => {
                eprintln!("wrote {} (from {}:{})", path.display(), source.display(), file.line);
                written.push(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                findings.lost(source, file.line, format!("{} already exists: not overwritten", path.display()))
            }
            Err(e) => findings.lost(source, file.line, format!("cannot write {}: {e}", path.display())),
        }
    }
    written
}

/// Converts a runmirrors.mirror (and its runmirrors.conf). `archive` is the pushmirror archive
/// the mirrors belong to; by default the NAME of a `runmirrors-NAME.mirror` file. `home` is the
/// home directory of the user who will push (runmirrors ran in its user's home: relative key
/// files are there).
pub fn convert(mirrors: Source<'_>, conf: Option<Source<'_>>, archive: Option<&str>, home: &Path) -> Conversion {
    let mut findings = Findings::default();
    let conf = conf.map(|c| (c.path, conf::read(c.path, c.text, &mut findings)));
    let mut settings = Settings::new(mirrors.path, conf.as_ref().map(|(p, c)| (*p, c)), archive, &mut findings);
    settings.home = home.to_path_buf();
    let mut converted: Vec<MirrorFile> = Vec::new();
    let mut unnamed_archive_at = None;
    for (index, raw) in mirrors.text.lines().enumerate() {
        let line = index + 1;
        let body = raw.trim();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let Some(target) = mirror_line(mirrors.path, line, body, &settings, &mut findings) else { continue };
        if let Some(first) = converted.iter().find(|m| m.name == target.name) {
            let why =
                format!("duplicate SHORTNAME {} (first on line {}): mirror names are unique", target.name, first.line);
            findings.lost(mirrors.path, line, why);
            continue;
        }
        match target.sent_archive(&settings) {
            None => _ = unnamed_archive_at.get_or_insert(line),
            Some(sent) if target.kind == MirrorKind::Mhop && settings.archive.as_ref().is_some_and(|a| a != sent) => {
                let why = format!(
                    "archive `{sent}`: the mirror file sends it with `command:`, which cannot add `sync:mhop`; \
                     this mhop mirror is not told it is a hub"
                );
                findings.lost(mirrors.path, line, why);
            }
            Some(_) => {}
        }
        converted.push(MirrorFile { name: target.name.clone(), line, yaml: target.to_yaml(&settings, body) });
    }
    if let Some(line) = unnamed_archive_at {
        report_unnamed_archive(mirrors.path, line, settings.archive.as_deref(), &mut findings);
    }
    let (main_config, identity) = settings.main_config(&mut findings);
    Conversion { mirrors: converted, main_config, identity, findings }
}

/// runmirrors without a name sends `sync:archive:`; pushmirror always names the archive.
fn report_unnamed_archive(path: &Path, line: usize, archive: Option<&str>, findings: &mut Findings) {
    let what = "runmirrors sent these mirrors `sync:archive:` with no name (ftpsync then reads its default \
                ftpsync.conf)";
    match archive {
        Some(a) => findings.note(
            path,
            line,
            format!("archive: {what}; pushmirror sends `sync:archive:{a}`, so downstreams need ftpsync-{a}.conf"),
        ),
        None => findings.lost(
            path,
            line,
            format!(
                "archive: {what}; pushmirror always names the archive: these mirror files serve every archive \
                 (no `archives:`); name it with --archive NAME (downstreams then need ftpsync-NAME.conf)"
            ),
        ),
    }
}

/// What applies to every line: from the file name, `--archive` and runmirrors.conf.
struct Settings {
    /// The pushmirror archive of these mirrors.
    archive: Option<String>,
    /// The name runmirrors sent (`PUSHARCHIVE`, default the file's NAME).
    sent_archive: Option<String>,
    /// PUSHDELAY in seconds, and where it came from.
    pushdelay: (u64, String),
    /// The port of runmirrors.conf's SSH_OPTS, which precedes every line's own options.
    port: Option<(u16, String)>,
    /// The bind address of runmirrors.conf's SSH_OPTS: every mirror's source address.
    source_address: Option<IpAddr>,
    /// `KEYFILE`.
    keyfile: Keyfile,
    /// runmirrors' default SSH_OPTS (no host key checks) was in force.
    default_ssh_opts: bool,
    /// The home directory relative key files are resolved in.
    home: PathBuf,
    /// runmirrors.conf's MAILTO, HOOK1 and HOOK3, and the file that set them.
    notify: Option<(PathBuf, Conf)>,
}

impl Settings {
    fn new(file: &Path, conf: Option<(&Path, &Conf)>, archive: Option<&str>, findings: &mut Findings) -> Self {
        let named = archive_of_file_name(file);
        let pusharchive = conf.and_then(|(_, c)| c.pusharchive.clone());
        let sent_archive = pusharchive.clone().or_else(|| named.clone());
        let pushdelay = match conf.and_then(|(p, c)| c.pushdelay.map(|d| (p, d))) {
            Some((path, secs)) => (secs, format!("PUSHDELAY={secs} in {}", path.display())),
            None => (DEFAULT_PUSHDELAY, format!("runmirrors' default PUSHDELAY={DEFAULT_PUSHDELAY}")),
        };
        let ssh_opts = conf.and_then(|(p, c)| c.ssh_opts.clone().map(|o| (p, o)));
        let global = ssh_opts.as_ref().map(|(path, (line, opts))| global_options(path, *line, opts, findings));
        let (port, source_address) = global.unwrap_or_default();
        Settings {
            archive: archive.map(str::to_string).or(named).or(pusharchive),
            sent_archive,
            pushdelay,
            port,
            source_address,
            keyfile: Keyfile::of(conf),
            default_ssh_opts: ssh_opts.is_none(),
            home: PathBuf::new(),
            notify: conf.map(|(p, c)| (p.to_path_buf(), c.clone())),
        }
    }

    /// The lines to add to pushmirror.yaml, and the identity they name.
    fn main_config(&self, findings: &mut Findings) -> (String, Option<PathBuf>) {
        let Keyfile { value, origin, at } = &self.keyfile;
        let identity = identity_path(value, &self.home);
        let mut out = match &identity {
            Ok(path) => format!(
                "# pushmirror.yaml: the key runmirrors pushed with ({origin}; a relative KEYFILE is under its \
                 user's home directory)\nidentity: {}\n",
                quoted(&path.display().to_string())
            ),
            Err(why) => {
                if let Some((path, line)) = at {
                    findings.lost(path, *line, format!("KEYFILE={value}: {why}"));
                }
                format!("# pushmirror.yaml: set `identity:` to the key runmirrors pushed with ({origin}): {why}\n")
            }
        };
        if let Some(address) = self.source_address {
            out.push_str(&format!(
                "# runmirrors.conf's SSH_OPTS bound every push to this local address\nsource_address: {}\n",
                quoted(&address.to_string())
            ));
        }
        if self.default_ssh_opts {
            out.push_str(
                "# runmirrors did not check host keys (its default SSH_OPTS is -o StrictHostKeyChecking=no);\n\
                 # pushmirror does: record them with `pushmirror hostkeys scan` once these mirrors are configured.\n",
            );
        }
        self.notify_and_hooks(&mut out, findings);
        (out, identity.ok())
    }

    /// runmirrors.conf's MAILTO as `notify.mail`, HOOK1 as `hooks.before_push`, HOOK3 as
    /// `hooks.after_push`, with what changes said as notes.
    fn notify_and_hooks(&self, out: &mut String, findings: &mut Findings) {
        let Some((path, conf)) = &self.notify else { return };
        if let Some((line, to)) = &conf.mailto {
            let to = to.iter().map(|a| quoted(a)).collect::<Vec<_>>().join(", ");
            out.push_str(&format!(
                "# runmirrors.conf's MAILTO: through /usr/sbin/sendmail, as runmirrors sent it\n\
                 notify:\n  mail:\n    to: [{to}]\n"
            ));
            findings.note(
                path,
                *line,
                "MAILTO: runmirrors mailed every failed trigger; pushmirror mails when a mirror starts failing \
                 (notify.after_failures in a row) and when it recovers, at most once per notify.min_interval",
            );
        }
        if conf.hook1.is_none() && conf.hook3.is_none() {
            return;
        }
        out.push_str("# runmirrors.conf's HOOK1 and HOOK3, run as runmirrors ran them (no shell)\nhooks:\n");
        let argv = |a: &[String]| a.iter().map(|w| quoted(w)).collect::<Vec<_>>().join(", ");
        if let Some((line, hook)) = &conf.hook1 {
            out.push_str(&format!("  before_push: [{}]\n", argv(hook)));
            findings.note(
                path,
                *line,
                "HOOK1 becomes hooks.before_push: a non-zero exit skips the push, as it stopped runmirrors",
            );
        }
        if let Some((line, hook)) = &conf.hook3 {
            out.push_str(&format!("  after_push: [{}]\n", argv(hook)));
            findings.note(path, *line, "HOOK3 becomes hooks.after_push: it also gets the push's report on stdin");
        }
    }
}

/// runmirrors.conf's `KEYFILE` (or runmirrors' default).
struct Keyfile {
    value: String,
    /// In words, for the comment.
    origin: String,
    /// The conf file and line that set it.
    at: Option<(PathBuf, usize)>,
}

impl Keyfile {
    fn of(conf: Option<(&Path, &Conf)>) -> Keyfile {
        match conf.and_then(|(p, c)| c.keyfile.clone().map(|k| (p, k))) {
            Some((path, (line, value))) => Keyfile {
                origin: format!("KEYFILE={value} at {}:{line}", path.display()),
                value,
                at: Some((path.to_path_buf(), line)),
            },
            None => Keyfile {
                value: DEFAULT_KEYFILE.to_string(),
                origin: format!("runmirrors' default KEYFILE={DEFAULT_KEYFILE}"),
                at: None,
            },
        }
    }
}

/// `runmirrors-NAME.mirror` → NAME (runmirrors `-a NAME` read that file).
fn archive_of_file_name(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    let archive = name.strip_prefix("runmirrors-")?.strip_suffix(".mirror")?;
    valid_name(archive).then(|| archive.to_string())
}

/// runmirrors resolved KEYFILE in its user's home directory (`cd && readlink -f "$KEYFILE"`):
/// `home`, the home of the user who will push.
fn identity_path(keyfile: &str, home: &Path) -> Result<PathBuf, String> {
    let relative = ["~/", "$HOME/", "${HOME}/"].iter().find_map(|p| keyfile.strip_prefix(p)).unwrap_or(keyfile);
    if relative.contains(['$', '`', '~']) {
        return Err("shell expansion is not evaluated; set `identity:` by hand".to_string());
    }
    if Path::new(relative).is_absolute() {
        return Ok(PathBuf::from(relative));
    }
    Ok(home.join(relative))
}

/// SSH_OPTS: its first port and its bind address apply to every mirror; everything else is
/// reported once, here.
fn global_options(
    path: &Path,
    line: usize,
    opts: &str,
    findings: &mut Findings,
) -> (Option<(u16, String)>, Option<IpAddr>) {
    let words: Vec<&str> = opts.split_whitespace().collect();
    let mut port = None;
    let mut source_address = None;
    for option in ssh_options::parse(&words) {
        match option {
            SshOption::Port(p) if port.is_none() => port = Some((p, format!("SSH_OPTS at {}:{line}", path.display()))),
            SshOption::Port(p) => {
                findings.note(path, line, format!("SSH_OPTS port {p}: ssh takes the first port given"))
            }
            SshOption::User(u) => findings.note(
                path,
                line,
                format!("SSH_OPTS user {u}: ssh ignored it, runmirrors passes each mirror's `-o user=USER` first"),
            ),
            SshOption::BindAddress(raw) => {
                if let Some(address) =
                    bind_address(path, line, &format!("SSH_OPTS bind address {raw}"), &raw, source_address, findings)
                {
                    source_address = Some(address);
                }
            }
            SshOption::Identity(file) => findings.lost(
                path,
                line,
                format!(
                    "SSH_OPTS key file {file}: ssh offered it before KEYFILE, and the first key a downstream \
                     accepts decides its forced command; pushmirror offers one key per trigger: set `identity:` \
                     to the one your downstreams accept"
                ),
            ),
            SshOption::Implied => {}
            SshOption::Unsupported { option, why } => findings.lost(path, line, format!("SSH_OPTS {option}: {why}")),
        }
    }
    (port, source_address)
}

/// A bind address (`-b`, `BindAddress=`) as a source address: an IP literal, the first one given.
/// `None` when it is not one (reported as not carried over) or when one was given before.
fn bind_address(
    path: &Path,
    line: usize,
    what: &str,
    raw: &str,
    earlier: Option<IpAddr>,
    findings: &mut Findings,
) -> Option<IpAddr> {
    match (parse_source_address(raw), earlier) {
        (Ok(address), None) => Some(address),
        (Ok(_), Some(first)) => {
            findings.note(path, line, format!("{what}: a bind address was given before; kept {first}"));
            None
        }
        (Err(why), _) => {
            findings.lost(path, line, format!("{what}: {why}"));
            None
        }
    }
}

/// One mirror line, understood.
struct Target {
    name: String,
    kind: MirrorKind,
    host: String,
    port: u16,
    user: String,
    /// The archive named in an `ssh+ftpsync://…/ARCHIVE` URL.
    url_archive: Option<String>,
    /// Where the port came from, for the file's comment.
    port_origin: Option<String>,
    /// The key runmirrors pushed this mirror with, when the line names one.
    identity: Option<PathBuf>,
    /// The local address runmirrors' ssh bound, when the line names one.
    source_address: Option<IpAddr>,
}

/// Reads one non-comment line of runmirrors.mirror, the way runmirrors' main loop does.
fn mirror_line(path: &Path, line: usize, body: &str, settings: &Settings, findings: &mut Findings) -> Option<Target> {
    let words: Vec<&str> = body.split_whitespace().collect();
    if words[0] == "DELAY" {
        findings.lost(path, line, delay_message(&words[1..]));
        return None;
    }
    let Ok(kind) = words[0].parse::<MirrorKind>() else {
        let why = format!("unknown type `{}`: runmirrors pushes nothing for it (types: all, staged, mhop)", words[0]);
        findings.lost(path, line, why);
        return None;
    };
    let (Some(name), Some(host)) = (words.get(1), words.get(2)) else {
        findings.lost(path, line, "expected `TYPE SHORTNAME HOST USER …` or `TYPE SHORTNAME URL`");
        return None;
    };
    if !valid_name(name) {
        let why = format!("SHORTNAME `{name}` cannot name a pushmirror mirror: use letters, digits, `.`, `_`, `-`");
        findings.lost(path, line, why);
        return None;
    }
    let mut target = if host.contains("://") {
        url_target(path, line, host, &words[3..], findings)?
    } else {
        host_user_target(path, line, host, &words[3..], &settings.home, findings)?
    };
    target.name = name.to_string();
    target.kind = kind;
    // SSH_OPTS precede the line's own options and ssh takes the first port; a URL's port is the host's.
    match (&settings.port, target.port_origin.as_deref()) {
        (None, _) | (Some(_), Some(URL_PORT)) => {}
        (Some((port, origin)), own) => {
            if own.is_some() && target.port != *port {
                let why = format!("port {}: ssh takes the first port given, {port} from {origin}", target.port);
                findings.note(path, line, why);
            }
            (target.port, target.port_origin) = (*port, Some(origin.clone()));
        }
    }
    Some(target)
}

fn delay_message(args: &[&str]) -> String {
    let why = if args.get(1) == Some(&"stage1") {
        "pushmirror's staged barrier already holds stage 2 until every staged mirror finished stage 1 \
         (sync_timeout); there is no pause between lines"
    } else {
        "pushmirror triggers all mirrors concurrently and has no pause between two of them"
    };
    match args {
        [] => format!("DELAY: {why}"),
        _ => format!("DELAY {}: {why}", args.join(" ")),
    }
}

/// `TYPE SHORTNAME ssh+ftpsync://USER@HOST[:PORT][/ARCHIVE]`.
fn url_target(path: &Path, line: usize, url: &str, extra: &[&str], findings: &mut Findings) -> Option<Target> {
    if !extra.is_empty() {
        findings.lost(path, line, format!("`{}`: runmirrors ignores words after a URL", extra.join(" ")));
    }
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "ssh+ftpsync" {
        findings.lost(path, line, format!("{url}: runmirrors ignores URLs other than ssh+ftpsync://"));
        return None;
    }
    let (authority, archive) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let Some((user, host_port)) = authority.split_once('@').filter(|(u, _)| !u.is_empty()) else {
        let why =
            format!("{url}: no USER@; runmirrors' ssh refused its empty `-o user=`, write ssh+ftpsync://USER@HOST");
        findings.lost(path, line, why);
        return None;
    };
    let (host, port) = match split_host_port(host_port) {
        Ok(hp) => hp,
        Err(why) => {
            findings.lost(path, line, format!("{url}: {why}"));
            return None;
        }
    };
    let archive = archive.map(|a| a.trim_end_matches('/')).filter(|a| !a.is_empty());
    if let Some(a) = archive.filter(|a| !valid_name(a)) {
        findings.lost(path, line, format!("{url}: archive `{a}` is not a valid pushmirror archive name"));
        return None;
    }
    if let Some(p) = port {
        let why = format!(
            "{url}: runmirrors handed `{host_port}` to ssh as a host name (that does not resolve); pushmirror connects to port {p}"
        );
        findings.note(path, line, why);
    }
    Some(Target {
        name: String::new(),
        kind: MirrorKind::All,
        host: host.to_string(),
        port: port.unwrap_or(22),
        user: user.to_string(),
        url_archive: archive.map(str::to_string),
        port_origin: port.map(|_| URL_PORT.to_string()),
        identity: None,
        source_address: None,
    })
}

/// Where a URL's port came from, for the file's comment.
const URL_PORT: &str = "the URL";

/// `TYPE SHORTNAME HOST USER [-ssh options…]` and `TYPE SHORTNAME HOST USER PROTO [KEYFILE]`.
fn host_user_target(
    path: &Path,
    line: usize,
    host: &str,
    rest: &[&str],
    home: &Path,
    findings: &mut Findings,
) -> Option<Target> {
    let Some(user) = rest.first() else {
        findings.lost(path, line, "no USER: runmirrors' ssh refused its empty `-o user=`");
        return None;
    };
    let mut target = Target {
        name: String::new(),
        kind: MirrorKind::All,
        host: host.to_string(),
        port: 22,
        user: user.to_string(),
        url_archive: None,
        port_origin: None,
        identity: None,
        source_address: None,
    };
    let options = &rest[1..];
    match options.first() {
        None => {}
        Some(first) if first.starts_with('-') => line_options(path, line, options, home, &mut target, findings),
        Some(&proto @ ("1" | "2")) => protocol_and_key(path, line, proto, &options[1..], home, &mut target, findings),
        Some(_) => {
            let why = format!(
                "`{}`: neither ssh options (starting with -) nor `1|2 [KEYFILE]`; runmirrors skipped this mirror",
                options.join(" ")
            );
            findings.lost(path, line, why);
            return None;
        }
    }
    Some(target)
}

/// A line's own ssh options: ports and users are applied as ssh would, the rest reported.
fn line_options(path: &Path, line: usize, words: &[&str], home: &Path, target: &mut Target, findings: &mut Findings) {
    if words.len() > 2 {
        let why = format!(
            "runmirrors 20180513 passed only `{}` of these options to ssh (its argument passing splits off the \
             rest); pushmirror applies all of them",
            words[..2].join(" ")
        );
        findings.note(path, line, why);
    }
    for option in ssh_options::parse(words) {
        match option {
            SshOption::Port(p) if target.port_origin.is_none() => {
                (target.port, target.port_origin) = (p, Some("this line's ssh options".to_string()))
            }
            SshOption::Port(p) => findings.note(path, line, format!("port {p}: ssh takes the first port given")),
            SshOption::User(u) if u == target.user => {}
            SshOption::User(u) => findings.note(
                path,
                line,
                format!("user {u}: ssh ignored it, runmirrors passes `-o user={}` first; kept {0}", target.user),
            ),
            SshOption::Identity(file) if target.identity.is_none() => {
                target.identity = key_file(path, line, &file, home, findings);
                if target.identity.is_some() {
                    let why = format!(
                        "key file {file}: runmirrors' ssh offered its KEYFILE first and this key second, and the \
                         first key the downstream accepts decides its forced command; pushmirror offers only \
                         this one"
                    );
                    findings.note(path, line, why);
                }
            }
            SshOption::Identity(file) => {
                let why = format!("key file {file}: pushmirror offers one key per trigger, the first one given");
                findings.lost(path, line, why);
            }
            SshOption::BindAddress(raw) => {
                let what = format!("bind address {raw}");
                if let Some(address) = bind_address(path, line, &what, &raw, target.source_address, findings) {
                    target.source_address = Some(address);
                }
            }
            SshOption::Implied => {}
            SshOption::Unsupported { option, why } => findings.lost(path, line, format!("{option}: {why}")),
        }
    }
}

/// A line's key file as a mirror's `identity:`, resolved as runmirrors' ssh resolved it.
fn key_file(path: &Path, line: usize, file: &str, home: &Path, findings: &mut Findings) -> Option<PathBuf> {
    match identity_path(file, home) {
        Ok(identity) if Path::new(file).is_absolute() => Some(identity),
        Ok(identity) => {
            let why = format!(
                "key file {file}: runmirrors' ssh read it relative to the directory runmirrors ran in \
                 (its BASEDIR); taken as {} (its user's home directory)",
                identity.display()
            );
            findings.note(path, line, why);
            Some(identity)
        }
        Err(why) => {
            findings.lost(path, line, format!("key file {file}: {why}"));
            None
        }
    }
}

/// The old `PROTO [KEYFILE]` form: the line's KEYFILE replaces runmirrors.conf's.
fn protocol_and_key(
    path: &Path,
    line: usize,
    proto: &str,
    key: &[&str],
    home: &Path,
    target: &mut Target,
    findings: &mut Findings,
) {
    if proto == "1" {
        findings.lost(path, line, "SSH protocol 1: gone from OpenSSH and never spoken by pushmirror; SSH 2 is used");
    }
    match key {
        [] => {
            let why = format!(
                "`{proto}` without KEYFILE: runmirrors then passed no -i, so ssh logged in with its default keys \
                 (~/.ssh/id_*); pushmirror uses its `identity:`"
            );
            findings.note(path, line, why);
        }
        [file, rest @ ..] => {
            target.identity = key_file(path, line, file, home, findings);
            if !rest.is_empty() {
                let why = format!(
                    "`{}` after KEYFILE: runmirrors passed it to ssh unquoted, which took it as the host to \
                     connect to; not carried over",
                    rest.join(" ")
                );
                findings.lost(path, line, why);
            }
        }
    }
}

impl Target {
    /// The archive name runmirrors sent this mirror (`sync:archive:NAME`), if any.
    fn sent_archive<'a>(&'a self, settings: &'a Settings) -> Option<&'a String> {
        self.url_archive.as_ref().or(settings.sent_archive.as_ref())
    }

    /// The mirror file, starting with where it came from.
    fn to_yaml(&self, settings: &Settings, source: &str) -> String {
        let mut out = format!("# Imported by `pushmirror import-runmirrors` from:\n#   {source}\n");
        if let Some(origin) = &self.port_origin {
            out.push_str(&format!("# The port comes from {origin}.\n"));
        }
        out.push_str(&format!(
            "ssh: {{ host: {}, port: {}, user: {} }}\n",
            quoted(&self.host),
            self.port,
            quoted(&self.user)
        ));
        if let Some(identity) = &self.identity {
            out.push_str(&format!(
                "# The key runmirrors pushed this mirror with.\nidentity: {}\n",
                quoted(&identity.display().to_string())
            ));
        }
        if let Some(address) = self.source_address {
            out.push_str(&format!(
                "# The local address runmirrors' ssh bound.\nsource_address: {}\n",
                quoted(&address.to_string())
            ));
        }
        match (&settings.archive, self.sent_archive(settings)) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                out.push_str(&format!("archives: [{}]\n", quoted(ours)));
                out.push_str(&format!("# runmirrors told this mirror the archive is `{theirs}`.\n"));
                out.push_str(&format!("command: {}\n", quoted(&format!(" sync:archive:{theirs} sync:{{stage}}"))));
            }
            (Some(archive), _) | (None, Some(archive)) => out.push_str(&format!("archives: [{}]\n", quoted(archive))),
            (None, None) => {}
        }
        out.push_str(&format!("type: {}\n", self.kind));
        out.push_str(
            "# ftpsync exits 1 when a sync is already running and it has queued a re-run: not a failure.\nbusy_exit: 1\n",
        );
        if self.kind != MirrorKind::All {
            let (secs, origin) = &settings.pushdelay;
            out.push_str(&format!(
                "# How long stage 1 is waited for before stage 2 goes out ({origin}).\nsync_timeout: {secs}s\n"
            ));
        }
        out
    }
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{}\"", s.escape_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_forms() {
        assert_eq!(split_host_port("h.example"), Ok(("h.example", None)));
        assert_eq!(split_host_port("h.example:2222"), Ok(("h.example", Some(2222))));
        assert_eq!(split_host_port("[2001:db8::7]:2222"), Ok(("2001:db8::7", Some(2222))));
        assert_eq!(split_host_port("2001:db8::7"), Ok(("2001:db8::7", None)));
        assert!(split_host_port("h:0").is_err());
        assert!(split_host_port("h:ssh").is_err());
    }

    #[test]
    fn the_file_name_names_the_archive() {
        assert_eq!(
            archive_of_file_name(Path::new("/etc/ftpsync/runmirrors-security.mirror")).as_deref(),
            Some("security")
        );
        assert_eq!(archive_of_file_name(Path::new("runmirrors.mirror")), None);
    }

    #[test]
    fn a_renamed_archive_becomes_a_command_template_and_mhop_loses_its_word() {
        let text = "mhop hub ssh+ftpsync://archvsync@hub.example/debian-archive\n";
        let c = convert(
            Source { path: Path::new("runmirrors-debian.mirror"), text },
            None,
            None,
            Path::new("/var/lib/pushmirror"),
        );
        let yaml = &c.mirrors[0].yaml;
        assert_eq!(c.findings.lost_count(), 1, "{:?}", c.findings);
        assert!(c.findings.0[0].to_string().starts_with("runmirrors-debian.mirror:1: archive `debian-archive`"));
        assert!(yaml.contains("archives: [\"debian\"]\n"), "{yaml}");
        assert!(yaml.contains("command: \" sync:archive:debian-archive sync:{stage}\"\n"), "{yaml}");
    }
}
