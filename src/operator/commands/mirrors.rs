//! `mirror add|remove|disable|enable`: a mirror's file in `mirrors_dir`, edited the way an
//! operator would, atomically, and only if the configuration still passes `check` afterwards.

use std::time::Duration;

use super::alternate;
use crate::config::{self, Config, MirrorKind, split_host_port, valid_name};
use crate::operator::cli::{Cli, MirrorAddArgs};
use crate::sys::fsutil::{limit, read_bounded_text, write_config_file};
use crate::vocab::output::{Ended, Format, Stop, Verdict, print_json};
use crate::wire::keys::fingerprint;

/// How long `mirror add` waits for the host key.
const SCAN_TIMEOUT: Duration = Duration::from_secs(10);

/// The configuration as `check` judges it, or every error and that nothing was done.
fn checked(cli: &Cli, when: &str) -> Result<Config, Stop> {
    config::load_for_check(&cli.config).map_err(|errors| {
        eprintln!("{errors}");
        eprintln!("{}: {} error(s) {when}; nothing was changed", cli.config.display(), errors.0.len());
        Stop::Shown
    })
}

/// The ownership rule for configuration: only the owner of `mirrors_dir` edits it (root, in the
/// package), so that no file in it belongs to a user who should not be writing configuration.
fn require_mirrors_dir_owner(cli: &Cli, config: &Config) -> Result<(), Stop> {
    crate::sys::owner::require_owner(&config.mirrors_dir, &cli.config).map_err(|refused| {
        Stop::Usage(refused.to_string().replace("state_dir", "mirrors_dir").replacen(
            &format!("{} belongs", config.mirrors_dir.display()),
            &format!("{} (mirrors_dir) belongs", config.mirrors_dir.display()),
            1,
        ))
    })
}

