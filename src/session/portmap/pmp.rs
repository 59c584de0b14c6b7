//! NAT-PMP (RFC 6886) and PCP (RFC 6887) through crab_nat: PCP first, the
//! older NAT-PMP when the router says it only speaks that (or PCP got no
//! answer). The router is the default route's gateway, unless the config
//! names one. crab_nat sends from a socket connected to the gateway's port
//! 5351, so a reply from any other address never reaches it.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;
use std::time::Duration;

use crab_nat::{
    natpmp, pcp, InternetProtocol, MappingFailure, PortMapping, PortMappingOptions,
    PortMappingType, TimeoutConfig,
};

use super::{plausible_external, short_reason, Config, Failure, Granted, Method, Outcome, Proto};

/// RFC 6886's first wait (250 ms), doubled three times: 3.75 s in all
/// before a protocol counts as unanswered.
const TIMEOUTS: TimeoutConfig = TimeoutConfig {
    initial_timeout: Duration::from_millis(250),
    max_retries: 3,
    max_retry_timeout: Some(Duration::from_secs(2)),
};

/// A mapping held on a NAT-PMP/PCP router.
pub struct Lease {
    pub granted: Granted,
    mapping: PortMapping,
}

impl Lease {
    pub async fn remove(self) {
        let g = self.granted;
        match self.mapping.try_drop().await {
            Ok(()) => tracing::info!(
                "{}: removed {} port {}",
                g.method.label(),
                g.proto.label(),
                g.external_port
            ),
            Err((e, _)) => tracing::info!(
                "{}: removing {} port {}: {}",
                g.method.label(),
                g.proto.label(),
                g.external_port,
                short_reason(&e.to_string())
            ),
        }
    }
}

fn protocol(p: Proto) -> InternetProtocol {
    match p {
        Proto::Tcp => InternetProtocol::Tcp,
        Proto::Udp => InternetProtocol::Udp,
    }
}

/// Maps `port` for TCP and UDP on the gateway.
pub async fn map(
    port: u16,
    cfg: &Config,
    prefer: impl Fn(Proto) -> Option<u16>,
) -> (Outcome, Vec<Lease>) {
    let mut outcome = Outcome {
        method: Method::NatPmp,
        granted: Vec::new(),
        failure: None,
    };
    let gateway = cfg.gateway.or_else(|| {
        std::fs::read_to_string("/proc/net/route")
            .ok()
            .and_then(|t| default_gateway(&t))
            .map(IpAddr::V4)
    });
    let (Some(gateway), Some(port_nz)) = (gateway, NonZeroU16::new(port)) else {
        outcome.failure = Some(Failure::NoAnswer);
        return (outcome, Vec::new());
    };
    let Some(client) = super::upnp::local_ip_toward(gateway) else {
        outcome.failure = Some(Failure::NoAnswer);
        return (outcome, Vec::new());
    };
    let mut leases = Vec::new();
    for proto in Proto::BOTH {
        let options = PortMappingOptions {
            external_port: NonZeroU16::new(prefer(proto).unwrap_or(port)),
            lifetime_seconds: Some(super::PMP_LIFETIME),
            timeout_config: Some(TIMEOUTS),
        };
        match request(gateway, client, protocol(proto), port_nz, options).await {
            Ok(mapping) => {
                let (method, external_ip) = match mapping.mapping_type() {
                    PortMappingType::Pcp { external_ip, .. } => (Method::Pcp, Some(external_ip)),
                    PortMappingType::NatPmp => (
                        Method::NatPmp,
                        natpmp::external_address(gateway.into(), Some(TIMEOUTS))
                            .await
                            .ok()
                            .map(IpAddr::V4),
                    ),
                };
                if mapping.lifetime() == 0 {
                    // A "mapping" of no lifetime is a deletion.
                    if proto == Proto::Tcp {
                        outcome.failure =
                            Some(Failure::Refused("the router granted no lifetime".into()));
                    }
                    continue;
                }
                outcome.method = method;
                let granted = Granted {
                    method,
                    proto,
                    external_port: mapping.external_port().get(),
                    external_ip: external_ip.and_then(plausible_external),
                    lifetime: Duration::from_secs(mapping.lifetime().into()),
                };
                outcome.granted.push(granted.clone());
                leases.push(Lease { granted, mapping });
            }
            Err(f) => {
                tracing::debug!("NAT-PMP/PCP: {} port {port}: {f:?}", proto.label());
                let unanswered = f == Failure::NoAnswer;
                if proto == Proto::Tcp {
                    outcome.failure = Some(f);
                }
                // Nobody answered for TCP: nobody will for UDP.
                if unanswered && proto == Proto::Tcp {
                    break;
                }
            }
        }
    }
    (outcome, leases)
}

