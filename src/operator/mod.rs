//! The operator's side: the command line, what each command does, the man page, the key page,
//! host-key scans.

pub mod check;
pub mod cli;
pub mod commands;
pub mod hostkeys;
pub mod keypage;
pub mod manpage;
