//! Content negotiation by the `Accept` header (RFC 9110, section 12.5.1).

/// A representation the view can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Html,
    Json,
    /// Server-Sent Events: only the live resource has it.
    EventStream,
}

impl Format {
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Html => "text/html",
            Format::Json => "application/json",
            Format::EventStream => "text/event-stream",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Json => "application/json",
            Format::EventStream => "text/event-stream; charset=utf-8",
        }
    }
}

/// One media range of an `Accept` header.
struct Range<'a> {
    kind: &'a str,
    sub: &'a str,
    q: u16,
}

/// A quality value in thousandths; `None` if malformed (the range is then ignored, as a
/// client's typo should not turn a request into a 406).
fn quality(v: &str) -> Option<u16> {
    let v = v.trim();
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// `text` split at each `sep` outside a quoted string (a parameter value may be quoted, and hold
/// `,` or `;`; a backslash escapes the next character inside quotes).
fn split_unquoted(text: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&text[start..]);
    out
}

fn ranges(accept: &str) -> Vec<Range<'_>> {
    let mut out = Vec::new();
    for item in split_unquoted(accept, ',') {
        let parts = split_unquoted(item, ';');
        let Some((kind, sub)) = parts[0].trim().split_once('/') else {
            continue;
        };
        let mut q = Some(1000);
        // A range with media type parameters (those before `q`) names a variant with them;
        // the view's types have none but a charset, so such a range matches none of them.
        let mut other_params = false;
        for p in &parts[1..] {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            let name = name.trim();
            if name.eq_ignore_ascii_case("q") {
                q = quality(value);
                break; // what follows `q` are accept extensions, not media type parameters
            }
            if !name.eq_ignore_ascii_case("charset") {
                other_params = true;
            }
        }
        if let (Some(q), false) = (q, other_params) {
            out.push(Range {
                kind: kind.trim(),
                sub: sub.trim(),
                q,
            });
        }
    }
    out
}

/// The format to answer with, among `offered` (in the view's order of preference), for the
/// request's `Accept` headers; `None` when none is acceptable (406).
///
/// Each offered type takes the quality of the most specific range that matches it (so
/// `text/*;q=0.5, text/html` gives HTML 1 and `*/*;q=0` excludes only what nothing more
/// specific names). The highest quality wins; among equals, a type named outright beats one
/// matched by a wildcard, then the one the client listed first, then the view's order. That
/// gives HTML to browsers (`text/html,...,*/*;q=0.8`), JSON to `Accept: application/json`, and
/// HTML when there is no preference (`*/*` or no header).
pub(crate) fn choose(accept: Option<&str>, offered: &[Format]) -> Option<Format> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return offered.first().copied();
    };
    let ranges = ranges(accept);
    // (quality, specificity, earliness in the header) of the best format so far.
    type Rank = (u16, u8, std::cmp::Reverse<usize>);
    let mut best: Option<(Rank, Format)> = None;
    for &format in offered {
        let (kind, sub) = format
            .media_type()
            .split_once('/')
            .unwrap_or((format.media_type(), ""));
        // (specificity, quality, position in the header) of the most specific matching range.
        let mut matched: Option<(u8, u16, usize)> = None;
        for (i, r) in ranges.iter().enumerate() {
            let specificity =
                if r.kind.eq_ignore_ascii_case(kind) && r.sub.eq_ignore_ascii_case(sub) {
                    2
                } else if r.kind.eq_ignore_ascii_case(kind) && r.sub == "*" {
                    1
                } else if r.kind == "*" && r.sub == "*" {
                    0
                } else {
                    continue;
                };
            if matched.is_none_or(|(s, _, _)| specificity > s) {
                matched = Some((specificity, r.q, i));
            }
        }
        let Some((specificity, q, i)) = matched else {
            continue;
        };
        if q == 0 {
            continue;
        }
        // The view's own order breaks the last ties: a later format must be strictly better.
        let key = (q, specificity, std::cmp::Reverse(i));
        if best.as_ref().is_none_or(|(k, _)| key > *k) {
            best = Some((key, format));
        }
    }
    best.map(|(_, f)| f)
}

#[cfg(test)]
mod tests {
    use super::Format::{self, *};
    use super::*;

    const PAGE: &[Format] = &[Html, Json];

    #[test]
    fn browsers_get_html_and_programs_json() {
        let firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert_eq!(choose(Some(firefox), PAGE), Some(Html));
        assert_eq!(choose(Some("application/json"), PAGE), Some(Json));
        assert_eq!(choose(Some("*/*"), PAGE), Some(Html));
        assert_eq!(choose(None, PAGE), Some(Html));
        assert_eq!(choose(Some("application/*"), PAGE), Some(Json));
        assert_eq!(choose(Some("text/*"), PAGE), Some(Html));
        assert_eq!(
            choose(Some("application/json, text/html"), PAGE),
            Some(Json)
        );
        assert_eq!(
            choose(Some("text/html;q=0.5, application/json"), PAGE),
            Some(Json)
        );
        assert_eq!(
            choose(Some("*/*;q=0.9, application/json;q=0.1"), PAGE),
            Some(Html)
        );
    }

    #[test]
    fn zero_quality_excludes() {
        assert_eq!(choose(Some("text/html;q=0, */*"), PAGE), Some(Json));
        assert_eq!(choose(Some("*/*;q=0, application/json"), PAGE), Some(Json));
        assert_eq!(choose(Some("image/png"), PAGE), None);
        assert_eq!(
            choose(Some("text/html;q=0, application/json;q=0"), PAGE),
            None
        );
        assert_eq!(choose(Some("text/plain"), PAGE), None);
    }

    #[test]
    fn quality_values() {
        assert_eq!(quality("1"), Some(1000));
        assert_eq!(quality("0.8"), Some(800));
        assert_eq!(quality("0.125"), Some(125));
        assert_eq!(quality("1.5"), None);
        assert_eq!(quality("0.1234"), None);
        assert_eq!(
            choose(Some("text/html;q=2, application/json"), PAGE),
            Some(Json)
        );
    }
}