/// PCP, then NAT-PMP if PCP is not spoken or not answered.
async fn request(
    gateway: IpAddr,
    client: IpAddr,
    proto: InternetProtocol,
    port: NonZeroU16,
    options: PortMappingOptions,
) -> Result<PortMapping, Failure> {
    match PortMapping::new(gateway.into(), client, proto, port, options).await {
        Ok(m) => return Ok(m),
        Err(MappingFailure::Pcp(pcp::Failure::Socket(_) | pcp::Failure::Timeout)) => {}
        Err(e) => {
            // PCP answered with a refusal: the router is there; NAT-PMP
            // is still worth one try (some speak both, badly).
            tracing::debug!("PCP: {}", short_reason(&e.to_string()));
        }
    }
    natpmp::port_mapping(gateway.into(), proto, port, options)
        .await
        .map_err(|e| match e {
            natpmp::Failure::Timeout | natpmp::Failure::Socket(_) => Failure::NoAnswer,
            e => Failure::Refused(refusal(&e)),
        })
}

/// A NAT-PMP refusal in a few words, with RFC 6886's result code.
fn refusal(e: &natpmp::Failure) -> String {
    match e {
        natpmp::Failure::UnsupportedVersion(_) => "unsupported version (result 1)".into(),
        natpmp::Failure::NotAuthorized => "not authorized (result 2)".into(),
        natpmp::Failure::NetworkFailure => "network failure (result 3)".into(),
        natpmp::Failure::OutOfResources => "out of resources (result 4)".into(),
        natpmp::Failure::UnsupportedOpcode => "unsupported opcode (result 5)".into(),
        e => short_reason(&format!("invalid answer: {e}")),
    }
}

/// The IPv4 default route's gateway in the text of `/proc/net/route`
/// (tab-separated; addresses as 8 hex digits in host byte order).
pub fn default_gateway(route: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    route.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, gw, flags, mask) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(7)?);
        let flags = u32::from_str_radix(flags, 16).ok()?;
        let is_default = *dest == "00000000" && *mask == "00000000";
        if !is_default || flags & (RTF_UP | RTF_GATEWAY) != RTF_UP | RTF_GATEWAY {
            return None;
        }
        let raw = u32::from_str_radix(gw, 16).ok()?;
        let ip = Ipv4Addr::from(raw.to_le_bytes());
        (!ip.is_unspecified()).then_some(ip)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    #[test]
    fn default_route_gateway() {
        let t = format!(
            "{HEAD}eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        );
        assert_eq!(default_gateway(&t), Some(Ipv4Addr::new(192, 168, 0, 1)));
    }

    #[test]
    fn no_default_route() {
        let t = format!("{HEAD}eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        assert_eq!(default_gateway(&t), None);
        assert_eq!(default_gateway(""), None);
        // A default route without a gateway (a point-to-point link).
        let t = format!("{HEAD}ppp0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n");
        assert_eq!(default_gateway(&t), None);
    }

    #[test]
    fn garbage_never_panics() {
        for t in [
            "x",
            "\n\n\n",
            "h\na b c d",
            "h\na 00000000 zz 3 0 0 0 00000000",
            "h\na 00000000 0100A8C0 3",
            "h\n\u{0}\u{ffff} 00000000 0100A8C0 ffffffffffff 0 0 0 00000000",
        ] {
            let _ = default_gateway(t);
        }
    }
}
