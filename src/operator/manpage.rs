//! `pushmirror manpage`: one page, pushmirror(1), with every subcommand in it (no pages that are
//! not shipped are referred to). NAME, SYNOPSIS, DESCRIPTION and OPTIONS come from the clap
//! definitions through clap_mangen; COMMANDS from the same definitions; CONFIGURATION, FILES,
//! ENVIRONMENT, EXIT STATUS, SIGNALS and EXAMPLES are written here. A test holds CONFIGURATION to
//! the fields the configuration reader accepts.

use std::io::Write;

use crate::config::defaults::{self, File};

/// The main file's fields, as CONFIGURATION lists them; defaults are added from
/// [`crate::config::defaults::TABLE`].
pub const MAIN_FIELDS: &[(&str, &str)] = &[
    ("identity", "The sender's private SSH key (0600): the default of every archive and mirror."),
    (
        "next_identity",
        "During a key rotation, the key replacing identity (written with it): SSH triggers offer it first and fall back to identity; probe, status and keys show who accepts it.",
    ),
    (
        "source_address",
        "The local IP address every trigger leaves from (SSH and HTTP); must be an address of this host.",
    ),
    ("known_hosts", "pushmirror's own known_hosts (OpenSSH format), relative to the main file."),
    ("host_key_policy", "strict or accept-new."),
    ("mirrors_dir", "Directory of mirror files, one *.yaml per mirror, relative to the main file."),
    ("state_dir", "Reports, rate-limit state, pending pushes. Its owner is the service user."),
    ("concurrency", "Triggers in flight at once, all mirrors together; capped at half the open-file limit."),
    (
        "max_per_host",
        "Triggers in flight at once to one host and port, so that many mirrors on one host stay under its sshd's MaxStartups (OpenSSH drops connections beyond 10 unauthenticated ones).",
    ),
    ("defaults", "Any mirror field except name, ssh, http, host_key, identity, next_identity, source_address."),
    ("archives", "Archives by name; each with the fields below."),
    (
        "status",
        "status.listen (the daemon's status server), status.history (reports kept) and status.public_url (the page's address as people reach it: notifications link to it).",
    ),
    ("freshness", "freshness.interval: how often the daemon surveys every mirror with a check: URL."),
    (
        "mqtt",
        "The broadcast tier's broker: broker (mqtt://HOST[:PORT] or mqtts://), client_id (default: pushmirror and the host name), username, password_file, ca_file, client_cert, client_key, topic_prefix, keepalive, expiry (message expiry of a trigger), ack_timeout (how long a push waits for a mirror's ack), require_signed_acks (every MQTT mirror must name its subscriber's ack_key, and only acks signed with it count). Needed by mirrors with mqtt:.",
    ),
    (
        "notify",
        "Messages on changes of standing (a mirror failing after after_failures failed triggers in a row, recovering, falling behind, catching up; the broker gone or back; a part of the daemon died), one digest per push, at most one per mirror per min_interval: mail { to, from, via (sendmail, a sendmail command, smtp://HOST[:PORT] or smtps://), username, password_file } and webhooks [ { url_file, format (json or slack), hmac_secret_file } ].",
    ),
    (
        "hooks",
        "Commands (a list, no shell) around a push: before_push (a non-zero exit vetoes the push), after_push (the report as JSON on stdin; PUSHMIRROR_ARCHIVE, PUSHMIRROR_SERIAL, PUSHMIRROR_REPORT), on_event (each notification event as JSON on stdin); each at most timeout.",
    ),
];

/// The fields of `archives.NAME`.
pub const ARCHIVE_FIELDS: &[(&str, &str)] = &[
    ("root", "Required: the archive's root directory; it must exist."),
    ("trace", "Its version: the Archive serial: line, else the first line, else a hash."),
    ("locks", "Globs under root meaning an update is in progress."),
    ("settle", "How long a new version must be stable and unlocked."),
    ("poll", "Fallback poll interval for file systems without inotify."),
    ("identity", "This archive's key (one key per archive); else the main file's."),
    ("next_identity", "The key replacing this archive's identity during a rotation (set with identity here)."),
    ("source_address", "This archive's source address; else the main file's."),
    ("forced_command", "The forced command shown in its authorized_keys line."),
    ("max_lag", "How old the version a mirror serves may be before freshness counts it as behind."),
    ("propagation_timeout", "How long push --follow and the daemon watch a mirror for the pushed version."),
    ("notify", "This archive's own notify:, replacing the main file's for its events."),
    ("hooks", "This archive's own hooks:, replacing the main file's for its pushes."),
];

