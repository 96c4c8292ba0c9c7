//! The integration tests: one binary, one module per area.

mod bounded;
mod broker;
mod cli;
mod common;
mod config_yaml;
mod daemon;
mod dashboard;
mod docs;
mod faults;
mod freshness;
mod hardening;
mod http;
mod layout;
mod mqtt;
mod notify;
mod openssh;
mod operator;
mod process;
mod receive;
mod rotation;
mod runmirrors;
mod senders;
mod ssh;
mod sshd;
