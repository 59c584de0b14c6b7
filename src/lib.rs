//! shoal: a BitTorrent client. Pure protocol logic (metainfo, wire, picker,
//! choker) does no I/O; peers, trackers and disk live at the edges.

pub mod bencode;
pub mod bitfield;
pub mod cli;
pub mod create;
pub mod magnet;
pub mod metainfo;
pub mod store;
pub mod ui;
