//! `notify:` (mail and webhooks on state changes) and `hooks:` (commands around a push), in the
//! main file and, overriding it whole, per archive.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use super::defaults;
use super::fields::{Fields, secret_file};
use crate::vocab::secret::Secret;
use crate::vocab::units::max;

/// Where notifications go, and when.
#[derive(Debug, Clone)]
pub struct Notify {
    /// Consecutive failed triggers before a mirror counts as failing.
    pub after_failures: u32,
    /// At most one message about one mirror per this long.
    pub min_interval: Duration,
    /// How long one delivery attempt (mail, webhook) may take.
    pub timeout: Duration,
    /// Mail, if any.
    pub mail: Option<Mail>,
    /// Webhooks.
    pub webhooks: Vec<Webhook>,
}

/// `notify.mail`.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Recipients.
    pub to: Vec<String>,
    /// Sender address.
    pub from: String,
    /// How it is sent.
    pub via: MailVia,
}

/// How mail leaves this host.
#[derive(Debug, Clone)]
pub enum MailVia {
    /// A sendmail-compatible command (argv), reading the message on stdin (`-t`: recipients from
    /// its headers) — every Debian MTA provides `/usr/sbin/sendmail`.
    Sendmail(Vec<String>),
    /// An SMTP server: `smtp://` (STARTTLS when offered, required with credentials) or
    /// `smtps://` (TLS from the start).
    Smtp {
        /// Host name.
        host: String,
        /// Port.
        port: u16,
        /// `smtps://`.
        implicit_tls: bool,
        /// Login, if any.
        credentials: Option<(String, Secret<String>)>,
    },
}

/// What a webhook's body looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// The event as pushmirror's JSON (the documented schema).
    Json,
    /// `{"text": "…"}`: what Slack, Mattermost and Rocket.Chat incoming webhooks take.
    Slack,
}

/// `notify.webhooks[]`.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// The URL (a secret: incoming-webhook URLs are credentials).
    pub url: Secret<Url>,
    /// Its body.
    pub format: WebhookFormat,
    /// Signs the body like pushmirror's signed HTTP triggers.
    pub hmac_secret: Option<Secret<String>>,
    /// Where the URL was read from (the ownership audit names it).
    pub url_file: PathBuf,
}

/// `hooks:`: commands (argv, no shell) around a push.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// Runs before a push; a non-zero exit vetoes it (every trigger skipped, reason `hook`).
    pub before_push: Option<Vec<String>>,
    /// Runs after a push, the report as JSON on stdin.
    pub after_push: Option<Vec<String>>,
    /// Runs for every notification event, the event as JSON on stdin.
    pub on_event: Option<Vec<String>>,
    /// How long each may run.
    pub timeout: Duration,
}

impl Hooks {
    /// Whether any hook is set.
    pub fn any(&self) -> bool {
        self.before_push.is_some() || self.after_push.is_some() || self.on_event.is_some()
    }

    /// The hooks set, by field name.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, &Vec<String>)> {
        [("before_push", &self.before_push), ("after_push", &self.after_push), ("on_event", &self.on_event)]
            .into_iter()
            .filter_map(|(field, argv)| argv.as_ref().map(|a| (field, a)))
    }
}

/// Whether `program` (a path, or a name looked up in PATH) is an executable file, or why not.
pub fn runnable(program: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        return match std::fs::metadata(program) {
            Err(e) => Err(format!("{program}: {e}")),
            Ok(_) if !executable(std::path::Path::new(program)) => Err(format!("{program}: not an executable file")),
            Ok(_) => Ok(()),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| executable(&dir.join(program))) {
        Ok(())
    } else {
        Err(format!("{program}: not found in PATH"))
    }
}

/// The fields of `notify:`.
pub const NOTIFY_FIELDS: &[&str] = &["after_failures", "min_interval", "timeout", "mail", "webhooks"];
/// The fields of `hooks:`.
pub const HOOK_FIELDS: &[&str] = &["before_push", "after_push", "on_event", "timeout"];

/// Reads `notify:`.
pub(super) fn read_notify(mut f: Fields<'_>) -> Option<Notify> {
    let after_failures = match f.take::<u32>("after_failures") {
        Some(0) => {
            f.error("after_failures", "must be at least 1");
            1
        }
        Some(n) => n,
        None => defaults::NOTIFY_AFTER_FAILURES,
    };
    let min_interval = f.duration("min_interval", max::SYNC_TIMEOUT).unwrap_or(defaults::NOTIFY_MIN_INTERVAL);
    let timeout = f.duration("timeout", max::GRACE).unwrap_or(defaults::NOTIFY_TIMEOUT);
    let mail = f.nested("mail").and_then(read_mail);
    let webhooks = f.nested_list("webhooks").into_iter().filter_map(read_webhook).collect();
    f.finish(NOTIFY_FIELDS);
    Some(Notify { after_failures, min_interval, timeout, mail, webhooks })
}