/// `mirror add NAME --ssh USER@HOST[:PORT] …`.
pub(super) async fn add(cli: &Cli, args: &MirrorAddArgs) -> Ended {
    let config = checked(cli, "before the change")?;
    let name = &args.name;
    if !valid_name(name) {
        return Err(Stop::usage(format_args!(
            "mirror names may hold only letters, digits, `.`, `_` and `-`: `{name}`"
        )));
    }
    if config.mirrors.iter().any(|m| &m.name == name) || config.watched.iter().any(|w| &w.name == name) {
        return Err(Stop::usage(format_args!("mirror `{name}` exists already")));
    }
    let file = config.mirrors_dir.join(format!("{name}.yaml"));
    if file.exists() {
        return Err(Stop::usage(format_args!("{} exists already", file.display())));
    }
    if let Some(archive) = args.archives.iter().find(|a| !config.archives.contains_key(*a)) {
        let known: Vec<&str> = config.archives.keys().map(String::as_str).collect();
        return Err(Stop::usage(format_args!("unknown archive `{archive}` (configured: {})", known.join(", "))));
    }
    if let Some(kind) = &args.kind {
        kind.parse::<MirrorKind>().map_err(Stop::usage)?;
    }
    let (user, host_port) = args
        .ssh
        .split_once('@')
        .ok_or_else(|| Stop::usage(format_args!("--ssh {}: write USER@HOST[:PORT]", args.ssh)))?;
    let (host, port) = split_host_port(host_port).map_err(|e| Stop::usage(format_args!("--ssh {}: {e}", args.ssh)))?;
    if user.is_empty() {
        return Err(Stop::usage(format_args!("--ssh {}: no user before `@`", args.ssh)));
    }
    let port = port.unwrap_or(config::defaults::SSH_PORT);
    require_mirrors_dir_owner(cli, &config)?;

    // The host key, before anything is written: a wrong fingerprint changes nothing.
    let offered = crate::transport::ssh::scan_host_key(host, port, &[], SCAN_TIMEOUT).await.map_err(|e| {
        Stop::usage(format_args!("cannot fetch the host key of {host}:{port}: {}; nothing was written", e.message))
    })?;
    let offered_fp = fingerprint(&offered);
    eprintln!("host key of {host}:{port}: {} {offered_fp}", offered.algorithm().as_str());
    let pin = match (&args.host_key_fingerprint, args.accept_new_host_key) {
        (Some(expected), _) if expected.trim() != offered_fp => {
            return Err(Stop::usage(format_args!(
                "the host key of {host}:{port} is {offered_fp}, not the {} you were given: nothing was written \
                 (ask the mirror's admin again; this may be someone else's host)",
                expected.trim()
            )));
        }
        (Some(_), _) | (None, true) => {
            let line =
                offered.to_openssh().map_err(|e| Stop::usage(format_args!("cannot encode the host key: {e}")))?;
            Some(line.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        }
        (None, false) => None,
    };

    let text = mirror_yaml(args, user, host, port, pin.as_deref());
    write_config_file(&file, text.as_bytes(), 0o644, false).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Stop::usage(format_args!("{} exists already", file.display())),
        _ => Stop::usage(format_args!("cannot write {}: {e}", file.display())),
    })?;
    let config = match config::load_for_check(&cli.config) {
        Ok(config) => config,
        Err(errors) => {
            let _ = std::fs::remove_file(&file);
            eprintln!("{errors}");
            eprintln!(
                "with {} the configuration has {} error(s): the file was removed again",
                file.display(),
                errors.0.len()
            );
            return Err(Stop::Shown);
        }
    };
    eprintln!("wrote {}", file.display());
    if pin.is_none() {
        eprintln!(
            "host key not recorded: compare {offered_fp} with the fingerprint the mirror's admin gives you, then \
             `pushmirror hostkeys scan --only {name}` (or add again with --host-key-fingerprint)"
        );
    }
    let probed = crate::push::probe::probe(&config, None, std::slice::from_ref(name)).await.map_err(alternate)?;
    let ready = probed.all_ready();
    let lines = if ready { Vec::new() } else { key_lines(&config, name).map_err(Stop::usage)? };
    match cli.format {
        Format::Json => print_json(&serde_json::json!({
            "file": file, "host_key_fingerprint": offered_fp, "host_key_recorded": pin.is_some(),
            "ready": ready, "probe": probed.mirrors, "authorized_keys": lines,
        })),
        Format::Table if ready => println!("ready: key accepted by {name}; nothing was triggered"),
        Format::Table => {
            for row in &probed.mirrors {
                println!(
                    "not ready yet ({}): {}",
                    row.archive,
                    row.error.as_deref().unwrap_or("see `pushmirror probe`")
                );
            }
            println!("send this to the admin of {name}, for ~/.ssh/authorized_keys of {user} on {host}:");
            for line in &lines {
                println!("{line}");
            }
        }
    }
    Ok(if ready { Verdict::Clean } else { Verdict::Failed })
}

/// The new mirror's file.
fn mirror_yaml(args: &MirrorAddArgs, user: &str, host: &str, port: u16, pin: Option<&str>) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let list = |v: &[String]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
    let mut out = format!(
        "# Added by `pushmirror mirror add` on {}.\nssh: {{ host: {}, port: {port}, user: {} }}\n",
        crate::vocab::model::Timestamp(std::time::SystemTime::now()),
        q(host),
        q(user)
    );
    if let Some(pin) = pin {
        out.push_str(&format!("host_key: {}\n", q(pin)));
    }
    if !args.archives.is_empty() {
        out.push_str(&format!("archives: [{}]\n", list(&args.archives)));
    }
    if let Some(kind) = &args.kind {
        out.push_str(&format!("type: {kind}\n"));
    }
    if !args.tags.is_empty() {
        out.push_str(&format!("tags: [{}]\n", list(&args.tags)));
    }
    out
}

/// The authorized_keys lines mirror `name` needs: each key its archives trigger it with.
fn key_lines(config: &Config, name: &str) -> Result<Vec<String>, String> {
    let page = crate::operator::keypage::page(config, None).map_err(|e| e.to_string())?;
    let mut lines = Vec::new();
    for archive in page {
        for key in archive.keys.iter().filter(|k| k.mirrors.iter().any(|m| m == name)) {
            if !lines.contains(&key.authorized_keys) {
                lines.push(key.authorized_keys.clone());
            }
        }
    }
    Ok(lines)
}

