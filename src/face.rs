//! What a person or a script sees: the command line, the progress bars and
//! JSON events, and the client verbs that talk to a running service.

pub mod cli;
pub mod magnet;
pub mod remote;
pub mod single;
pub mod ui;
