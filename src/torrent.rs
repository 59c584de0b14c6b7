//! One torrent: its core, which makes every decision (what to ask whom
//! for, whom to serve, whom to trust) and does no I/O, and the thin task
//! that runs the core in tokio. Peer tasks, web seed tasks, discovery and
//! the listener talk to the task only by messages, so no lock guards the
//! swarm state; the task turns them into the core's inputs and carries
//! out its actions.

pub mod choker;
pub mod core;
pub mod deadline;
pub mod hashes;
pub mod holepunch;
pub mod leaves;
pub mod picker;
pub mod selection;
pub mod status;
pub mod superseed;
pub mod task;
pub mod webseed;

pub use self::core::{Action, Config, Core, Input, Options, PieceJob, Traffic, Verified};
pub use self::status::{
    short_reason, Outcome, PeerSource, PeerView, Progress, State, TrackerView, WEB_SEED_LABEL,
};
pub use self::task::{Event, Task};
