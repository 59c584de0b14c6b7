//! Port mapping: asks the home router to forward the listening port (TCP
//! and UDP) to us, so peers outside can connect. UPnP IGD (`upnp`, through
//! the igd-next crate) and NAT-PMP/PCP (`pmp`, through crab_nat) are tried
//! together; every mapping granted is renewed before its lease runs out and
//! removed when the session closes. A session owns this part (it owns the
//! port); the faces only read its `MappingStatus`.
//!
//! This file holds the decisions, pure and unit-tested: which result to
//! report and announce, when to renew, when to try again, what to say.
//! The loop at the bottom and the two submodules do the I/O.

pub mod pmp;
pub mod upnp;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

/// Lease asked of a UPnP router, in seconds.
pub const UPNP_LEASE: u32 = 3600;
/// Lifetime asked of a NAT-PMP/PCP router, in seconds (RFC 6886's advice).
pub const PMP_LIFETIME: u32 = 7200;
/// A permanent UPnP mapping (lease 0) is still asked for again this often,
/// so a router that restarted gets it back.
const PERMANENT_REFRESH: Duration = Duration::from_secs(20 * 60);
/// Never renew more often than this, whatever lifetime a router grants.
const MIN_RENEW: Duration = Duration::from_secs(10);
/// Time left for removing mappings when the session closes.
pub const REMOVE_TIME: Duration = Duration::from_secs(3);
/// A round under way when the session closes may finish this long, so
/// what it was granted is removed too (what comes later runs out with its
/// lease).
const FINISH_TIME: Duration = Duration::from_secs(2);
/// The longest any error text from a router is shown.
const MAX_REASON: usize = 120;

/// How a mapping was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Upnp,
    Pcp,
    NatPmp,
}

impl Method {
    pub fn label(self) -> &'static str {
        match self {
            Method::Upnp => "UPnP",
            Method::Pcp => "PCP",
            Method::NatPmp => "NAT-PMP",
        }
    }

    /// Order of preference when several methods mapped the port.
    fn rank(self) -> u8 {
        match self {
            Method::Upnp => 0,
            Method::Pcp => 1,
            Method::NatPmp => 2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub const BOTH: [Proto; 2] = [Proto::Tcp, Proto::Udp];

    pub fn label(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

/// One mapping a router granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    pub method: Method,
    pub proto: Proto,
    pub external_port: u16,
    /// The router's external address, if it told us one that makes sense.
    pub external_ip: Option<IpAddr>,
    /// How long it lasts; zero is permanent (UPnP lease 0).
    pub lifetime: Duration,
}

/// Why a method mapped nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Nobody answered (no SSDP reply, no NAT-PMP/PCP reply).
    NoAnswer,
    /// A router answered and refused, or answered nonsense: the reason.
    Refused(String),
}

/// What one method got for both protocols in one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub method: Method,
    pub granted: Vec<Granted>,
    /// Set when nothing was granted for TCP.
    pub failure: Option<Failure>,
}

/// What port mapping is doing, for whoever shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MappingStatus {
    /// Turned off (`--no-port-mapping`).
    Off,
    /// Asking the routers.
    Trying { port: u16 },
    /// The TCP port is open from outside.
    Open {
        port: u16,
        method: Method,
        external_ip: Option<IpAddr>,
        external_port: u16,
        /// The UDP port was mapped too.
        udp: bool,
    },
    /// Nothing could be mapped: why, in a few words.
    Failed { port: u16, why: String },
}

