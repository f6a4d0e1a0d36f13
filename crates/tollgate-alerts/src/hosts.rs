//! Which hosts webhooks may reach.
//!
//! A URL's host must be on `alerts.allow_hosts`; every address a name
//! resolves to is checked again when connecting (the resolver the webhook
//! client uses drops refused addresses), so a listed name that resolves to
//! a private or loopback address is refused unless that address is listed
//! too. Redirects are never followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The parsed allow-list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AllowList {
    /// Exact host names, lower case.
    names: Vec<String>,
    /// `*.example.com` as `.example.com`.
    suffixes: Vec<String>,
    /// Addresses and blocks: (network, prefix length).
    nets: Vec<(IpAddr, u8)>,
}

impl AllowList {
    pub fn parse(entries: &[String]) -> Result<AllowList, String> {
        let mut l = AllowList::default();
        for e in entries {
            let e = e.trim().trim_end_matches('.').to_ascii_lowercase();
            if e.is_empty() {
                return Err("an entry is empty".into());
            }
            if let Some((ip, bits)) = e.split_once('/') {
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|_| format!("{e:?} is not an address block"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits: u8 = bits
                    .parse()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("{e:?}: the prefix length must be 0..={max}"))?;
                l.nets.push((ip, bits));
            } else if let Ok(ip) = e
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            {
                l.nets.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
            } else if let Some(rest) = e.strip_prefix("*.") {
                if rest.is_empty() || rest.contains('*') {
                    return Err(format!("{e:?}: a wildcard is `*.` before a domain"));
                }
                l.suffixes.push(format!(".{rest}"));
            } else if e.contains('*') || e.contains('/') || e.contains(':') {
                return Err(format!(
                    "{e:?} is not a host name, `*.domain`, address or block"
                ));
            } else {
                l.names.push(e);
            }
        }
        Ok(l)
    }

    fn name_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.names.contains(&host) || self.suffixes.iter().any(|s| host.ends_with(s.as_str()))
    }

    fn listed(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets
            .iter()
            .any(|&(net, bits)| in_net(ip, canonical(net), bits))
    }

    /// Whether a connection to `ip` may be made: a public address, or one
    /// listed.
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        self.listed(ip) || is_public(ip)
    }

    /// Checks a webhook URL: `http(s)`, no credentials, and a host on the
    /// list (an address literal must be listed itself). Names are checked
    /// again, resolved, when connecting.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, String> {
        tollgate_core::budget::webhook_url_ok(url)?;
        let u = reqwest::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        let host = u.host_str().ok_or_else(|| format!("{url:?} has no host"))?;
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => self.check_literal(ip)?,
            Err(_) if self.name_allowed(host) => {}
            Err(_) => return Err(format!("host {host:?} is not in alerts.allow_hosts")),
        }
        Ok(u)
    }

    fn check_literal(&self, ip: IpAddr) -> Result<(), String> {
        if self.listed(ip) {
            Ok(())
        } else {
            Err(format!("address {ip} is not in alerts.allow_hosts"))
        }
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Whether `ip` is a globally routed unicast address: not loopback,
/// private, link-local, shared (CGNAT), unspecified, documentation,
/// benchmarking, multicast, broadcast or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || s[..6] == [0, 0, 0, 0, 0, 0])
        }
    }
}

/// The webhook client's resolver: the system's answers, less the
/// addresses the list refuses. A name left with none fails to resolve,
/// naming why.
pub struct GuardedResolver {
    pub allow: Arc<AllowList>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (ok, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
                .into_iter()
                .partition(|a| allow.address_allowed(a.ip()));
            if ok.is_empty() {
                let why = match refused.first() {
                    Some(a) => format!(
                        "{host} resolves to {}, a private or reserved address not in alerts.allow_hosts",
                        a.ip()
                    ),
                    None => format!("{host} does not resolve"),
                };
                return Err(why.into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(ok.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_wildcards_and_literals() {
        let l = list(&[
            "hooks.example.com",
            "*.slack.com",
            "127.0.0.1",
            "10.0.0.0/8",
        ]);
        assert!(l.check_url("https://hooks.example.com/x").is_ok());
        assert!(l.check_url("https://HOOKS.example.com./x").is_ok());
        assert!(l.check_url("https://hooks.slack.com/services/T").is_ok());
        assert!(
            l.check_url("https://slack.com/").is_err(),
            "a wildcard is for subdomains"
        );
        assert!(l.check_url("https://evil.example.com/").is_err());
        assert!(l.check_url("http://127.0.0.1:9000/").is_ok());
        assert!(l.check_url("http://10.2.3.4/").is_ok());
        assert!(l.check_url("http://127.0.0.2/").is_err());
        assert!(l.check_url("http://[::1]/").is_err());
        assert!(l.check_url("http://u:p@hooks.example.com/").is_err());
        assert!(l.check_url("ftp://hooks.example.com/").is_err());
        let e = l.check_url("https://other.test/x").unwrap_err();
        assert!(e.contains("other.test"), "{e}");
    }

    #[test]
    fn private_addresses_need_listing_as_addresses() {
        let l = list(&["localhost", "127.0.0.1"]);
        assert!(l.address_allowed("127.0.0.1".parse().unwrap()));
        assert!(!l.address_allowed("::1".parse().unwrap()));
        assert!(!l.address_allowed("::ffff:10.0.0.1".parse().unwrap()));
        assert!(l.address_allowed("::ffff:127.0.0.1".parse().unwrap()));
        for private in [
            "10.1.1.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "fd00::1",
            "fe80::1",
            "::",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in ["", "*", "*.", "a*.b", "10.0.0.0/33", "http://x"] {
            assert!(AllowList::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_when_connecting() {
        use reqwest::dns::Resolve;
        let only_name = GuardedResolver {
            allow: Arc::new(list(&["localhost"])),
        };
        let name = || "localhost".parse::<reqwest::dns::Name>().unwrap();
        let err = match only_name.resolve(name()).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("localhost resolves to loopback, which is not listed"),
        };
        assert!(err.contains("private or reserved"), "{err}");
        let listed = GuardedResolver {
            allow: Arc::new(list(&["localhost", "127.0.0.1", "::1"])),
        };
        assert!(listed.resolve(name()).await.is_ok());
    }
}
