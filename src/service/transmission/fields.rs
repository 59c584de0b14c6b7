//! `torrent-get` fields: what a Transmission client asks for, computed from
//! the service's views of a torrent. Pure: no I/O, no lock.
//!
//! Names and units are Transmission's (rpc-spec, RPC version 16, what
//! transmission-remote 3.00 asks for): sizes in bytes, rates in bytes per
//! second, dates in Unix seconds, `-1` for "not known". A field shoal has
//! nothing for is left out, as Transmission leaves out names it does not
//! know, except those transmission-remote needs to print a line at all
//! (`-l` drops a torrent that lacks one of its fields), which get a
//! neutral value.

use serde_json::{json, Map, Value};

use crate::metainfo::Metainfo;
use crate::service::{FileView, Priority, TorrentDetail, TorrentView};
use crate::torrent::{PeerView, TrackerView};

/// Transmission's `tr_torrent_activity`.
pub const STOPPED: i64 = 0;
pub const CHECK: i64 = 2;
pub const DOWNLOAD: i64 = 4;
pub const SEED: i64 = 6;

/// Transmission's status code for a service state: paused, failed and
/// done torrents are stopped; fetching a magnet's metadata is downloading.
pub fn status(state: &str) -> i64 {
    match state {
        "checking" => CHECK,
        "downloading" | "metadata" => DOWNLOAD,
        "seeding" => SEED,
        _ => STOPPED,
    }
}

/// Transmission's ratio: uploaded over downloaded (or over what it has,
/// for a torrent that downloaded nothing); -1 for none, -2 for infinite.
pub fn ratio(uploaded: u64, downloaded: u64, have: u64) -> f64 {
    let base = if downloaded > 0 { downloaded } else { have };
    match (uploaded, base) {
        (0, 0) => -1.0,
        (_, 0) => -2.0,
        (u, b) => u as f64 / b as f64,
    }
}

fn priority_code(p: Priority) -> i64 {
    match p {
        Priority::High => 1,
        _ => 0,
    }
}

/// Fields that need the torrent's detail (files, trackers) or its peers.
pub fn needs_detail(field: &str) -> bool {
    matches!(
        field,
        "files"
            | "fileStats"
            | "priorities"
            | "wanted"
            | "trackers"
            | "trackerStats"
            | "pieceCount"
    )
}

pub fn needs_peers(field: &str) -> bool {
    matches!(
        field,
        "peers" | "peersFrom" | "peersGettingFromUs" | "peersSendingToUs"
    )
}

/// Everything known of one torrent for `torrent-get`.
pub struct Source<'a> {
    pub id: i64,
    pub view: &'a TorrentView,
    pub detail: Option<&'a TorrentDetail>,
    pub meta: Option<&'a Metainfo>,
    pub peers: &'a [PeerView],
    /// The service's `--seed-ratio`, Transmission's `seedRatioLimit`.
    pub seed_ratio: Option<f64>,
    pub now: u64,
}

