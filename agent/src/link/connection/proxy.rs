//! HTTP CONNECT proxies from the environment, with the rules of Go's
//! `http.ProxyFromEnvironment` (what the reference's websocket dialer uses):
//! `HTTPS_PROXY`/`https_proxy` for `https`/`wss`, `HTTP_PROXY`/`http_proxy` for `http`/`ws`,
//! upper case first; `NO_PROXY`/`no_proxy` lists `*`, host names (the name and its subdomains;
//! with a leading dot only subdomains), IP addresses and CIDR prefixes, each optionally with
//! `:port`; `localhost` and loopback addresses never go through a proxy.
//!
//! Only `http://` proxies are supported (the proxy connection itself is plain TCP; TLS to the
//! server runs inside the tunnel).

use std::net::IpAddr;

/// Where the tunnel goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Proxy host (no brackets) and port.
    pub host: String,
    pub port: u16,
    /// `user:password` from the proxy URL, for `Proxy-Authorization: Basic`.
    pub userinfo: Option<String>,
}

/// Why the proxy setting cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// Not `[http://][user:pass@]host[:port]`.
    #[error("invalid proxy URL {0:?} (only http:// proxies are supported)")]
    InvalidUrl(String),
}

/// The proxy for a connection to `host:port` (`tls`: https/wss), from the process environment.
pub fn from_env(tls: bool, host: &str, port: u16) -> Result<Option<Proxy>, ProxyError> {
    select(tls, host, port, |name| std::env::var(name).ok())
}

/// [`from_env`] with the variables from `var`.
pub fn select(
    tls: bool,
    host: &str,
    port: u16,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Proxy>, ProxyError> {
    let any = |names: [&str; 2]| names.iter().find_map(|n| var(n).filter(|v| !v.is_empty()));
    let url = if tls { any(["HTTPS_PROXY", "https_proxy"]) } else { any(["HTTP_PROXY", "http_proxy"]) };
    let Some(url) = url else { return Ok(None) };
    if !use_proxy(host, port, &any(["NO_PROXY", "no_proxy"]).unwrap_or_default()) {
        return Ok(None);
    }
    parse(&url).map(Some)
}

/// Parses `[http://][user:pass@]host[:port]` (port default 80, as Go for http proxies).
pub fn parse(url: &str) -> Result<Proxy, ProxyError> {
    let bad = || ProxyError::InvalidUrl(url.to_owned());
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some(_) => return Err(bad()),
        None => url,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_owned()), h),
        None => (None, authority),
    };
    let (host, port) = split_host_port(hostport).ok_or_else(bad)?;
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad())?,
        None => 80,
    };
    Ok(Proxy { host: host.to_owned(), port, userinfo })
}

/// `host[:port]` or `[v6][:port]`.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(v6) = s.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        return Some((h, after.strip_prefix(':')));
    }
    match s.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((h, _)) if h.contains(':') => Some((s, None)),
        Some((h, p)) => Some((h, Some(p))),
        None => Some((s, None)),
    }
}

/// False when the target is loopback or matched by `no_proxy`.
pub fn use_proxy(host: &str, port: u16, no_proxy: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" {
        return false;
    }
    let ip = host.parse::<IpAddr>().ok();
    if ip.is_some_and(|ip| ip.is_loopback()) {
        return false;
    }
    for entry in no_proxy.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry == "*" {
            return false;
        }
        let entry = entry.to_ascii_lowercase();
        if let Some((net, bits)) = entry.split_once('/') {
            if let (Some(ip), Ok(net), Ok(bits)) = (ip, net.parse::<IpAddr>(), bits.parse::<u32>()) {
                if in_prefix(ip, net, bits) {
                    return false;
                }
            }
            continue;
        }
        let Some((name, entry_port)) = split_host_port(&entry) else { continue };
        if entry_port.is_some_and(|p| p.parse() != Ok(port)) {
            continue;
        }
        if let (Some(ip), Ok(e)) = (ip, name.parse::<IpAddr>()) {
            if ip == e {
                return false;
            }
            continue;
        }
        let name = name.trim_end_matches('.');
        let matched = match name.strip_prefix('.') {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => {
                let name = name.strip_prefix("*.").unwrap_or(name);
                host == name || host.ends_with(&format!(".{name}"))
            }
        };
        if matched {
            return false;
        }
    }
    true
}

fn in_prefix(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn scheme_selects_the_variable() {
        let vars = [("HTTPS_PROXY", "http://p1:3128"), ("http_proxy", "p2")];
        let p = select(true, "mender.example", 443, env(&vars)).unwrap().unwrap();
        assert_eq!((p.host.as_str(), p.port), ("p1", 3128));
        let p = select(false, "mender.example", 80, env(&vars)).unwrap().unwrap();
        assert_eq!((p.host.as_str(), p.port), ("p2", 80));
        assert_eq!(select(true, "x", 1, env(&[])).unwrap(), None);
        let upper_first = [("HTTPS_PROXY", "a:1"), ("https_proxy", "b:2")];
        assert_eq!(select(true, "x", 1, env(&upper_first)).unwrap().unwrap().host, "a");
    }

    #[test]
    fn proxy_urls() {
        let p = parse("http://u:p%40ss@[::1]:8080/").unwrap();
        assert_eq!((p.host.as_str(), p.port, p.userinfo.as_deref()), ("::1", 8080, Some("u:p%40ss")));
        assert!(parse("socks5://h:1").is_err());
        assert!(parse("https://h:1").is_err());
        assert!(parse("http://h:99999").is_err());
        assert!(parse("http://:8").is_err());
    }

    #[test]
    fn no_proxy_rules() {
        assert!(!use_proxy("localhost", 1, ""));
        assert!(!use_proxy("127.0.0.1", 1, ""));
        assert!(!use_proxy("::1", 1, ""));
        assert!(use_proxy("mender.test", 1, ""));
        assert!(!use_proxy("anything", 1, "*"));
        assert!(!use_proxy("mender.test", 1, "a.b, mender.test"));
        assert!(!use_proxy("eu.mender.test", 1, "mender.test"));
        assert!(use_proxy("xmender.test", 1, "mender.test"));
        assert!(use_proxy("mender.test", 1, ".mender.test"));
        assert!(!use_proxy("eu.mender.test", 1, ".mender.test"));
        assert!(!use_proxy("MENDER.test.", 1, "mender.TEST"));
        assert!(!use_proxy("10.1.2.3", 1, "10.0.0.0/8"));
        assert!(use_proxy("11.1.2.3", 1, "10.0.0.0/8"));
        assert!(!use_proxy("10.1.2.3", 1, "10.1.2.3"));
        assert!(!use_proxy("mender.test", 443, "mender.test:443"));
        assert!(use_proxy("mender.test", 8443, "mender.test:443"));
    }
}