impl MappingStatus {
    /// "off", "trying", "open" or "failed".
    pub fn state(&self) -> &'static str {
        match self {
            MappingStatus::Off => "off",
            MappingStatus::Trying { .. } => "trying",
            MappingStatus::Open { .. } => "open",
            MappingStatus::Failed { .. } => "failed",
        }
    }

    /// One line for a person, e.g. "port 6881 open via UPnP (external
    /// 203.0.113.7:6881)".
    pub fn line(&self) -> String {
        match self {
            MappingStatus::Off => "port mapping off".into(),
            MappingStatus::Trying { port } => {
                format!("port {port}: asking the router to open it (UPnP, NAT-PMP)")
            }
            MappingStatus::Open {
                port,
                method,
                external_ip,
                external_port,
                udp,
            } => {
                let external = match external_ip {
                    Some(ip) => SocketAddr::new(*ip, *external_port).to_string(),
                    None => format!("port {external_port}"),
                };
                let tcp_only = if *udp { "" } else { ", TCP only" };
                format!(
                    "port {port} open via {} (external {external}{tcp_only})",
                    method.label()
                )
            }
            MappingStatus::Failed { port, why } => format!("port {port} not open: {why}"),
        }
    }

    /// As JSON: `--json`'s `port_mapping` event and the API's
    /// `GET /api/network` (docs/json.md, docs/api.md).
    pub fn json(&self) -> serde_json::Value {
        let (port, external_port, udp) = match self {
            MappingStatus::Off => (None, None, false),
            MappingStatus::Trying { port } | MappingStatus::Failed { port, .. } => {
                (Some(*port), None, false)
            }
            MappingStatus::Open {
                port,
                external_port,
                udp,
                ..
            } => (Some(*port), Some(*external_port), *udp),
        };
        let external_ip = match self {
            MappingStatus::Open { external_ip, .. } => external_ip.map(|ip| ip.to_string()),
            _ => None,
        };
        serde_json::json!({
            "state": self.state(),
            "port": port,
            "method": self.method().map(Method::label),
            "external_ip": external_ip,
            "external_port": external_port,
            "udp": udp,
            "message": self.line(),
        })
    }

    pub fn method(&self) -> Option<Method> {
        match self {
            MappingStatus::Open { method, .. } => Some(*method),
            _ => None,
        }
    }

    /// The external address (IP and TCP port) when the port is open and
    /// the router said its address.
    pub fn external(&self) -> Option<SocketAddr> {
        match self {
            MappingStatus::Open {
                external_ip: Some(ip),
                external_port,
                ..
            } => Some(SocketAddr::new(*ip, *external_port)),
            _ => None,
        }
    }
}

/// What to report after a round: the best TCP mapping (a known external
/// address first, then UPnP, PCP, NAT-PMP), or why there is none.
pub fn choose(port: u16, outcomes: &[Outcome]) -> MappingStatus {
    let tcp = outcomes
        .iter()
        .flat_map(|o| o.granted.iter())
        .filter(|g| g.proto == Proto::Tcp)
        .min_by_key(|g| (g.external_ip.is_none(), g.method.rank()));
    if let Some(g) = tcp {
        let udp = outcomes
            .iter()
            .flat_map(|o| o.granted.iter())
            .any(|u| u.proto == Proto::Udp);
        // Routers that know their address say the same for each method;
        // one that did not may borrow it from another that did.
        let external_ip = g.external_ip.or_else(|| {
            outcomes
                .iter()
                .flat_map(|o| o.granted.iter())
                .find_map(|o| o.external_ip)
        });
        return MappingStatus::Open {
            port,
            method: g.method,
            external_ip,
            external_port: g.external_port,
            udp,
        };
    }
    let refused: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match &o.failure {
            Some(Failure::Refused(why)) => Some(format!("{}: {why}", o.method.label())),
            _ => None,
        })
        .collect();
    let why = if refused.is_empty() {
        "no UPnP/NAT-PMP router answered".to_string()
    } else {
        refused.join("; ")
    };
    MappingStatus::Failed { port, why }
}

/// When to renew what was granted: at half the shortest lease (routers
/// may count from their own clock), a permanent one now and then.
pub fn renew_in(granted: &[Granted]) -> Option<Duration> {
    granted
        .iter()
        .map(|g| {
            if g.lifetime.is_zero() {
                PERMANENT_REFRESH
            } else {
                (g.lifetime / 2).max(MIN_RENEW)
            }
        })
        .min()
}

/// When to ask again after a round that mapped nothing: 1 minute, doubling
/// up to 30 minutes (a router may come up later; asking constantly would
/// flood a network that has none).
pub fn retry_in(failed_rounds: u32) -> Duration {
    let secs = 60u64.saturating_mul(1 << failed_rounds.saturating_sub(1).min(5));
    Duration::from_secs(secs.min(30 * 60))
}

/// A router's text cut to one short line without control characters: a
/// hostile device may answer with a megabyte of anything.
pub fn short_reason(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if clean.chars().count() <= MAX_REASON {
        return clean;
    }
    let mut cut: String = clean.chars().take(MAX_REASON).collect();
    cut.push('…');
    cut
}

