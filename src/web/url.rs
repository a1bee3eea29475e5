//! Paths and queries: percent-encoding of names into path segments and back, query parsing, and
//! the one place where the view's URLs are built, so that every link it writes is one it routes.

use std::fmt::Write as _;

/// A request that cannot be served as asked: the status and a sentence for the reader.
#[derive(Debug)]
pub(crate) struct Problem {
    pub status: http::StatusCode,
    pub message: String,
}

impl Problem {
    pub fn bad_request(message: impl Into<String>) -> Problem {
        Problem {
            status: http::StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Problem {
        Problem {
            status: http::StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }
}

/// Bytes left as they are in a path segment or query value. Everything else is encoded,
/// including `/` (stream names may hold it), `?`, `#`, `%`, `&`, `=`, `+`, quotes and `<>`, so a
/// link is also safe inside a quoted HTML attribute. `$` stays readable for `$all` and the
/// store's own `$`-streams; it has no meaning inside a segment or a query value.
fn keep(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'$' | b':' | b'@')
}

/// `text` percent-encoded (UTF-8) for a path segment or a query value.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes a percent-encoded segment or query value. Strict: a `%` must start two hex digits and
/// the result must be UTF-8, because a name that decodes differently in two places would make a
/// link point somewhere else than it says. `+` is a plus, not a space: the view never writes it
/// for a space.
pub(crate) fn decode(raw: &str) -> Result<String, Problem> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) if bytes[i + 1].is_ascii_hexdigit() => out.push(b),
                _ => {
                    return Err(Problem::bad_request(format!(
                        "invalid percent-encoding in `{raw}`: `%` must be followed by two hex \
                         digits"
                    )))
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Problem::bad_request(format!("`{raw}` does not decode to UTF-8 text")))
}

/// The decoded query parameters of a request, each name at most once.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

/// Parameters the view understands; anything else is refused so that a typo is not silently
/// ignored (`?limt=5` would otherwise show a page of 20).
const KNOWN: &[&str] = &["from", "limit", "after"];

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Query, Problem> {
        let mut q = Query::default();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let name = decode(name)?;
            let value = decode(value)?;
            if !KNOWN.contains(&name.as_str()) {
                return Err(Problem::bad_request(format!(
                    "unknown query parameter `{name}` (known: from, limit, after)"
                )));
            }
            if q.get(&name).is_some() {
                return Err(Problem::bad_request(format!(
                    "query parameter `{name}` given twice"
                )));
            }
            q.pairs.push((name, value));
        }
        Ok(q)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A non-negative integer parameter (an event number or a position).
    pub fn number(&self, name: &str) -> Result<Option<u64>, Problem> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v
                .parse()
                .map(Some)
                .map_err(|_| Problem::bad_request(format!("`{name}={v}` is too large"))),
            Some(v) => Err(Problem::bad_request(format!(
                "`{name}={v}` is not a non-negative integer"
            ))),
        }
    }

    /// The page size: `limit`, 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] if absent.
    pub fn limit(&self) -> Result<usize, Problem> {
        match self.number("limit")? {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT as u64).contains(&n) => Ok(n as usize),
            Some(n) => Err(Problem::bad_request(format!(
                "page size `limit={n}` must be 1 to {MAX_LIMIT}"
            ))),
        }
    }
}

/// Events or names per page unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 20;
/// The largest page: a page is read and rendered whole, so its size bounds a request's work.
pub const MAX_LIMIT: usize = 100;

/// Builds the view's URLs. Every path the view links to is made here.
pub(crate) mod path {
    use super::{encode, DEFAULT_LIMIT};

    /// `?from=..&limit=..`, leaving out what is default.
    fn paged(base: String, from: Option<u64>, limit: usize) -> String {
        let mut params = Vec::new();
        if let Some(f) = from {
            params.push(format!("from={f}"));
        }
        if limit != DEFAULT_LIMIT {
            params.push(format!("limit={limit}"));
        }
        if params.is_empty() {
            base
        } else {
            format!("{base}?{}", params.join("&"))
        }
    }

    pub fn home() -> String {
        "/".into()
    }

    /// A list of names, from after `after`.
    fn names(base: &str, after: Option<&str>, limit: usize) -> String {
        let mut params = Vec::new();
        if let Some(a) = after {
            params.push(format!("after={}", encode(a)));
        }
        if limit != DEFAULT_LIMIT {
            params.push(format!("limit={limit}"));
        }
        if params.is_empty() {
            base.into()
        } else {
            format!("{base}?{}", params.join("&"))
        }
    }

    pub fn streams(after: Option<&str>, limit: usize) -> String {
        names("/streams", after, limit)
    }

    pub fn categories(after: Option<&str>, limit: usize) -> String {
        names("/categories", after, limit)
    }

    pub fn event_types(after: Option<&str>, limit: usize) -> String {
        names("/types", after, limit)
    }

    pub fn stream(name: &str, from: Option<u64>, limit: usize) -> String {
        paged(format!("/streams/{}", encode(name)), from, limit)
    }

    pub fn event(stream: &str, number: u64) -> String {
        format!("/streams/{}/{number}", encode(stream))
    }

    /// `$all`, newest first, from just before `before` (the head if `None`).
    pub fn all(before: Option<u64>, limit: usize) -> String {
        paged("/streams/$all".into(), before, limit)
    }

    pub fn category(name: &str, from: Option<u64>, limit: usize) -> String {
        paged(format!("/categories/{}", encode(name)), from, limit)
    }

    pub fn event_type(name: &str, from: Option<u64>, limit: usize) -> String {
        paged(format!("/types/{}", encode(name)), from, limit)
    }

    pub fn live() -> String {
        "/live".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_a_round_trip() {
        for name in [
            "a/b c",
            "<script>alert(1)</script>",
            "ünï-cødé",
            "%41",
            "a+b&c=d?#",
            "$all",
        ] {
            let e = encode(name);
            assert!(!e.contains(['/', ' ', '<', '"', '&', '?', '#', '+']), "{e}");
            assert_eq!(decode(&e).unwrap(), name);
        }
    }

    #[test]
    fn bad_encodings_are_refused() {
        for raw in ["%", "%4", "%zz", "%+1", "%C3%28", "%ff"] {
            assert!(decode(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn query_values_are_checked() {
        let q = Query::parse(Some("from=12&limit=5")).unwrap();
        assert_eq!(q.number("from").unwrap(), Some(12));
        assert_eq!(q.limit().unwrap(), 5);
        assert!(Query::parse(Some("limit=0")).unwrap().limit().is_err());
        assert!(Query::parse(Some("limit=101")).unwrap().limit().is_err());
        assert!(Query::parse(Some("from=-1"))
            .unwrap()
            .number("from")
            .is_err());
        assert!(Query::parse(Some("from=99999999999999999999"))
            .unwrap()
            .number("from")
            .is_err());
        assert!(Query::parse(Some("from=1&from=2")).is_err());
        assert!(Query::parse(Some("nope=1")).is_err());
    }
}