/// The fields of a mirror file.
pub const MIRROR_FIELDS: &[(&str, &str)] = &[
    ("name", "The mirror's name; default: the file name without .yaml."),
    ("ssh", "{ host, port, user }: an ftpsync downstream. Exactly one of ssh, http and mqtt."),
    (
        "http",
        "url or url_file (a secret), method (GET or POST), basic_auth { user, password_file }, token_file, hmac_secret_file, headers. {archive}, {stage} and {serial} are replaced in url and headers.",
    ),
    (
        "mqtt",
        "{} or { topic, ack_timeout, ack_key }: a subscriber of the broadcast tier, triggered by one signed publish to the broker and expected to acknowledge on {prefix}/{archive}/ack/NAME. ack_key (its subscriber's public key line): only acks signed with it count.",
    ),
    ("host_key", "A pinned SSH host key instead of known_hosts."),
    (
        "check",
        "The mirror's public base URL of the archive (https://mirror.example.net/debian/), where pushmirror freshness reads its trace files. With neither ssh nor http: a check-only mirror, surveyed but never triggered.",
    ),
    ("identity", "This mirror's SSH key for every archive it carries (MQTT: the key its triggers are signed with)."),
    ("next_identity", "The key replacing this mirror's own identity during a rotation (SSH only)."),
    ("source_address", "The local address this mirror's triggers leave from."),
    ("archives", "Archives it carries. Default: all."),
    ("type", "all, staged or mhop, as in runmirrors."),
    ("rate_limit", "N/period, e.g. 2/1h: at most N triggers per period; more are deferred."),
    ("retries", "Further attempts after a transient failure."),
    ("timeout", "Bound of one attempt."),
    ("backoff", "{ initial, max }: exponential backoff with full jitter."),
    ("tags", "Labels for push --tag."),
    ("enabled", "false keeps the mirror but skips it."),
    ("wait_for_sync", "SSH: hold the session until the downstream's sync ends."),
    ("sync_timeout", "Bound of a waited-for sync."),
    ("busy_exit", "An exit code meaning already syncing, re-run queued (ftpsync: 1)."),
    ("command", "SSH command template with {archive}, {stage}, {serial}. Default: the ftpsync words."),
];

/// A field's text with its defaults from the table: `Default: 30s.` for the field itself,
/// `Defaults: listen 127.0.0.1:9470, history 200.` for the fields under it.
fn with_defaults(file: File, path: &str, what: &str) -> String {
    let found: Vec<(&str, String)> = defaults::under(file, path).map(|(rest, v)| (rest, v.to_string())).collect();
    match found.as_slice() {
        [] => what.to_string(),
        [("", value)] => format!("{what} Default: {value}."),
        many => {
            let listed: Vec<String> = many.iter().map(|(rest, v)| format!("{rest} {v}")).collect();
            format!("{what} Defaults: {}.", listed.join(", "))
        }
    }
}

/// Writes the page.
pub fn render(w: &mut dyn Write) -> std::io::Result<()> {
    let mut command = crate::operator::cli::Cli::definition();
    // Built, so that every argument knows whether it takes a value.
    command.build();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    commands(w, &command)?;
    section(w, "CONFIGURATION")?;
    paragraph(
        w,
        "The main file is YAML (-c, else $PUSHMIRROR_CONFIG, else /etc/pushmirror/pushmirror.yaml); relative paths \
         in it are relative to it. Durations are written 30s, 5m, 6h. Every error is reported as \
         FILE:LINE:COLUMN: FIELD: MESSAGE, all at once, in file order; an unknown field names the nearest known \
         one; a configuration with any error is never used. Secret files and keys must be mode 0600.",
    )?;
    fields(w, "Main file", MAIN_FIELDS, |name| (File::Main, name.to_string()))?;
    fields(w, "archives.NAME", ARCHIVE_FIELDS, |name| (File::Main, format!("archives.NAME.{name}")))?;
    fields(w, "Mirror file (mirrors_dir/NAME.yaml)", MIRROR_FIELDS, |name| (File::Mirror, name.to_string()))?;
    for (name, list) in
        [("FILES", FILES), ("ENVIRONMENT", ENVIRONMENT), ("EXIT STATUS", EXIT_STATUS), ("SIGNALS", SIGNALS)]
    {
        section(w, name)?;
        for (term, what) in list {
            tagged(w, &bold(term), what)?;
        }
    }
    section(w, "EXAMPLES")?;
    for (what, example) in EXAMPLES {
        writeln!(w, ".TP\n{}\n{}", escape(what), line_start(&bold(example)))?;
    }
    section(w, "SEE ALSO")?;
    paragraph(w, "ssh-keygen(1), sshd(8), systemd.service(5); /usr/share/doc/pushmirror/README.md.")?;
    man.render_version_section(w)
}

