//! An archive on the upstream host: its version, read from its trace file, and when an update
//! of it has completed.

pub mod watch;