/// What `remove`, `disable` and `enable` do to a mirror's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Edit {
    /// Delete it.
    Remove,
    /// `enabled: false`.
    Disable,
    /// `enabled: true`.
    Enable,
}

/// `mirror remove|disable|enable NAME`: the file that defines it, edited (or removed) atomically;
/// put back as it was if the configuration then fails `check`.
pub(super) fn edit(cli: &Cli, name: &str, edit: Edit) -> Ended {
    let config = checked(cli, "before the change")?;
    let file = config
        .mirrors
        .iter()
        .map(|m| (m.name.as_str(), &m.file))
        .chain(config.watched.iter().map(|w| (w.name.as_str(), &w.file)))
        .find(|(n, _)| *n == name)
        .map(|(_, f)| f.clone())
        .ok_or_else(|| Stop::usage(format_args!("no mirror `{name}`")))?;
    require_mirrors_dir_owner(cli, &config)?;
    let before = read_bounded_text(&file, limit::CONFIG_FILE)
        .map_err(|e| Stop::usage(format_args!("cannot read {}: {e}", file.display())))?;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).map_err(|e| Stop::usage(format_args!("{}: {e}", file.display())))?.permissions(),
    ) & 0o7777;
    let write = |text: &str| write_config_file(&file, text.as_bytes(), mode, true);
    match edit {
        Edit::Remove => std::fs::remove_file(&file),
        Edit::Disable => write(&with_enabled(&before, false)),
        Edit::Enable => write(&with_enabled(&before, true)),
    }
    .map_err(|e| Stop::usage(format_args!("cannot change {}: {e}", file.display())))?;
    if let Err(errors) = config::load_for_check(&cli.config) {
        let _ = write(&before);
        eprintln!("{errors}");
        eprintln!(
            "after that change the configuration has {} error(s): {} was put back",
            errors.0.len(),
            file.display()
        );
        return Err(Stop::Shown);
    }
    let done = match edit {
        Edit::Remove => "removed",
        Edit::Disable => "disabled",
        Edit::Enable => "enabled",
    };
    match cli.format {
        Format::Json => print_json(&serde_json::json!({ "mirror": name, "file": file, "done": done })),
        Format::Table => {
            println!("{done} {name} ({}); a running daemon picks it up at its next reload", file.display())
        }
    }
    Ok(Verdict::Clean)
}

/// `text` with its top-level `enabled:` set to `value`: the line replaced where there is one (its
/// comment kept), else appended; every other line as it was.
fn with_enabled(text: &str, value: bool) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut done = false;
    for line in text.split_inclusive('\n') {
        match line.strip_prefix("enabled:") {
            Some(rest) if !done => {
                // The comment with the spaces before it, as they were.
                let comment = match rest.find(" #") {
                    Some(i) => rest[rest[..=i].trim_end().len()..].trim_end(),
                    None => "",
                };
                out.push_str(&format!("enabled: {value}{comment}\n"));
                done = true;
            }
            _ => out.push_str(line),
        }
    }
    if !done {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("enabled: {value}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_is_set_in_place_keeping_comments_or_appended() {
        let text = "# eu mirror\nssh: { host: a, user: b }\nenabled: true  # since 2024\ntags: [eu]\n";
        assert_eq!(
            with_enabled(text, false),
            "# eu mirror\nssh: { host: a, user: b }\nenabled: false  # since 2024\ntags: [eu]\n"
        );
        assert_eq!(with_enabled("ssh: { host: a, user: b }", false), "ssh: { host: a, user: b }\nenabled: false\n");
        // A nested `enabled:` is not the mirror's.
        assert_eq!(with_enabled("defaults:\n  enabled: true\n", true), "defaults:\n  enabled: true\nenabled: true\n");
    }
}
