//! What pushmirror needs of the operating system: files written atomically and locked, the
//! ownership rule, the open-file limit, supervised tasks whose death is seen.

pub mod fdlimit;
pub mod fsutil;
pub mod owner;
pub mod supervise;
