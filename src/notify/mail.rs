//! A notification as mail: an RFC 5322 message built by lettre, handed to the local sendmail
//! (the command reads it on stdin) or to an SMTP server. Every step bounded in time.

use std::process::Stdio;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::io::AsyncWriteExt as _;

use super::event::Event;
use crate::config::notify::{Mail, MailVia};

/// The message for `event`.
pub fn message(mail: &Mail, event: &Event) -> Result<Message, String> {
    let from = mail.from.parse().map_err(|e| format!("from {}: {e}", mail.from))?;
    let mut builder =
        Message::builder().message_id(None).from(from).subject(event.subject()).header(ContentType::TEXT_PLAIN);
    for to in &mail.to {
        builder = builder.to(to.parse().map_err(|e| format!("to {to}: {e}"))?);
    }
    builder.body(event.text()).map_err(|e| format!("cannot build the message: {e}"))
}

/// Delivers `event` by `mail`; an error says why, never with a password.
pub async fn send(mail: &Mail, event: &Event, timeout: Duration) -> Result<(), String> {
    let message = message(mail, event)?;
    match &mail.via {
        MailVia::Sendmail(argv) => sendmail(argv, &message.formatted(), timeout).await,
        MailVia::Smtp { host, port, implicit_tls, credentials } => {
            let tls = TlsParameters::new(host.clone()).map_err(|e| format!("TLS for {host}: {e}"))?;
            let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
                .port(*port)
                .timeout(Some(timeout));
            builder = match (implicit_tls, credentials) {
                (true, _) => builder.tls(Tls::Wrapper(tls)),
                // A password only ever travels encrypted.
                (false, Some(_)) => builder.tls(Tls::Required(tls)),
                (false, None) => builder.tls(Tls::Opportunistic(tls)),
            };
            if let Some((user, password)) = credentials {
                builder = builder.credentials(Credentials::new(user.clone(), password.expose().clone()));
            }
            let transport = builder.build();
            match tokio::time::timeout(timeout, transport.send(message)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("smtp://{host}:{port}: {e}")),
                Err(_) => {
                    Err(format!("smtp://{host}:{port}: no answer within {}", humantime::format_duration(timeout)))
                }
            }
        }
    }
}

/// Pipes `message` into the sendmail command `argv` and waits for it, at most `timeout`; one
/// that hangs is killed.
async fn sendmail(argv: &[String], message: &[u8], timeout: Duration) -> Result<(), String> {
    let shown = argv.join(" ");
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let run = async {
        stdin.write_all(message).await.map_err(|e| format!("{shown}: {e}"))?;
        drop(stdin);
        let out = child.wait_with_output().await.map_err(|e| format!("{shown}: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => {
                let said = String::from_utf8_lossy(&out.stderr[..out.stderr.len().min(1024)]).trim().to_string();
                Err(format!("{shown} exited {}: {said}", out.status))
            }
        }
    };
    // On timeout the child is dropped with the future: kill_on_drop ends it.
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| Err(format!("{shown}: no end within {}", humantime::format_duration(timeout))))
}
