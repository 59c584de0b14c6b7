//! The simulator's parts as a module, for tests/sim.rs (the bench's own
//! root is main.rs).

pub mod net;
pub mod scenario;
pub mod swarm;
