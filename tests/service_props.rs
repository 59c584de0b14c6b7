//! Property test over `POST /api/torrents`: whatever the request (JSON or
//! a .torrent upload; any `only` list, including indices that overflowed,
//! allocated terabytes or were stored whole; good, junk or over-long
//! magnets; any folder), the service answers with 201 or a 4xx and a
//! one-line error, never a dropped connection; a refused add leaves no
//! torrent, no folder and no growth of the state file; the service stays
//! up. It runs in-process (service, API and HTTP server of the library)
//! on loopback.

mod common;

use std::path::Path;

use common::service::http;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use shoal::metainfo::{Metainfo, NewTorrent};
use shoal::service::api::{router, ApiConfig};
use shoal::service::{Service, ServiceConfig};
use shoal::session::{Session, SessionConfig};

const MAX_FILES: u64 = 100;

/// A torrent of three files, for uploads.
fn torrent() -> Vec<u8> {
    NewTorrent {
        name: "three".into(),
        files: Some(vec![
            (vec!["a".into()], 20),
            (vec!["b".into()], 20),
            (vec!["c".into()], 24),
        ]),
        piece_length: 16384,
        pieces: vec![7; 20],
        ..Default::default()
    }
    .to_bytes()
}

#[derive(Clone, Debug)]
enum Add {
    Json(Value),
    Upload(String),
}

fn index() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..4,
        0u64..(2 * MAX_FILES),
        any::<u64>(),
        Just(u64::MAX),
        Just(4_000_000_000_000),
        Just(20_000_000),
    ]
}

fn magnet() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<[u8; 20]>(), "[ -~]{0,40}").prop_map(|(h, dn)| {
            let dn: String = url::form_urlencoded::byte_serialize(dn.as_bytes()).collect();
            format!("magnet:?xt=urn:btih:{}&dn={dn}", hex::encode(h))
        }),
        any::<[u8; 20]>().prop_map(|h| format!(
            "magnet:?xt=urn:btih:{}&dn={}",
            hex::encode(h),
            "n".repeat(70_000)
        )),
        "magnet:\\?[ -~]{0,60}",
        "[ -~]{0,40}",
    ]
}

fn folder() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        "[a-z]{1,6}(/[a-z]{1,6}){0,2}",
        "\\.\\./[a-z]{1,4}",
        Just("/etc".to_string()),
        "[ -~]{0,20}",
    ])
}

fn only() -> impl Strategy<Value = Option<Vec<u64>>> {
    proptest::option::of(proptest::collection::vec(index(), 0..6))
}

fn add() -> impl Strategy<Value = Add> {
    prop_oneof![
        (magnet(), only(), folder(), any::<bool>()).prop_map(|(m, only, dir, url)| {
            let mut v = json!({ if url { "url" } else { "magnet" }: m, "paused": true });
            if let Some(o) = only {
                v["only"] = json!(o);
            }
            if let Some(d) = dir {
                v["download_dir"] = json!(d);
            }
            Add::Json(v)
        }),
        (only(), folder()).prop_map(|(only, dir)| {
            let mut q = "?paused=true".to_string();
            if let Some(o) = only {
                let list: Vec<String> = o.iter().map(u64::to_string).collect();
                q.push_str(&format!("&only={}", list.join(",")));
            }
            if let Some(d) = dir {
                let d: String = url::form_urlencoded::byte_serialize(d.as_bytes()).collect();
                q.push_str(&format!("&download_dir={d}"));
            }
            Add::Upload(q)
        }),
    ]
}

fn hashes(port: u16) -> Vec<String> {
    let (_, _, body) = http(port, "GET", "/api/torrents", &[], b"");
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["info_hash"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn check(port: u16, root: &Path, state: &Path, add: &Add) -> Result<(), TestCaseError> {
    let (status, _, body) = match add {
        Add::Json(v) => http(
            port,
            "POST",
            "/api/torrents",
            &[("Content-Type", "application/json")],
            v.to_string().as_bytes(),
        ),
        Add::Upload(q) => http(
            port,
            "POST",
            &format!("/api/torrents{q}"),
            &[("Content-Type", "application/x-bittorrent")],
            &torrent(),
        ),
    };
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    prop_assert!(
        matches!(status, 201 | 400 | 403 | 409),
        "{status}: {answer}"
    );
    let listed = hashes(port);
    if status == 201 {
        let h = answer["info_hash"].as_str().unwrap_or("").to_string();
        prop_assert_eq!(&listed, &vec![h.clone()]);
        let (gone, _, _) = http(port, "DELETE", &format!("/api/torrents/{h}"), &[], b"");
        prop_assert_eq!(gone, 200);
        prop_assert!(hashes(port).is_empty());
    } else {
        let error = answer["error"].as_str().unwrap_or("");
        prop_assert!(!error.is_empty() && !error.contains('\n'), "{answer}");
        prop_assert!(listed.is_empty(), "a refused add left {listed:?}");
    }
    let made: Vec<_> = std::fs::read_dir(root)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    prop_assert!(made.is_empty(), "folders made: {made:?}");
    let saved = std::fs::metadata(state.join("torrents.json")).map_or(0, |m| m.len());
    prop_assert!(saved < 16 << 10, "torrents.json is {saved} bytes");
    Ok(())
}

#[test]
fn any_add_request_is_answered_and_leaves_no_trace_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (state, root) = (dir.path().join("state"), dir.path().join("dl"));
    std::fs::create_dir_all(&root).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (svc, port): (Service, u16) = rt.block_on(async {
        let session = Session::start(SessionConfig {
            port: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
        let svc = Service::start(
            session,
            ServiceConfig {
                state_dir: state.clone(),
                download_root: root.clone(),
                options: shoal::torrent::Options {
                    max_peers: 5,
                    pex: false,
                    ..Default::default()
                },
                max_files: MAX_FILES as usize,
            },
        )
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = listener.local_addr().unwrap();
        let app = router(
            svc.clone(),
            ApiConfig {
                token: None,
                allowed_hosts: Vec::new(),
                listen,
            },
        );
        tokio::spawn(shoal::service::http::serve(listener, app));
        (svc, listen.port())
    });
    assert!(Metainfo::from_bytes(&torrent()).is_ok());
    let mut runner = TestRunner::new(Config {
        cases: 128,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&add(), |a| check(port, &root, &state, &a));
    if let Err(e) = result {
        panic!("{e}");
    }
    rt.block_on(svc.shutdown());
}