/// Where pushmirror reads and writes, as the package lays it out.
const FILES: &[(&str, &str)] = &[
    ("/etc/pushmirror/pushmirror.yaml", "The main file (root's, readable by the service user)."),
    (
        "/etc/pushmirror/mirrors.d/",
        "One file per mirror (root's); their secrets, 0600, the service user's. Kept by a purge.",
    ),
    (
        "/etc/pushmirror/keys/",
        "The sender's keys, owned by the service user pushmirror, mode 0700 (pushmirror keygen, run as pushmirror). Kept by a purge: downstreams trust them.",
    ),
    (
        "/var/lib/pushmirror/",
        "state_dir, owned by pushmirror: reports/, ratelimit/, daemon/ (pending pushes, deferred triggers), known_hosts.",
    ),
    ("/usr/lib/systemd/system/pushmirror.service", "The daemon's unit; it runs as pushmirror."),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    ("PUSHMIRROR_CONFIG", "The main file when -c is not given."),
    ("RUST_LOG", "Log filter (tracing-subscriber syntax), overriding -v and -q."),
    ("NOTIFY_SOCKET", "Set by systemd: the daemon reports READY, RELOADING, STOPPING and a STATUS line."),
    (
        "JOURNAL_STREAM",
        "Set by systemd when stderr is the journal: log lines then start with their syslog priority (<4> a warning) and carry no timestamp.",
    ),
    ("HOME", "runmirrors looks for $HOME/.config/pushmirror/pushmirror.yaml."),
];

const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "Every selected mirror ok, or deferred by its own rate limit; a clean stop of daemon and receive."),
    ("1", "At least one mirror failed; for daemon and receive, a part of the service died."),
    (
        "2",
        "Usage or configuration error, or a command that writes run by a user who does not own state_dir: nothing \
         was done. The packaged unit does not restart on 2.",
    ),
    (
        "status --check",
        "A monitoring plugin: 0 OK, 1 WARNING (a mirror not ok: pending, deferred, behind, unreachable), 2 CRITICAL (a mirror failing or far behind), 3 UNKNOWN; a status line with perfdata, then a line per mirror not ok.",
    ),
    ("runmirrors -f", "Failed mirrors exit 0, as archvsync's runmirrors under ftpsync did."),
];

const SIGNALS: &[(&str, &str)] = &[
    (
        "SIGHUP",
        "daemon: reload the configuration; an invalid one is refused, every error logged, the old one kept. The systemd status line says what happened: reloaded (mirrors and archives added, removed, changed) or reload refused: N error(s), running the previous configuration.",
    ),
    (
        "SIGTERM, SIGINT",
        "daemon and receive: stop accepting work (a trigger waiting in backoff ends at once and is resent at the next \
         start), let running triggers or syncs finish for up to --grace, write the report, exit 0.",
    ),
];

const EXAMPLES: &[(&str, &str)] = &[
    ("See the engine work, no configuration needed:", "pushmirror demo"),
    ("Create the sender key, as the service user:", "sudo -u pushmirror pushmirror keygen"),
    ("Validate everything, ownership included (root or the service user):", "sudo pushmirror check"),
    ("Push one archive now:", "sudo -u pushmirror pushmirror push debian"),
    ("Who would get what, and when:", "pushmirror push debian --dry-run"),
    ("Record the mirrors' SSH host keys:", "sudo -u pushmirror pushmirror hostkeys scan"),
    ("Run the daemon:", "systemctl enable --now pushmirror"),
    ("Monitor (Nagios, Icinga, NRPE), no secret needed:", "pushmirror status --check --url http://127.0.0.1:9470"),
];

/// COMMANDS: every subcommand (and theirs), with its usage, description and arguments.
fn commands(w: &mut dyn Write, top: &clap::Command) -> std::io::Result<()> {
    section(w, "COMMANDS")?;
    let mut stack: Vec<(String, &clap::Command)> =
        top.get_subcommands().map(|c| (format!("pushmirror {}", c.get_name()), c)).collect();
    stack.reverse();
    while let Some((name, command)) = stack.pop() {
        if command.get_name() == "help" {
            continue;
        }
        let mut usage = bold(&name);
        for arg in command.get_arguments().filter(|a| !a.is_global_set() && !a.is_hide_set() && a.is_positional()) {
            let value = arg.get_value_names().and_then(|v| v.first()).map_or(arg.get_id().as_str(), |v| v.as_str());
            let value = value.to_uppercase();
            usage.push(' ');
            usage.push_str(&if arg.is_required_set() { italic(&value) } else { format!("[{}]", italic(&value)) });
        }
        if command.has_subcommands() {
            usage.push_str(&format!(" {}", italic("COMMAND")));
        }
        let about = command.get_long_about().or(command.get_about()).map(|s| s.to_string()).unwrap_or_default();
        tagged(w, &usage, &about)?;
        let options: Vec<&clap::Arg> =
            command.get_arguments().filter(|a| !a.is_global_set() && !a.is_hide_set() && !a.is_positional()).collect();
        if !options.is_empty() {
            writeln!(w, ".RS")?;
            for arg in options {
                let mut flag = match (arg.get_short(), arg.get_long()) {
                    (Some(s), Some(l)) => format!("-{s}, --{l}"),
                    (Some(s), None) => format!("-{s}"),
                    (None, Some(l)) => format!("--{l}"),
                    (None, None) => continue,
                };
                let flag_bold = bold(&flag);
                flag.clear();
                let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
                let value = match (takes_value, arg.get_value_names().and_then(|v| v.first())) {
                    (true, Some(v)) => format!(" {}", italic(v)),
                    (true, None) => format!(" {}", italic(&arg.get_id().as_str().to_uppercase())),
                    (false, _) => String::new(),
                };
                let help = arg.get_long_help().or(arg.get_help()).map(|s| s.to_string()).unwrap_or_default();
                tagged(w, &format!("{flag_bold}{value}"), &help)?;
            }
            writeln!(w, ".RE")?;
        }
        let mut nested: Vec<_> = command.get_subcommands().map(|c| (format!("{name} {}", c.get_name()), c)).collect();
        nested.reverse();
        stack.extend(nested);
    }
    Ok(())
}

