//! Formats that third parties rely on, with no network in them: SSH keys and the
//! `authorized_keys` line downstreams install, signed HTTP triggers, the MQTT trigger and ack
//! format with its SSHSIG.

pub mod keys;
pub mod mqtt;
pub mod signed_http;
