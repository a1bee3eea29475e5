//! Just enough HTTP/1.1 for the shop: one request per connection (every response says
//! `Connection: close`), parsed by `httparse`, with limits that turn bad input into a 4xx rather
//! than a panic or an unbounded buffer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// Headers larger than this are refused (431).
const MAX_HEAD: usize = 16 * 1024;
/// Bodies larger than this are refused (413): the shop's forms are a few fields.
const MAX_BODY: usize = 64 * 1024;

pub struct Request {
    pub method: String,
    pub path: String,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, message: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: format!("{message}\n").into_bytes(),
        }
    }
}

/// Why no request came out of a connection.
pub enum ReadError {
    /// The peer closed before sending a byte, or the connection failed: nothing to answer.
    Gone,
    /// A malformed or oversized request: answered with this status and message.
    Bad(u16, String),
}

/// Reads one request. `buf` may already hold its first bytes.
pub fn read_request(stream: &mut TcpStream) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_len;
    let (method, path, accept, content_type, content_length) = loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(ReadError::Gone),
            Ok(0) => {
                return Err(ReadError::Bad(
                    400,
                    "the connection closed in the middle of the request".into(),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) && !buf.is_empty() =>
            {
                return Err(ReadError::Bad(
                    408,
                    "the request took too long to arrive".into(),
                ))
            }
            Err(_) => return Err(ReadError::Gone),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(ReadError::Bad(
                        431,
                        format!("the request's head is over {MAX_HEAD} bytes"),
                    ));
                }
            }
            Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
                return Err(ReadError::Bad(
                    431,
                    format!("the request's head is over {MAX_HEAD} bytes"),
                ));
            }
            Ok(httparse::Status::Complete(n)) => {
                head_len = n;
                let header = |name: &str| -> Result<Option<String>, ReadError> {
                    let mut found = None;
                    for h in req
                        .headers
                        .iter()
                        .filter(|h| h.name.eq_ignore_ascii_case(name))
                    {
                        if found.is_some() {
                            return Err(ReadError::Bad(
                                400,
                                format!("the {name} header is given twice"),
                            ));
                        }
                        let v = std::str::from_utf8(h.value).map_err(|_| {
                            ReadError::Bad(400, format!("the {name} header is not UTF-8"))
                        })?;
                        found = Some(v.trim().to_string());
                    }
                    Ok(found)
                };
                if header("transfer-encoding")?.is_some() {
                    return Err(ReadError::Bad(
                        400,
                        "bodies with a Transfer-Encoding are not accepted: send Content-Length"
                            .into(),
                    ));
                }
                let length = match header("content-length")? {
                    None => 0,
                    Some(v) => v.parse::<usize>().map_err(|_| {
                        ReadError::Bad(400, format!("Content-Length `{v}` is not a number"))
                    })?,
                };
                if length > MAX_BODY {
                    return Err(ReadError::Bad(
                        413,
                        format!("the body is over {MAX_BODY} bytes"),
                    ));
                }
                let accept = header("accept")?;
                let content_type = header("content-type")?;
                break (
                    req.method.unwrap_or_default().to_string(),
                    req.path.unwrap_or_default().to_string(),
                    accept,
                    content_type,
                    length,
                );
            }
            Err(e) => return Err(ReadError::Bad(400, format!("malformed request: {e}"))),
        }
    };
    let mut body = buf.split_off(head_len);
    if body.len() > content_length {
        return Err(ReadError::Bad(
            400,
            "more bytes than Content-Length (one request per connection)".into(),
        ));
    }
    while body.len() < content_length {
        let n = match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(ReadError::Bad(
                    400,
                    "the body is shorter than its Content-Length".into(),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                return Err(ReadError::Bad(
                    408,
                    "the body took too long to arrive".into(),
                ))
            }
        };
        body.extend_from_slice(&chunk[..n.min(content_length - body.len())]);
    }
    Ok(Request {
        method,
        path,
        accept,
        content_type,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        303 => "See Other",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes `response` and ends the connection's sending side; false if the client is gone.
pub fn write_response(stream: &mut TcpStream, response: &Response) -> bool {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\nVary: Accept\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&response.body);
    if stream.write_all(&out).is_err() {
        return false;
    }
    stream.shutdown(Shutdown::Write).is_ok()
}

/// Waits for the client to close after reading the response, reading away anything it still
/// sends (a refused body): closing with unread bytes would send an RST, which can destroy the
/// response before the client has read it.
pub fn linger(stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 4096];
    let mut left = 1 << 20;
    while left > 0 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left -= n.min(left),
        }
    }
}

/// The media types the shop speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    Html,
    Json,
}

/// Picks the representation from an `Accept` header by its q-values (RFC 9110, 12.5.1): for
/// each type the most specific range that matches it gives its q; the highest q above 0 wins,
/// HTML on a tie. `Ok(None)`: neither is acceptable (406). No header accepts anything.
pub fn negotiate(accept: Option<&str>) -> Result<Option<Media>, String> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Some(Media::Html));
    };
    let mut ranges = Vec::new();
    for part in accept.split(',') {
        let mut params = part.split(';');
        let range = params
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if range.is_empty() {
            continue;
        }
        let Some((ty, sub)) = range.split_once('/') else {
            return Err(format!(
                "`{range}` in Accept is not a media range (type/subtype)"
            ));
        };
        if ty.is_empty() || sub.is_empty() || (ty == "*" && sub != "*") {
            return Err(format!("`{range}` in Accept is not a media range"));
        }
        let mut q = 1.0f32;
        for p in params {
            let Some((name, value)) = p.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("q") {
                let value = value.trim();
                q = value
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q) && value.len() <= 5)
                    .ok_or_else(|| format!("q={value} in Accept is not a weight from 0 to 1"))?;
            }
        }
        ranges.push((ty.to_string(), sub.to_string(), q));
    }
    let weight = |ty: &str, sub: &str| -> f32 {
        let mut best: Option<(u8, f32)> = None;
        for (t, s, q) in &ranges {
            let specificity = match (t.as_str(), s.as_str()) {
                (t, s) if t == ty && s == sub => 2,
                (t, "*") if t == ty => 1,
                ("*", "*") => 0,
                _ => continue,
            };
            if best.is_none_or(|(b, _)| specificity > b) {
                best = Some((specificity, *q));
            }
        }
        best.map_or(0.0, |(_, q)| q)
    };
    let html = weight("text", "html");
    let json = weight("application", "json");
    Ok(if html <= 0.0 && json <= 0.0 {
        None
    } else if json > html {
        Some(Media::Json)
    } else {
        Some(Media::Html)
    })
}

/// Decodes an `application/x-www-form-urlencoded` body; a field named twice is an error, since
/// which one counts would be a guess.
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the form is not UTF-8".to_string())?;
    let mut fields: Vec<(String, String)> = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k)?, percent_decode(v)?);
        if fields.iter().any(|(name, _)| *name == k) {
            return Err(format!("the form gives `{k}` twice"));
        }
        fields.push((k, v));
    }
    Ok(fields)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in `{s}`"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` does not decode to UTF-8"))
}

/// Escapes text for HTML content and quoted attribute values: the store's HTTP view's rule.
pub use eventjournal::web::escape as esc;