/// One file's fields; `path` says where each one's defaults are in the table.
fn fields(
    w: &mut dyn Write,
    title: &str,
    list: &[(&str, &str)],
    path: impl Fn(&str) -> (File, String),
) -> std::io::Result<()> {
    writeln!(w, ".SS \"{}\"", escape(title))?;
    for (name, what) in list {
        let (file, path) = path(name);
        tagged(w, &bold(name), &with_defaults(file, &path, what))?;
    }
    Ok(())
}

fn section(w: &mut dyn Write, name: &str) -> std::io::Result<()> {
    writeln!(w, ".SH {name}")
}

fn paragraph(w: &mut dyn Write, text: &str) -> std::io::Result<()> {
    writeln!(w, ".PP\n{}", escape(text))
}

/// A `.TP` entry: `tag` is already roff (from [`bold`]/[`italic`]), `text` is plain.
fn tagged(w: &mut dyn Write, tag: &str, text: &str) -> std::io::Result<()> {
    writeln!(w, ".TP\n{}", line_start(tag))?;
    for (i, para) in text.split("\n\n").enumerate() {
        if i > 0 {
            writeln!(w, ".IP")?;
        }
        writeln!(w, "{}", escape(&para.replace('\n', " ")))?;
    }
    Ok(())
}

fn bold(text: &str) -> String {
    format!("\\fB{}\\fR", escape_inline(text))
}

fn italic(text: &str) -> String {
    format!("\\fI{}\\fR", escape_inline(text))
}

/// Plain text for a roff text line: backslashes and hyphens escaped, and a leading `.` or `'`
/// (which roff would read as a request) protected.
fn escape(text: &str) -> String {
    line_start(&escape_inline(text))
}

fn escape_inline(text: &str) -> String {
    text.replace('\\', "\\e").replace('-', "\\-")
}

fn line_start(line: &str) -> String {
    if line.starts_with('.') || line.starts_with('\'') { format!("\\&{line}") } else { line.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_documents_exactly_the_fields_the_reader_accepts() {
        let names = |list: &[(&str, &str)]| list.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>();
        let own = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(names(MAIN_FIELDS), own(crate::config::MAIN_FIELDS));
        assert_eq!(names(ARCHIVE_FIELDS), own(crate::config::ARCHIVE_FIELDS));
        let mut documented = names(MIRROR_FIELDS);
        let mut accepted = own(&crate::config::mirror_fields());
        documented.sort();
        accepted.sort();
        assert_eq!(documented, accepted);
    }

    #[test]
    fn escaping_keeps_roff_requests_out_of_text() {
        assert_eq!(escape(".hidden -x \\n"), "\\&.hidden \\-x \\en");
        assert_eq!(escape("'quote"), "\\&'quote");
    }

    #[test]
    fn every_subcommand_is_in_commands_and_no_other_page_is_referred_to() {
        let mut page = Vec::new();
        render(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        let top = <crate::operator::cli::Cli as clap::CommandFactory>::command();
        for sub in top.get_subcommands().filter(|c| c.get_name() != "help") {
            let name = escape_inline(&format!("pushmirror {}", sub.get_name()));
            assert!(page.contains(&format!("\\fB{name}\\fR")), "no {name} in COMMANDS");
        }
        assert!(page.contains("pushmirror hostkeys scan"), "nested subcommands are listed");
        assert!(
            !page.contains("pushmirror\\-push(1)") && !page.contains("pushmirror-push"),
            "refers to unshipped pages"
        );
    }
}
