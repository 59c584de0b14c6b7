//! shoal: a BitTorrent client. A tracker client finds peers, the picker
//! chooses what to ask for, one task per peer runs the wire protocol, and
//! the verified store checks every piece before it counts. Pure protocol
//! logic (metainfo, wire, picker, choker) does no I/O.

pub mod api;
pub mod bencode;
pub mod bitfield;
pub mod choker;
pub mod cli;
pub mod create;
pub mod dht;
pub mod discovery;
pub mod fetch;
pub mod limit;
pub mod lsd;
pub mod magnet;
pub mod metadata;
pub mod metainfo;
pub mod mse;
pub mod out;
pub mod ownership;
pub mod peer;
pub mod pex;
pub mod picker;
pub mod remote;
pub mod selection;
pub mod service;
pub mod session;
pub mod single;
pub mod store;
pub mod torrent;
pub mod tracker;
pub mod ui;
pub mod units;
pub mod wire;
