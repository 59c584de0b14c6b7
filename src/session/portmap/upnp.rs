//! UPnP IGD through igd-next: find the router by SSDP, ask it to forward
//! the port (the same external number first, any other if that one is
//! taken), read its external address, and check in its mapping table that
//! what it says it mapped points at us. igd-next bounds what a device may
//! send (1 MiB bodies, 64 levels of XML) and accepts control URLs only on
//! the address that answered the search.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use igd_next::aio::tokio::Tokio;
use igd_next::aio::Gateway;
use igd_next::{
    AddAnyPortError, AddPortError, GetGenericPortMappingEntryError, PortMappingEntry,
    PortMappingProtocol, SearchError, SearchOptions,
};

use super::{plausible_external, short_reason, Config, Failure, Granted, Method, Outcome, Proto};

/// How long a search waits for a router to answer.
const SEARCH_TIME: Duration = Duration::from_secs(4);
/// Entries of the router's table read to find ours.
const MAX_ENTRIES: u32 = 64;
/// What a mapping is called in the router's table.
const DESCRIPTION: &str = "shoal";

/// A mapping held on a UPnP router.
pub struct Lease {
    pub granted: Granted,
    gateway: Gateway<Tokio>,
}

impl Lease {
    pub async fn remove(self) {
        let g = &self.granted;
        match self
            .gateway
            .remove_port(protocol(g.proto), g.external_port)
            .await
        {
            Ok(()) => tracing::info!("UPnP: removed {} port {}", g.proto.label(), g.external_port),
            Err(e) => tracing::info!(
                "UPnP: removing {} port {}: {}",
                g.proto.label(),
                g.external_port,
                short_reason(&e.to_string())
            ),
        }
    }
}

fn protocol(p: Proto) -> PortMappingProtocol {
    match p {
        Proto::Tcp => PortMappingProtocol::TCP,
        Proto::Udp => PortMappingProtocol::UDP,
    }
}

/// Maps `port` for TCP and UDP on the UPnP router, asking first for the
/// external port `prefer` names (what an earlier round got), else `port`.
pub async fn map(
    port: u16,
    cfg: &Config,
    prefer: impl Fn(Proto) -> Option<u16>,
) -> (Outcome, Vec<Lease>) {
    let failed = |failure| {
        (
            Outcome {
                method: Method::Upnp,
                granted: Vec::new(),
                failure: Some(failure),
            },
            Vec::new(),
        )
    };
    let gateway = match search(cfg).await {
        Ok(g) => g,
        Err(f) => return failed(f),
    };
    let Some(local_ip) = local_ip_toward(gateway.addr.ip()) else {
        return failed(Failure::Refused(format!(
            "no route to the router at {}",
            gateway.addr.ip()
        )));
    };
    let local = SocketAddr::new(local_ip, port);
    let external_ip = gateway
        .get_external_ip()
        .await
        .ok()
        .and_then(plausible_external);
    let mut outcome = Outcome {
        method: Method::Upnp,
        granted: Vec::new(),
        failure: None,
    };
    let mut leases = Vec::new();
    for proto in Proto::BOTH {
        let want = prefer(proto).unwrap_or(port);
        let got = add(&gateway, proto, want, local).await;
        let got = match got {
            Ok((ext, lease)) => check(&gateway, proto, ext, local)
                .await
                .map(|()| (ext, lease)),
            Err(e) => Err(e),
        };
        match got {
            Ok((external_port, lease)) => {
                let granted = Granted {
                    method: Method::Upnp,
                    proto,
                    external_port,
                    external_ip,
                    lifetime: Duration::from_secs(lease.into()),
                };
                outcome.granted.push(granted.clone());
                leases.push(Lease {
                    granted,
                    gateway: gateway.clone(),
                });
            }
            Err(why) => {
                tracing::debug!("UPnP: {} port {port}: {why}", proto.label());
                if proto == Proto::Tcp {
                    outcome.failure = Some(Failure::Refused(why));
                }
            }
        }
    }
    (outcome, leases)
}

/// Finds the router: SSDP to the multicast group, or to the configured
/// gateway only.
async fn search(cfg: &Config) -> Result<Gateway<Tokio>, Failure> {
    let mut opts = SearchOptions::default();
    opts.bind_addr = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0);
    if let Some(gw) = cfg.gateway {
        opts.broadcast_address = SocketAddr::new(gw, 1900);
    }
    let time = cfg.search_time.unwrap_or(SEARCH_TIME);
    opts.timeout = Some(time);
    opts.single_search_timeout = Some(time);
    match igd_next::aio::tokio::search_gateway(opts).await {
        Ok(g) => {
            tracing::debug!("UPnP: router at {} ({})", g.addr, short_reason(&g.root_url));
            Ok(g)
        }
        Err(SearchError::NoResponseWithinTimeout | SearchError::IoError(_)) => {
            Err(Failure::NoAnswer)
        }
        Err(e) => Err(Failure::Refused(short_reason(&e.to_string()))),
    }
}

/// Asks for `want`; if another host has it, for any port. Returns the
/// external port and the lease granted (0: permanent).
async fn add(
    gw: &Gateway<Tokio>,
    proto: Proto,
    want: u16,
    local: SocketAddr,
) -> Result<(u16, u32), String> {
    let p = protocol(proto);
    let lease = super::UPNP_LEASE;
    match gw.add_port(p, want, local, lease, DESCRIPTION).await {
        Ok(()) => return Ok((want, lease)),
        Err(AddPortError::OnlyPermanentLeasesSupported) => {
            return gw
                .add_port(p, want, local, 0, DESCRIPTION)
                .await
                .map(|()| (want, 0))
                .map_err(|e| add_error(&e));
        }
        Err(AddPortError::PortInUse | AddPortError::SamePortValuesRequired) => {}
        Err(e) => return Err(add_error(&e)),
    }
    match gw.add_any_port(p, local, lease, DESCRIPTION).await {
        Ok(0) => Err("the router granted port 0".into()),
        Ok(ext) => Ok((ext, lease)),
        Err(AddAnyPortError::OnlyPermanentLeasesSupported) => {
            match gw.add_any_port(p, local, 0, DESCRIPTION).await {
                Ok(0) => Err("the router granted port 0".into()),
                Ok(ext) => Ok((ext, 0)),
                Err(e) => Err(short_reason(&e.to_string())),
            }
        }
        Err(AddAnyPortError::RequestError(e)) => Err(request_error(&e)),
        Err(e) => Err(short_reason(&e.to_string())),
    }
}