/// The value of `field` for a torrent, or None to leave it out.
pub fn field(s: &Source, field: &str) -> Option<Value> {
    let v = s.view;
    let left = v.total.saturating_sub(v.have_bytes);
    let meta = s.meta;
    Some(match field {
        "id" => json!(s.id),
        "hashString" => json!(v.info_hash),
        "name" => json!(v.name),
        "status" => json!(status(v.state)),
        "error" => json!(if v.error.is_some() { 3 } else { 0 }),
        "errorString" => json!(v.error.clone().unwrap_or_default()),
        "percentDone" => json!(v.progress),
        "metadataPercentComplete" => json!(if v.state == "metadata" { 0.0 } else { 1.0 }),
        "recheckProgress" => json!(v.check_progress.unwrap_or(0.0)),
        "rateDownload" => json!(v.down_rate),
        "rateUpload" => json!(v.up_rate),
        "eta" => json!(v.eta.map_or(-1, |e| e as i64)),
        "etaIdle" => json!(-1),
        "totalSize" => json!(meta.map_or(v.total, |m| m.total_length)),
        "sizeWhenDone" => json!(v.total),
        "leftUntilDone" => json!(left),
        "desiredAvailable" => json!(0),
        "haveValid" => json!(v.have_bytes),
        "haveUnchecked" => json!(0),
        "corruptEver" => json!(0),
        "downloadedEver" => json!(v.downloaded),
        "uploadedEver" => json!(v.uploaded),
        "uploadRatio" => json!(ratio(v.uploaded, v.downloaded, v.have_bytes)),
        "downloadDir" => json!(v.download_dir),
        "isFinished" => json!(v.state == "done"),
        "isStalled" => json!(false),
        "isPrivate" => json!(meta.is_some_and(|m| m.private)),
        "addedDate" => json!(v.added),
        "activityDate" => json!(if v.down_rate + v.up_rate > 0 {
            s.now
        } else {
            0
        }),
        "startDate" | "doneDate" | "secondsDownloading" | "secondsSeeding" => json!(0),
        "peersConnected" => json!(v.peers),
        "peersGettingFromUs" => json!(s.peers.iter().filter(|p| p.up_rate > 0).count()),
        "peersSendingToUs" => json!(s.peers.iter().filter(|p| p.down_rate > 0).count()),
        "peersFrom" => peers_from(s.peers),
        "peers" => Value::Array(s.peers.iter().map(peer).collect()),
        "maxConnectedPeers" | "peer-limit" => return None,
        "queuePosition" => json!(s.id),
        "bandwidthPriority" => json!(0),
        "downloadLimited" | "uploadLimited" => json!(false),
        "downloadLimit" | "uploadLimit" => json!(0),
        "honorsSessionLimits" => json!(true),
        "seedRatioMode" => json!(0),
        "seedRatioLimit" => json!(s.seed_ratio.unwrap_or(0.0)),
        "seedIdleMode" => json!(0),
        "labels" => json!(v.category.iter().collect::<Vec<_>>()),
        "manualAnnounceTime" => json!(-1),
        "webseedsSendingToUs" => json!(0),
        "webseeds" => json!(meta.map(|m| m.url_list.clone()).unwrap_or_default()),
        "comment" => json!(meta.and_then(|m| m.comment.clone()).unwrap_or_default()),
        "creator" => json!(meta.and_then(|m| m.created_by.clone()).unwrap_or_default()),
        "dateCreated" => json!(meta.and_then(|m| m.creation_date).unwrap_or(0)),
        "pieceSize" => json!(meta.map_or(0, |m| m.piece_length)),
        "pieceCount" => json!(s.detail.map_or(0, |d| d.piece_count)),
        "magnetLink" => json!(v.magnet),
        "files" => Value::Array(files(s).iter().map(file).collect()),
        "fileStats" => Value::Array(files(s).iter().map(file_stats).collect()),
        "priorities" => Value::Array(
            files(s)
                .iter()
                .map(|f| json!(priority_code(f.priority)))
                .collect(),
        ),
        "wanted" => Value::Array(
            files(s)
                .iter()
                .map(|f| json!(i64::from(f.priority != Priority::Skip)))
                .collect(),
        ),
        "trackers" => Value::Array(trackers(s).iter().enumerate().map(tracker).collect()),
        "trackerStats" => Value::Array(
            trackers(s)
                .iter()
                .enumerate()
                .map(|(i, t)| tracker_stats(i, t))
                .collect(),
        ),
        _ => return None,
    })
}

/// The object of one torrent with the fields asked for.
pub fn object(s: &Source, fields: &[String]) -> Value {
    let mut m = Map::new();
    for f in fields {
        if let Some(v) = field(s, f) {
            m.insert(f.clone(), v);
        }
    }
    Value::Object(m)
}

/// The values of the fields asked for, in their order (`format: table`);
/// null for a field shoal has nothing for.
pub fn row(s: &Source, fields: &[String]) -> Value {
    Value::Array(
        fields
            .iter()
            .map(|f| field(s, f).unwrap_or(Value::Null))
            .collect(),
    )
}

fn files<'a>(s: &Source<'a>) -> &'a [FileView] {
    s.detail.map_or(&[], |d| d.files.as_slice())
}

fn trackers<'a>(s: &Source<'a>) -> &'a [TrackerView] {
    s.detail.map_or(&[], |d| d.tracker_status.as_slice())
}

fn file(f: &FileView) -> Value {
    json!({"bytesCompleted": f.done, "length": f.length, "name": f.path})
}

fn file_stats(f: &FileView) -> Value {
    json!({
        "bytesCompleted": f.done,
        "wanted": f.priority != Priority::Skip,
        "priority": priority_code(f.priority),
    })
}

/// The host part of a tracker URL, as Transmission's `host` ("h:port").
fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port_or_known_default() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            })
        })
        .unwrap_or_else(|| url.to_string())
}

fn tracker((i, t): (usize, &TrackerView)) -> Value {
    json!({"id": i, "announce": t.url, "scrape": "", "tier": t.tier, "sitename": ""})
}