/// An external address a router reported, kept only if it could be one:
/// not unspecified, loopback or multicast.
pub fn plausible_external(ip: IpAddr) -> Option<IpAddr> {
    let ip = ip.to_canonical();
    (!ip.is_unspecified() && !ip.is_loopback() && !ip.is_multicast()).then_some(ip)
}

/// Where the port mapping looks for routers. Tests point it at their own
/// router namespace; by default it is the default route's gateway (for
/// NAT-PMP/PCP) and the SSDP multicast group (for UPnP).
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// The gateway's address: NAT-PMP/PCP go there, and the UPnP search is
    /// sent there (unicast) instead of to the multicast group.
    pub gateway: Option<IpAddr>,
    /// How long a UPnP search waits for an answer.
    pub search_time: Option<Duration>,
}

impl Config {
    /// The environment's choice: `SHOAL_GATEWAY=ADDR`.
    pub fn from_env() -> Config {
        Config {
            gateway: std::env::var("SHOAL_GATEWAY")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            search_time: None,
        }
    }
}

/// The running port mapping of a session.
pub struct PortMap {
    status: watch::Receiver<MappingStatus>,
    stop: mpsc::Sender<oneshot::Sender<()>>,
    task: tokio::task::AbortHandle,
}

impl PortMap {
    /// Starts mapping `port` (TCP and UDP); `reach` learns the external
    /// address.
    pub fn start(port: u16, cfg: Config, reach: Arc<crate::reach::Reach>) -> PortMap {
        let (status_tx, status) = watch::channel(MappingStatus::Trying { port });
        let (stop, stop_rx) = mpsc::channel(1);
        let task = tokio::spawn(run(port, cfg, status_tx, reach, stop_rx)).abort_handle();
        PortMap { status, stop, task }
    }

    pub fn status(&self) -> watch::Receiver<MappingStatus> {
        self.status.clone()
    }

    /// Removes every mapping and stops: at most `FINISH_TIME` for a round
    /// under way, then `REMOVE_TIME`.
    pub async fn close(&self) {
        let (ack, done) = oneshot::channel();
        if self.stop.send(ack).await.is_ok() {
            let limit = FINISH_TIME + REMOVE_TIME + Duration::from_secs(1);
            let _ = tokio::time::timeout(limit, done).await;
        }
        self.task.abort();
    }
}

impl Drop for PortMap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A mapping held on a router, with what it takes to renew or remove it.
enum Held {
    Upnp(upnp::Lease),
    Pmp(pmp::Lease),
}

impl Held {
    fn granted(&self) -> &Granted {
        match self {
            Held::Upnp(l) => &l.granted,
            Held::Pmp(l) => &l.granted,
        }
    }

    /// Whether `other` is this mapping renewed. A UPnP mapping is named by
    /// its external port; NAT-PMP and PCP keep one mapping per internal
    /// port and protocol (removing the old one would remove the new).
    fn renewed_by(&self, other: &Held) -> bool {
        let (a, b) = (self.granted(), other.granted());
        match (self, other) {
            (Held::Upnp(_), Held::Upnp(_)) => {
                a.proto == b.proto && a.external_port == b.external_port
            }
            (Held::Pmp(_), Held::Pmp(_)) => a.proto == b.proto,
            _ => false,
        }
    }

    async fn remove(self) {
        match self {
            Held::Upnp(l) => l.remove().await,
            Held::Pmp(l) => l.remove().await,
        }
    }
}

