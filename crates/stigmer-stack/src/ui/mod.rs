//! What both programs show while they work: phases with timings ([`progress`]) and Ctrl-C as
//! a typed error ([`interrupt`]).

pub mod interrupt;
pub mod progress;
