//! The sender's keys and the mirrors' host keys: `keygen`, `keys`, `probe`, `hostkeys scan`.

use super::{load, load_for_writing};
use crate::config;
use crate::operator::cli::{Cli, KeygenArgs};
use crate::vocab::output::{Ended, Format, Stop, Verdict, print_json};

/// `keygen`: writes a new ed25519 key and prints the authorized_keys line for downstreams.
pub(super) fn keygen(cli: &Cli, args: &KeygenArgs) -> Ended {
    // The config may not validate yet (its SSH mirrors need this very key), so only the settings
    // of the key are read from it.
    let archive = match &args.archive {
        Some(name) => Some(config::archive_key_settings(&cli.config, name).map_err(Stop::usage)?),
        None => None,
    };
    let field = if args.next { "next_identity" } else { "identity" };
    let configured = match &archive {
        Some(settings) if args.next => settings.next_identity.clone(),
        Some(settings) => settings.identity.clone(),
        None => config::key_path(&cli.config, field),
    };
    let named_by_config = args.out.is_none() && configured.is_some();
    let out = args.out.clone().or(configured).ok_or_else(|| {
        let config = cli.config.display();
        Stop::usage(match &args.archive {
            Some(name) => format!("--out PATH is required: {config} names no `{field}:` key for archive {name}"),
            None => format!("--out PATH is required: {config} does not name an `{field}:` key"),
        })
    })?;
    // The ownership rule (crate::sys::owner): a key the configuration names is the service user's; and
    // root writes no key into another user's directory (`--out /etc/pushmirror/keys/…` as root
    // would leave a key the daemon cannot read). Other users cannot write there anyway.
    if named_by_config && let Some(state_dir) = config::state_dir_path(&cli.config) {
        crate::sys::owner::require_owner(&state_dir, &cli.config).map_err(Stop::usage)?;
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty() && crate::sys::owner::current_uid() == 0) {
        crate::sys::owner::require_owner(dir, &cli.config).map_err(Stop::usage)?;
    }
    // One default with `keys` and the examples: ftpsync's.
    let command = match (&args.command, archive.as_ref().and_then(|a| a.forced_command.clone())) {
        (Some(command), _) => command.clone(),
        (None, Some(configured)) => configured,
        (None, None) => config::defaults::FORCED_COMMAND.to_string(),
    };
    let from = args.from.clone().or_else(|| archive.as_ref()?.source_address.map(|a| a.to_string()));
    // Options first: a bad --command must not leave a key behind.
    crate::wire::keys::authorized_keys_options(&command, from.as_deref()).map_err(Stop::usage)?;
    let new = crate::wire::keys::generate(&out, &crate::wire::keys::default_comment()).map_err(Stop::usage)?;
    let line = crate::wire::keys::authorized_keys_line(&new.public, &command, from.as_deref()).map_err(Stop::usage)?;
    match cli.format {
        Format::Json => print_json(&serde_json::json!({
            "private_key": new.private,
            "public_key": new.public_path,
            "fingerprint": crate::wire::keys::fingerprint(&new.public),
            "authorized_keys": line,
        })),
        Format::Table => {
            eprintln!(
                "wrote {} (0600) and {}, {}",
                new.private.display(),
                new.public_path.display(),
                crate::wire::keys::fingerprint(&new.public)
            );
            eprintln!("downstreams add this line to the authorized_keys of their sync user:");
            println!("{line}");
        }
    }
    Ok(Verdict::Clean)
}

/// `keys`: what downstream admins install and allow, per archive (see [`crate::operator::keypage`]).
pub(super) fn keys(cli: &Cli, archive: Option<&str>) -> Ended {
    let config = load(cli)?;
    let page = crate::operator::keypage::page(&config, archive).map_err(Stop::usage)?;
    match cli.format {
        Format::Json => print_json(&page),
        Format::Table => print!("{}", crate::operator::keypage::to_text(&page)),
    }
    Ok(Verdict::Clean)
}

/// `probe`: each mirror checked without being triggered; what SSH mirrors said of our keys is
/// kept in the ledger (when this user may write `state_dir`).
pub(super) async fn probe(cli: &Cli, archive: Option<&str>, only: &[String]) -> Ended {
    let config = load(cli)?;
    if let Some(name) = archive.filter(|a| !config.archives.contains_key(*a)) {
        return Err(Stop::usage(format_args!("unknown archive `{name}`")));
    }
    if let Some(name) = only.iter().find(|n| !config.mirrors.iter().any(|m| &m.name == *n)) {
        return Err(Stop::usage(format_args!("unknown mirror `{name}`")));
    }
    let probed = crate::push::probe::probe(&config, archive, only).await.map_err(super::alternate)?;
    match cli.format {
        Format::Json => print_json(&probed),
        Format::Table => print!("{}", probe_table(&probed)),
    }
    Ok(if probed.all_ready() { Verdict::Clean } else { Verdict::Failed })
}

fn probe_table(probed: &crate::push::probe::Probed) -> String {
    use crate::vocab::output::align;
    let mut rows = vec![["MIRROR", "ARCHIVE", "READY", "HOST KEY", "KEYS", "RTT", "DETAIL"].map(String::from)];
    for r in &probed.mirrors {
        let host_key = match (&r.host_key, &r.host_key_fingerprint) {
            (Some(state), Some(fp)) => format!("{state} {fp}"),
            _ => "-".into(),
        };
        let mut detail = vec![r.target.clone()];
        detail.extend(r.source_address.map(|a| format!("from {a}")));
        detail.extend(r.error.clone());
        detail.extend(r.banner.as_ref().map(|b| format!("banner: {}", b.lines().next().unwrap_or_default())));
        if r.transport != "ssh" {
            detail.push(format!("checked: {}", r.checked));
        }
        rows.push([
            r.mirror.clone(),
            r.archive.clone(),
            if r.ready { "ready".into() } else { "NO".into() },
            host_key,
            crate::push::probe::keys_word(&r.keys),
            r.rtt_ms.map(|ms| format!("{ms} ms")).unwrap_or_else(|| "-".into()),
            detail.join("; "),
        ]);
    }
    let mut out = align(&rows);
    let ready = probed.mirrors.iter().filter(|r| r.ready).count();
    out.push_str(&format!("{ready} of {} mirror(s) ready; nothing was triggered\n", probed.mirrors.len()));
    for rotation in &probed.rotations {
        out.push_str(&format!("rotation {}\n", rotation.summary(20)));
    }
    out
}

/// `hostkeys scan`: records new host keys, reports known and changed ones; with `--replace`,
/// replaces one mirror's changed key when it has the fingerprint given.
pub(super) async fn hostkeys_scan(cli: &Cli, only: &[String], replace: Option<(String, String)>) -> Ended {
    let config = load_for_writing(cli)?;
    let rows = match replace {
        Some((mirror, fingerprint)) => {
            let replace = crate::operator::hostkeys::Replace { mirror, fingerprint };
            vec![crate::operator::hostkeys::replace(&config, &replace).await.map_err(Stop::usage)?]
        }
        None => crate::operator::hostkeys::scan(&config, only).await.map_err(Stop::usage)?,
    };
    match cli.format {
        Format::Json => print_json(&rows),
        Format::Table if rows.is_empty() => eprintln!("no SSH mirrors configured"),
        Format::Table => rows.iter().for_each(|r| println!("{r}")),
    }
    Ok(if rows.iter().any(|r| r.status.is_problem()) { Verdict::Failed } else { Verdict::Clean })
}