/// A tracker's state as Transmission's `trackerStats` row: every key
/// transmission-remote -it needs to print it.
fn tracker_stats(i: usize, t: &TrackerView) -> Value {
    let announced = t.last_announce.is_some();
    json!({
        "id": i,
        "announce": t.url,
        "host": host_of(&t.url),
        "sitename": "",
        "scrape": "",
        "tier": t.tier,
        "isBackup": false,
        // Transmission's tr_tracker_state: 0 inactive, 1 waiting.
        "announceState": if t.status == "not contacted" { 0 } else { 1 },
        "scrapeState": 0,
        "hasAnnounced": announced,
        "hasScraped": false,
        "lastAnnounceSucceeded": t.status == "working",
        "lastAnnounceTimedOut": false,
        "lastAnnounceResult": match (&t.error, t.status) {
            (Some(e), _) => e.clone(),
            (None, "working") => "Success".to_string(),
            _ => String::new(),
        },
        "lastAnnounceTime": t.last_announce.unwrap_or(0),
        "lastAnnounceStartTime": t.last_announce.unwrap_or(0),
        "lastAnnouncePeerCount": t.peers.unwrap_or(0),
        "nextAnnounceTime": t.next_announce.unwrap_or(0),
        "seederCount": t.seeders.map_or(-1, i64::from),
        "leecherCount": t.leechers.map_or(-1, i64::from),
        "downloadCount": -1,
        "lastScrapeSucceeded": false,
        "lastScrapeTimedOut": false,
        "lastScrapeResult": "",
        "lastScrapeTime": 0,
        "lastScrapeStartTime": 0,
        "nextScrapeTime": 0,
    })
}

/// Peers by where their address came from, as Transmission counts them.
fn peers_from(peers: &[PeerView]) -> Value {
    let count = |src: &str| peers.iter().filter(|p| p.source == src).count();
    json!({
        "fromTracker": count("tracker"),
        "fromDht": count("dht"),
        "fromPex": count("pex"),
        "fromLpd": count("lsd"),
        "fromIncoming": count("incoming"),
        "fromCache": count("manual"),
        "fromLtep": 0,
    })
}

fn peer(p: &PeerView) -> Value {
    // Transmission's flags: D downloading from it, U uploading to it,
    // c it chokes us, I incoming.
    let mut flags = String::new();
    if p.down_rate > 0 {
        flags.push('D');
    }
    if p.up_rate > 0 {
        flags.push('U');
    }
    if p.choked {
        flags.push('c');
    }
    if p.source == "incoming" {
        flags.push('I');
    }
    json!({
        "address": p.addr.ip().to_string(),
        "port": p.addr.port(),
        "clientName": p.client,
        "progress": p.progress,
        "rateToClient": p.down_rate,
        "rateToPeer": p.up_rate,
        "flagStr": flags,
        "isEncrypted": false,
        "isIncoming": p.source == "incoming",
        "isUTP": false,
        "isDownloadingFrom": p.down_rate > 0,
        "isUploadingTo": p.up_rate > 0,
        "clientIsChoked": p.choked,
        "clientIsInterested": p.interested,
        "peerIsChoked": false,
        "peerIsInterested": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: &'static str) -> TorrentView {
        TorrentView {
            info_hash: "ab".repeat(20),
            name: "x y".into(),
            magnet: format!("magnet:?xt=urn:btih:{}&dn=x%20y", "ab".repeat(20)),
            state,
            error: None,
            progress: 0.5,
            total: 1000,
            have_bytes: 500,
            downloaded: 400,
            uploaded: 200,
            down_rate: 10,
            up_rate: 0,
            peers: 2,
            known_peers: 3,
            eta: Some(50),
            download_dir: "/dl".into(),
            added: 7,
            check_progress: None,
            status: None,
            clash: false,
            category: None,
        }
    }

    #[test]
    fn statuses_and_ratios() {
        assert_eq!(status("paused"), STOPPED);
        assert_eq!(status("done"), STOPPED);
        assert_eq!(status("error"), STOPPED);
        assert_eq!(status("checking"), CHECK);
        assert_eq!(status("metadata"), DOWNLOAD);
        assert_eq!(status("seeding"), SEED);
        assert_eq!(ratio(0, 0, 0), -1.0);
        assert_eq!(ratio(5, 0, 0), -2.0);
        assert_eq!(ratio(5, 0, 10), 0.5);
        assert_eq!(ratio(30, 10, 100), 3.0);
    }

    #[test]
    fn the_fields_transmission_remote_lists_are_there() {
        let v = view("downloading");
        let s = Source {
            id: 3,
            view: &v,
            detail: None,
            meta: None,
            peers: &[],
            seed_ratio: None,
            now: 100,
        };
        let fields: Vec<String> = [
            "error",
            "errorString",
            "eta",
            "id",
            "isFinished",
            "leftUntilDone",
            "name",
            "peersGettingFromUs",
            "peersSendingToUs",
            "rateDownload",
            "rateUpload",
            "sizeWhenDone",
            "status",
            "uploadRatio",
            "noSuchField",
        ]
        .map(String::from)
        .to_vec();
        let o = object(&s, &fields);
        assert_eq!(o.as_object().unwrap().len(), fields.len() - 1, "{o}");
        assert_eq!(o["leftUntilDone"], 500);
        assert_eq!(o["status"], DOWNLOAD);
        assert_eq!(o["eta"], 50);
        assert_eq!(o["uploadRatio"], 0.5);
        assert_eq!(
            field(&s, "magnetLink").unwrap(),
            format!("magnet:?xt=urn:btih:{}&dn=x%20y", "ab".repeat(20))
        );
    }
}