fn read_mail(mut m: Fields<'_>) -> Option<Mail> {
    let to: Option<Vec<String>> = m.take("to");
    match &to {
        None => m.error("to", "missing: the addresses to mail"),
        Some(list) if list.is_empty() => m.error("to", "names no address"),
        Some(list) => {
            for bad in list.iter().filter(|a| a.parse::<lettre::Address>().is_err()) {
                m.error("to", format!("`{bad}` is not a mail address"));
            }
        }
    }
    let from: String = m.take("from").unwrap_or_else(default_from);
    if from.parse::<lettre::Address>().is_err() {
        m.error("from", format!("`{from}` is not a mail address"));
    }
    let via_text: String = m.take("via").unwrap_or_else(|| defaults::NOTIFY_MAIL_VIA.to_string());
    let username: Option<String> = m.take("username");
    let password = secret_file(&mut m, "password_file").map(|(p, _)| p);
    let via = match via_text.as_str() {
        "sendmail" => Some(MailVia::Sendmail(defaults::SENDMAIL.iter().map(|s| s.to_string()).collect())),
        text if text.starts_with('/') => Some(MailVia::Sendmail(text.split_whitespace().map(String::from).collect())),
        text => match Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "smtp" | "smtps") && url.host_str().is_some() => {
                let implicit_tls = url.scheme() == "smtps";
                let port = url.port().unwrap_or(if implicit_tls { 465 } else { 587 });
                if !url.username().is_empty() || url.password().is_some() {
                    m.error("via", "no credentials in the URL: use `username:` and `password_file:`");
                }
                let credentials = match (username, password) {
                    (Some(u), Some(p)) => Some((u, p)),
                    (None, None) => None,
                    _ => {
                        m.error("username", "`username:` and `password_file:` go together");
                        None
                    }
                };
                Some(MailVia::Smtp {
                    host: url.host_str().unwrap_or_default().to_string(),
                    port,
                    implicit_tls,
                    credentials,
                })
            }
            _ => {
                m.error("via", format!("`{text}`: `sendmail`, a sendmail command (/usr/sbin/sendmail -t -oi), or smtp://HOST[:PORT] or smtps://"));
                None
            }
        },
    };
    m.finish(&["to", "from", "via", "username", "password_file"]);
    Some(Mail { to: to?, from, via: via? })
}

/// `pushmirror@HOSTNAME`.
fn default_from() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("pushmirror@{}", if host.is_empty() { "localhost" } else { &host })
}

fn read_webhook(mut w: Fields<'_>) -> Option<Webhook> {
    let url = secret_file(&mut w, "url_file");
    if url.is_none() && !w.has("url_file") && w.errors_so_far() == 0 {
        w.error("url_file", "missing: a file holding the webhook's URL (it is a secret)");
    }
    let format = w.take_parsed("format", |f| match f {
        "json" => Ok(WebhookFormat::Json),
        "slack" => Ok(WebhookFormat::Slack),
        other => Err(format!("unknown format `{other}`, expected json or slack")),
    });
    let hmac_secret = secret_file(&mut w, "hmac_secret_file").map(|(s, _)| s);
    let url = url.and_then(|(raw, url_file)| match Url::parse(raw.expose().trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some((u, url_file)),
        // The parse error names the kind of mistake, never the URL itself.
        _ => {
            w.error("url_file", "the file must hold an http:// or https:// URL");
            None
        }
    });
    w.finish(&["url_file", "format", "hmac_secret_file"]);
    let (url, url_file) = url?;
    Some(Webhook { url: Secret::new(url), format: format.unwrap_or(WebhookFormat::Json), hmac_secret, url_file })
}

/// Reads `hooks:`; each hook is a command as a list (argv, no shell).
pub(super) fn read_hooks(mut h: Fields<'_>) -> Hooks {
    let file = h.file().to_path_buf();
    let command = |h: &mut Fields<'_>, key: &str| -> Option<Vec<String>> {
        let mut argv: Vec<String> = h.take(key)?;
        if argv.is_empty() || argv[0].is_empty() {
            h.error(key, "a command as a list: [\"/usr/local/bin/hook\", \"arg\"]");
            return None;
        }
        // A program with a `/` is a path (relative to this file); a bare name is looked up in PATH.
        if argv[0].contains('/') {
            argv[0] = super::fields::resolve(&file, &argv[0]).display().to_string();
        }
        Some(argv)
    };
    let before_push = command(&mut h, "before_push");
    let after_push = command(&mut h, "after_push");
    let on_event = command(&mut h, "on_event");
    let timeout = h.duration("timeout", max::SYNC_TIMEOUT).unwrap_or(defaults::HOOK_TIMEOUT);
    h.finish(HOOK_FIELDS);
    Hooks { before_push, after_push, on_event, timeout }
}