/// Rounds of mapping until asked to stop: both methods at once, the
/// result published, then a wait until renewal (or the next try).
async fn run(
    port: u16,
    cfg: Config,
    status: watch::Sender<MappingStatus>,
    reach: Arc<crate::reach::Reach>,
    mut stop: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut held: Vec<Held> = Vec::new();
    let mut failed_rounds = 0u32;
    loop {
        // Renewals ask for the external ports granted before.
        let before: Vec<(bool, Proto, u16)> = held
            .iter()
            .map(Held::granted)
            .map(|g| (g.method == Method::Upnp, g.proto, g.external_port))
            .collect();
        let prefer = |upnp: bool, p: Proto| {
            before
                .iter()
                .find(|(u, q, _)| *u == upnp && *q == p)
                .map(|(_, _, port)| *port)
        };
        let round = async {
            tokio::join!(
                upnp::map(port, &cfg, |p| prefer(true, p)),
                pmp::map(port, &cfg, |p| prefer(false, p)),
            )
        };
        let mut round = std::pin::pin!(round);
        let ((u_out, u_held), (p_out, p_held)) = tokio::select! {
            r = &mut round => r,
            ack = stop.recv() => {
                // Closing mid-round: what the round is granted goes too.
                if let Ok(((_, u), (_, p))) = tokio::time::timeout(FINISH_TIME, round).await {
                    held = merge(held, u, p).await;
                }
                return close(held, reach, ack).await;
            }
        };
        held = merge(held, u_held, p_held).await;
        let now = choose(port, &[u_out, p_out]);
        // Watchers hear of changes only, not of each renewal.
        status.send_if_modified(|s| {
            let changed = *s != now;
            if changed {
                tracing::info!("{}", now.line());
                *s = now.clone();
            }
            changed
        });
        reach.set_mapped(match &now {
            MappingStatus::Open {
                external_ip,
                external_port,
                ..
            } => Some((*external_ip, *external_port)),
            _ => None,
        });
        let granted: Vec<Granted> = held.iter().map(|h| h.granted().clone()).collect();
        let wait = match renew_in(&granted) {
            Some(w) => {
                failed_rounds = 0;
                w
            }
            None => {
                failed_rounds += 1;
                retry_in(failed_rounds)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            ack = stop.recv() => return close(held, reach, ack).await,
        }
    }
}

/// The mappings of a new round, after removing those of the old that it
/// did not renew (another external port now, or a method that failed).
async fn merge(old: Vec<Held>, upnp: Vec<upnp::Lease>, pmp: Vec<pmp::Lease>) -> Vec<Held> {
    let new: Vec<Held> = upnp
        .into_iter()
        .map(Held::Upnp)
        .chain(pmp.into_iter().map(Held::Pmp))
        .collect();
    for o in old {
        if !new.iter().any(|n| o.renewed_by(n)) {
            o.remove().await;
        }
    }
    new
}

/// Removes what is held, all at once, within `REMOVE_TIME`.
async fn close(held: Vec<Held>, reach: Arc<crate::reach::Reach>, ack: Option<oneshot::Sender<()>>) {
    reach.set_mapped(None);
    let n = held.len();
    let all = futures_util::future::join_all(held.into_iter().map(Held::remove));
    if tokio::time::timeout(REMOVE_TIME, all).await.is_err() {
        tracing::warn!(
            "port mapping: removing {n} mappings took too long; they expire with their lease"
        );
    }
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(method: Method, proto: Proto, port: u16, ip: Option<&str>, life: u64) -> Granted {
        Granted {
            method,
            proto,
            external_port: port,
            external_ip: ip.map(|s| s.parse().unwrap()),
            lifetime: Duration::from_secs(life),
        }
    }

    fn out(method: Method, granted: Vec<Granted>, failure: Option<Failure>) -> Outcome {
        Outcome {
            method,
            granted,
            failure,
        }
    }

    #[test]
    fn nothing_answered() {
        let s = choose(
            6881,
            &[
                out(Method::Upnp, vec![], Some(Failure::NoAnswer)),
                out(Method::NatPmp, vec![], Some(Failure::NoAnswer)),
            ],
        );
        assert_eq!(s.state(), "failed");
        assert_eq!(
            s.line(),
            "port 6881 not open: no UPnP/NAT-PMP router answered"
        );
        assert_eq!(s.external(), None);
    }

    #[test]
    fn a_refusal_is_named() {
        let s = choose(
            6881,
            &[
                out(
                    Method::Upnp,
                    vec![],
                    Some(Failure::Refused("error 501 ActionFailed".into())),
                ),
                out(Method::NatPmp, vec![], Some(Failure::NoAnswer)),
            ],
        );
        assert_eq!(s.line(), "port 6881 not open: UPnP: error 501 ActionFailed");
    }

    #[test]
    fn upnp_preferred_when_both_mapped() {
        let ip = Some("203.0.113.7");
        let s = choose(
            6881,
            &[
                out(
                    Method::NatPmp,
                    vec![
                        g(Method::NatPmp, Proto::Tcp, 6881, ip, 7200),
                        g(Method::NatPmp, Proto::Udp, 6881, ip, 7200),
                    ],
                    None,
                ),
                out(
                    Method::Upnp,
                    vec![
                        g(Method::Upnp, Proto::Tcp, 6881, ip, 3600),
                        g(Method::Upnp, Proto::Udp, 6881, ip, 3600),
                    ],
                    None,
                ),
            ],
        );
        assert_eq!(
            s.line(),
            "port 6881 open via UPnP (external 203.0.113.7:6881)"
        );
        assert_eq!(s.external(), Some("203.0.113.7:6881".parse().unwrap()));
        assert_eq!(s.method(), Some(Method::Upnp));
    }

    #[test]
    fn a_known_address_beats_preference() {
        let s = choose(
            6881,
            &[
                out(
                    Method::Upnp,
                    vec![g(Method::Upnp, Proto::Tcp, 40000, None, 3600)],
                    None,
                ),
                out(
                    Method::Pcp,
                    vec![g(Method::Pcp, Proto::Tcp, 6881, Some("198.51.100.2"), 7200)],
                    None,
                ),
            ],
        );
        assert_eq!(
            s.line(),
            "port 6881 open via PCP (external 198.51.100.2:6881, TCP only)"
        );
    }

    #[test]
    fn udp_alone_is_not_open() {
        let s = choose(
            6881,
            &[out(
                Method::NatPmp,
                vec![g(Method::NatPmp, Proto::Udp, 6881, None, 7200)],
                Some(Failure::Refused("TCP: out of resources".into())),
            )],
        );
        assert_eq!(s.state(), "failed");
        assert!(
            s.line().contains("NAT-PMP: TCP: out of resources"),
            "{}",
            s.line()
        );
    }

    #[test]
    fn address_unknown_shows_the_port() {
        let s = choose(
            6881,
            &[out(
                Method::Upnp,
                vec![g(Method::Upnp, Proto::Tcp, 7000, None, 3600)],
                None,
            )],
        );
        assert_eq!(
            s.line(),
            "port 6881 open via UPnP (external port 7000, TCP only)"
        );
        assert_eq!(s.external(), None);
    }

    #[test]
    fn renewal_at_half_the_shortest_lease() {
        assert_eq!(renew_in(&[]), None);
        let v = [
            g(Method::Upnp, Proto::Tcp, 1, None, 3600),
            g(Method::NatPmp, Proto::Tcp, 1, None, 600),
        ];
        assert_eq!(renew_in(&v), Some(Duration::from_secs(300)));
        // A router that grants 2 s is not asked again 1 s later.
        let short = [g(Method::NatPmp, Proto::Tcp, 1, None, 2)];
        assert_eq!(renew_in(&short), Some(MIN_RENEW));
        let permanent = [g(Method::Upnp, Proto::Tcp, 1, None, 0)];
        assert_eq!(renew_in(&permanent), Some(PERMANENT_REFRESH));
    }

    #[test]
    fn retries_back_off() {
        assert_eq!(retry_in(1), Duration::from_secs(60));
        assert_eq!(retry_in(2), Duration::from_secs(120));
        assert_eq!(retry_in(5), Duration::from_secs(960));
        assert_eq!(retry_in(6), Duration::from_secs(1800));
        assert_eq!(retry_in(u32::MAX), Duration::from_secs(1800));
    }

    #[test]
    fn reasons_are_short_and_clean() {
        assert_eq!(short_reason("a\nb\x1b[31m  c"), "a b [31m c");
        let long = "x".repeat(10_000);
        let s = short_reason(&long);
        assert_eq!(s.chars().count(), MAX_REASON + 1);
    }

    #[test]
    fn implausible_external_addresses() {
        assert_eq!(plausible_external("0.0.0.0".parse().unwrap()), None);
        assert_eq!(plausible_external("127.0.0.1".parse().unwrap()), None);
        assert_eq!(plausible_external("239.1.1.1".parse().unwrap()), None);
        assert_eq!(
            plausible_external("::ffff:10.0.0.1".parse().unwrap()),
            Some("10.0.0.1".parse().unwrap())
        );
    }
}
