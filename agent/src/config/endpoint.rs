//! What a server URL means: where to dial. Parsed when the configuration is checked and again
//! for every URL the auth service hands out.

/// A server URL that is not `http(s)://` / `ws(s)://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid server URL {0:?}")]
pub struct InvalidUrl(pub String);

/// Where to dial, parsed from the auth service's server URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Use TLS (wss).
    pub tls: bool,
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `scheme://host[:port][/path...]`; like the reference, any path is dropped.
    pub fn parse(server_url: &str) -> Result<Self, InvalidUrl> {
        let bad = || InvalidUrl(server_url.to_owned());
        let (scheme, rest) = server_url.split_once("://").ok_or_else(bad)?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "https" | "wss" => true,
            "http" | "ws" => false,
            _ => return Err(bad()),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        // Credentials in the URL are never sent; the token is the only credential.
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad())?,
            None if tls => 443,
            None => 80,
        };
        Ok(Self { tls, host: host.to_owned(), port })
    }

    /// Whether the server is on this device: a loopback IP literal or `localhost`.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The host as written in a URL or a `Host` header: IPv6 literals in brackets.
    pub fn url_host(&self) -> String {
        if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() }
    }

    /// `host:port` as in a URL, a `Host` header or `CONNECT`.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.url_host(), self.port)
    }
}
