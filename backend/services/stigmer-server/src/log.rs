//! Log lines on stderr: `<RFC 3339 UTC time> <LEVEL> <message>`. The CLI that starts the server
//! redirects stderr to `<data>/logs/stigmer-server.log`, so plain lines are all that is needed.

use std::fmt;

use crate::clock;

pub fn write_line(level: &str, message: fmt::Arguments<'_>) {
    eprintln!(
        "{} {level} {message}",
        clock::rfc3339_from_unix_millis(clock::now_unix_millis())
    );
}

macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write_line("INFO", format_args!($($arg)*)) };
}

macro_rules! warning {
    ($($arg:tt)*) => { $crate::log::write_line("WARN", format_args!($($arg)*)) };
}

macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write_line("ERROR", format_args!($($arg)*)) };
}

pub(crate) use {error, info, warning};
