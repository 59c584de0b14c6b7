//! shoal: a BitTorrent client. Discovery (trackers, DHT, PEX, local
//! discovery) finds peers, the picker chooses what to ask for, one task per
//! peer runs the wire protocol, and the verified store checks every piece
//! before it counts. A session runs many torrents behind one port; the
//! service puts an HTTP API over it; the face (command line, bars, JSON)
//! only watches. Pure protocol logic (metainfo, wire, picker, choker) does
//! no I/O. docs/design.md is the map.

pub mod bitfield;
pub mod discovery;
pub mod face;
pub mod limit;
pub mod metainfo;
pub mod out;
pub mod peer;
pub mod reach;
pub mod service;
pub mod session;
pub mod store;
pub mod torrent;
pub mod units;
