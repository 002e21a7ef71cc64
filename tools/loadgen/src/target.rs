//! Where the load goes: `ws://` and `http://` base URLs, loopback only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Result, bail};

/// A parsed base URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// The address to connect to.
    pub addr: SocketAddr,
    /// `host:port` as written in the URL (for the Host header and paths).
    pub authority: String,
}

/// Parses `<scheme>://host[:port][/]`, refusing anything but a loopback host,
/// so that a typo can never point a load test at another machine.
pub fn parse(url: &str, scheme: &str) -> Result<Target> {
    let prefix = format!("{scheme}://");
    let Some(rest) = url
        .get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(&prefix))
        .map(|_| &url[prefix.len()..])
    else {
        bail!("{url:?} is not a {scheme}:// URL");
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        bail!("{url:?}: give only {scheme}://host:port (no path, query or user)");
    }
    let (host, port) = split_host_port(authority)
        .ok_or_else(|| anyhow::anyhow!("{url:?}: cannot read host and port"))?;
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        match host.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => bail!(
                "refusing host {host:?}: load tests target only loopback (127.0.0.0/8, ::1, localhost)"
            ),
        }
    };
    if !ip.is_loopback() {
        bail!(
            "refusing host {host}: load tests target only loopback (127.0.0.0/8, ::1, localhost)"
        );
    }
    Ok(Target {
        addr: SocketAddr::new(ip, port),
        authority: authority.to_string(),
    })
}

/// Splits `host:port`, `[v6]:port`, or a bare host (port 80).
fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => 80,
            _ => after.strip_prefix(':')?.parse().ok()?,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, port.parse().ok()?)),
        Some(_) => None,
        None => Some((authority, 80)),
    }
}

/// Source addresses to spread connections over: 127.0.0.1 ..= 127.0.0.N, or
/// ::1 alone for an IPv6 target.
pub fn sources(target: &Target, count: u8) -> Result<Vec<IpAddr>> {
    match target.addr.ip() {
        IpAddr::V4(_) => Ok((1..=count)
            .map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
            .collect()),
        IpAddr::V6(ip) if count == 1 => Ok(vec![IpAddr::V6(ip)]),
        IpAddr::V6(_) => bail!("--sources above 1 needs an IPv4 loopback target (127.0.0.x)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert_eq!(
            parse("ws://127.0.0.1:8123", "ws").unwrap().addr,
            "127.0.0.1:8123".parse().unwrap()
        );
        assert_eq!(
            parse("ws://localhost:9/", "ws").unwrap().addr,
            "127.0.0.1:9".parse().unwrap()
        );
        assert_eq!(
            parse("ws://[::1]:7", "ws").unwrap().addr,
            "[::1]:7".parse().unwrap()
        );
        assert_eq!(parse("ws://127.3.2.1", "ws").unwrap().addr.port(), 80);
        assert!(parse("ws://10.0.0.1:80", "ws").is_err());
        assert!(parse("ws://example.com:80", "ws").is_err());
        assert!(parse("ws://0.0.0.0:80", "ws").is_err());
        assert!(parse("wss://127.0.0.1:80", "ws").is_err());
        assert!(parse("ws://127.0.0.1:80/ws/x", "ws").is_err());
        assert!(parse("http://127.0.0.1:80", "http").is_ok());
    }

    #[test]
    fn source_addresses() {
        let target = parse("ws://127.0.0.1:1", "ws").unwrap();
        let list = sources(&target, 3).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[2], "127.0.0.3".parse::<IpAddr>().unwrap());
        let v6 = parse("ws://[::1]:1", "ws").unwrap();
        assert!(sources(&v6, 2).is_err());
    }
}
