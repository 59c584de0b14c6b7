//! What a person or a script sees: the command line, the progress bars and
//! JSON events, and the client verbs that talk to a running service.

pub mod cli;
pub mod lines;
pub mod log;
pub mod magnet;
pub mod manual;
pub mod remote;
pub mod single;
pub mod term;
pub mod ui;
