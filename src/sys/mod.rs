//! What pushmirror needs of the operating system: files written atomically and locked, the
//! ownership rule, the open-file limit, supervised tasks whose death is seen, log lines journald
//! understands.

pub mod fdlimit;
pub mod fsutil;
pub mod logging;
pub mod owner;
pub mod runtime;
pub mod supervise;
