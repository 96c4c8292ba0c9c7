//! A notification to a webhook: the event as JSON (the documented schema), or `{"text": …}` for
//! Slack-compatible receivers (Slack, Mattermost, Rocket.Chat), optionally signed like
//! pushmirror's HTTP triggers. Bounded in time; redirects are not followed (a redirect is a
//! failure, so a loop costs one request).

use std::time::{Duration, SystemTime};

use super::event::Event;
use crate::config::notify::{Webhook, WebhookFormat};
use crate::wire::signed_http;

/// How long one delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The body `event` is sent with.
pub fn body(hook: &Webhook, event: &Event) -> Vec<u8> {
    let value = match hook.format {
        WebhookFormat::Json => serde_json::to_value(event).unwrap_or_default(),
        WebhookFormat::Slack => serde_json::json!({ "text": format!("{}\n{}", event.subject(), event.text()) }),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// Delivers `event`; an error names the host only (the URL is a secret).
pub async fn send(client: &reqwest::Client, hook: &Webhook, event: &Event, timeout: Duration) -> Result<(), String> {
    let url = hook.url.expose();
    let host = crate::config::redact_url(url);
    let body = body(hook, event);
    let mut request = client.post(url.clone()).header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = &hook.hmac_secret {
        let timestamp =
            SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs().to_string();
        let signature = signed_http::sign(secret.expose().as_bytes(), &timestamp, &body);
        request =
            request.header(signed_http::TIMESTAMP_HEADER, timestamp).header(signed_http::SIGNATURE_HEADER, signature);
    }
    let response =
        request.body(body).timeout(timeout).send().await.map_err(|e| format!("{host}: {}", e.without_url()))?;
    match response.status() {
        s if s.is_success() => Ok(()),
        s => Err(format!("{host}: HTTP {s}")),
    }
}

/// The client webhooks are sent with: no redirects, bounded.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .build()
        .map_err(|e| e.to_string())
}
