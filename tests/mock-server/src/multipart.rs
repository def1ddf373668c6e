//! A streaming `multipart/form-data` reader over a hyper request body. The upload handler reads
//! small fields whole and then streams the `file` part, so the body is never buffered in full.

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MultipartError {
    /// The body ended before the closing boundary.
    Truncated,
    /// A part's headers are not parseable.
    BadHeaders,
    /// The body is larger than allowed.
    TooLarge,
    /// Reading the body failed.
    Io(String),
}

impl std::fmt::Display for MultipartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MultipartError::Truncated => {
                f.write_str("malformed request body: did not find closing multipart boundary")
            }
            MultipartError::BadHeaders => {
                f.write_str("malformed request body: multipart: malformed MIME header")
            }
            MultipartError::TooLarge => f.write_str("http: request body too large"),
            MultipartError::Io(e) => write!(f, "malformed request body: {e}"),
        }
    }
}

/// The boundary parameter of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    let mime = parts.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parts
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_owned())
        })
        .filter(|b| !b.is_empty())
}

pub struct PartHeaders {
    pub name: String,
    pub filename: Option<String>,
}

pub struct Multipart {
    body: Incoming,
    buf: Vec<u8>,
    eof: bool,
    /// "\r\n--" + boundary: a leading CRLF is prepended to the body so the first delimiter matches too.
    delim: Vec<u8>,
    in_part: bool,
    finished: bool,
    /// Bytes of `buf` already known not to start a delimiter (so big parts are scanned once).
    scanned: usize,
    read_total: u64,
    limit: u64,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    find_from(hay, needle, 0)
}

/// Position of `needle` in `hay` at or after `from`; jumps between occurrences of its first byte.
fn find_from(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let off = hay[i..=hay.len() - needle.len()].iter().position(|&b| b == first)?;
        i += off;
        if hay[i..i + needle.len()] == *needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn param(header: &str, name: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().trim_matches('"').to_owned())
    })
}

impl Multipart {
    pub fn new(body: Incoming, boundary: &str, limit: u64) -> Multipart {
        Multipart {
            body,
            buf: b"\r\n".to_vec(),
            eof: false,
            delim: format!("\r\n--{boundary}").into_bytes(),
            in_part: false,
            finished: false,
            scanned: 0,
            read_total: 0,
            limit,
        }
    }

    /// Pulls more bytes; false at end of body.
    async fn fill(&mut self) -> Result<bool, MultipartError> {
        while !self.eof {
            match self.body.frame().await {
                None => self.eof = true,
                Some(Err(e)) => return Err(MultipartError::Io(e.to_string())),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if data.is_empty() {
                            continue;
                        }
                        self.read_total += data.len() as u64;
                        if self.read_total > self.limit {
                            return Err(MultipartError::TooLarge);
                        }
                        self.buf.extend_from_slice(&data);
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }

    /// Advances to the next part; None after the closing boundary.
    pub async fn next_part(&mut self) -> Result<Option<PartHeaders>, MultipartError> {
        if self.finished {
            return Ok(None);
        }
        if self.in_part {
            while self.chunk(64 * 1024).await?.is_some() {}
        }
        // Find the delimiter (skipping any preamble), then the CRLF or "--" after it.
        loop {
            if let Some(i) = find(&self.buf, &self.delim) {
                let after = i + self.delim.len();
                if self.buf.len() >= after + 2 {
                    if &self.buf[after..after + 2] == b"--" {
                        self.finished = true;
                        self.buf.clear();
                        return Ok(None);
                    }
                    // Skip transport padding up to the line end.
                    if let Some(nl) = find(&self.buf[after..], b"\r\n") {
                        self.buf.drain(..after + nl + 2);
                        break;
                    }
                }
            }
            if !self.fill().await? {
                return Err(MultipartError::Truncated);
            }
        }
        let header_end = loop {
            if self.buf.starts_with(b"\r\n") {
                break 0;
            }
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 2;
            }
            if self.buf.len() > 16 * 1024 {
                return Err(MultipartError::BadHeaders);
            }
            if !self.fill().await? {
                return Err(MultipartError::Truncated);
            }
        };
        let headers = String::from_utf8_lossy(&self.buf[..header_end]).into_owned();
        self.buf.drain(..header_end + 2);
        let mut name = None;
        let mut filename = None;
        for line in headers.split("\r\n").filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once(':').ok_or(MultipartError::BadHeaders)?;
            if k.trim().eq_ignore_ascii_case("content-disposition") {
                name = param(v, "name");
                filename = param(v, "filename");
            }
        }
        self.in_part = true;
        self.scanned = 0;
        Ok(Some(PartHeaders { name: name.unwrap_or_default(), filename }))
    }

    /// The next piece of the current part's data, at most `max` bytes; None at the part's end.
    pub async fn chunk(&mut self, max: usize) -> Result<Option<Bytes>, MultipartError> {
        if !self.in_part {
            return Ok(None);
        }
        loop {
            match find_from(&self.buf, &self.delim, self.scanned) {
                Some(0) => {
                    self.in_part = false;
                    self.scanned = 0;
                    return Ok(None);
                }
                Some(i) => {
                    let n = i.min(max);
                    self.scanned = i - n;
                    return Ok(Some(Bytes::from(self.buf.drain(..n).collect::<Vec<u8>>())));
                }
                None => {
                    // Bytes that cannot be the start of a delimiter are safe to hand out.
                    let safe = self.buf.len().saturating_sub(self.delim.len() - 1);
                    self.scanned = safe;
                    if safe >= max {
                        self.scanned = safe - max;
                        return Ok(Some(Bytes::from(self.buf.drain(..max).collect::<Vec<u8>>())));
                    }
                    if !self.fill().await? {
                        return Err(MultipartError::Truncated);
                    }
                }
            }
        }
    }

    /// Reads the rest of the current part, up to `max` bytes (small form fields).
    pub async fn field(&mut self, max: usize) -> Result<Vec<u8>, MultipartError> {
        let mut out = Vec::new();
        while let Some(c) = self.chunk(max).await? {
            if out.len() < max {
                let take = c.len().min(max - out.len());
                out.extend_from_slice(&c[..take]);
            }
        }
        Ok(out)
    }

    /// Reads and discards the rest of the body (bounded by the limit), so that an early error
    /// response reaches clients that send the whole body first.
    pub async fn drain(&mut self) {
        self.buf.clear();
        while let Ok(true) = self.fill().await {
            self.buf.clear();
        }
    }
}