/// "error 501 ActionFailed" rather than the crate's wording; a device's
/// text is cut short.
fn add_error(e: &AddPortError) -> String {
    match e {
        AddPortError::RequestError(r) => request_error(r),
        e => short_reason(&e.to_string()),
    }
}

fn request_error(e: &igd_next::RequestError) -> String {
    match e {
        igd_next::RequestError::ErrorCode(code, text) => {
            short_reason(&format!("error {code} {text}"))
        }
        igd_next::RequestError::InvalidResponse(_) => "invalid answer".into(),
        e => short_reason(&e.to_string()),
    }
}

/// Reads the router's table (up to `MAX_ENTRIES`) for the mapping it just
/// granted: one that forwards elsewhere is refused. A router that lists
/// nothing is taken at its word.
async fn check(
    gw: &Gateway<Tokio>,
    proto: Proto,
    external_port: u16,
    local: SocketAddr,
) -> Result<(), String> {
    let mut entries = Vec::new();
    for i in 0..MAX_ENTRIES {
        match gw.get_generic_port_mapping_entry(i).await {
            Ok(e) => entries.push(e),
            Err(GetGenericPortMappingEntryError::SpecifiedArrayIndexInvalid) => break,
            Err(e) => {
                tracing::debug!("UPnP: mapping table: {}", short_reason(&e.to_string()));
                break;
            }
        }
        if verdict(&entries, proto, external_port, local) != Verdict::Unknown {
            break;
        }
    }
    match verdict(&entries, proto, external_port, local) {
        Verdict::Elsewhere(to) => Err(format!(
            "the router's {} port {external_port} forwards to {to}, not to us",
            proto.label()
        )),
        Verdict::Ours | Verdict::Unknown => Ok(()),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Ours,
    /// Forwards to another host or port (shown).
    Elsewhere(String),
    /// Not in the entries read.
    Unknown,
}

/// What the router's table says of the mapping `external_port`/`proto`:
/// it forwards to `local`, elsewhere, or it is not listed.
pub fn verdict(
    entries: &[PortMappingEntry],
    proto: Proto,
    external_port: u16,
    local: SocketAddr,
) -> Verdict {
    let want = protocol(proto);
    let Some(e) = entries
        .iter()
        .find(|e| e.protocol == want && e.external_port == external_port)
    else {
        return Verdict::Unknown;
    };
    let client: Option<IpAddr> = e.internal_client.trim().parse().ok();
    if client == Some(local.ip()) && e.internal_port == local.port() {
        Verdict::Ours
    } else {
        Verdict::Elsewhere(short_reason(&format!(
            "{}:{}",
            e.internal_client, e.internal_port
        )))
    }
}

/// Our address on the link toward `gateway`, as the router sees it: the
/// source address the kernel would pick (no packet is sent).
pub fn local_ip_toward(gateway: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match gateway {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect((gateway, 1900)).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(proto: PortMappingProtocol, ext: u16, client: &str, port: u16) -> PortMappingEntry {
        PortMappingEntry {
            remote_host: String::new(),
            external_port: ext,
            protocol: proto,
            internal_port: port,
            internal_client: client.into(),
            enabled: true,
            port_mapping_description: "x".into(),
            lease_duration: 0,
        }
    }

    #[test]
    fn finds_ours_and_others() {
        let me: SocketAddr = "10.1.0.2:6881".parse().unwrap();
        let table = vec![
            entry(PortMappingProtocol::UDP, 6881, "10.1.0.9", 6881),
            entry(PortMappingProtocol::TCP, 6881, "10.1.0.2", 6881),
            entry(PortMappingProtocol::TCP, 7000, "10.1.0.2", 6882),
        ];
        assert_eq!(verdict(&table, Proto::Tcp, 6881, me), Verdict::Ours);
        assert_eq!(
            verdict(&table, Proto::Udp, 6881, me),
            Verdict::Elsewhere("10.1.0.9:6881".into())
        );
        // Our host but another port is not ours.
        assert_eq!(
            verdict(&table, Proto::Tcp, 7000, me),
            Verdict::Elsewhere("10.1.0.2:6882".into())
        );
        assert_eq!(verdict(&table, Proto::Tcp, 9999, me), Verdict::Unknown);
        assert_eq!(verdict(&[], Proto::Tcp, 6881, me), Verdict::Unknown);
    }

    #[test]
    fn a_hostile_client_name_is_cut() {
        let me: SocketAddr = "10.1.0.2:6881".parse().unwrap();
        let long = format!("evil\n{}", "a".repeat(100_000));
        let table = vec![entry(PortMappingProtocol::TCP, 6881, &long, 1)];
        match verdict(&table, Proto::Tcp, 6881, me) {
            Verdict::Elsewhere(s) => assert!(s.len() < 200 && !s.contains('\n'), "{s}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn local_address_toward_loopback() {
        assert_eq!(
            local_ip_toward("127.0.0.1".parse().unwrap()),
            Some("127.0.0.1".parse().unwrap())
        );
    }
}
