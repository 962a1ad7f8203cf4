//! Small helpers: time stamps and durations as the stack reports them.

pub mod time;
