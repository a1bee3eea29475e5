//! HTML output: escaping, the page frame, and times.

use std::fmt::Write as _;

use super::Link;

/// `text` made safe as HTML text and as a quoted attribute value (`&`, `<`, `>`, `"` and `'`
/// replaced by character references), for applications that render their own pages beside the
/// view's.
///
/// ```
/// assert_eq!(
///     eventjournal::web::escape("<b title='x'>&</b>"),
///     "&lt;b title=&#39;x&#39;&gt;&amp;&lt;/b&gt;"
/// );
/// ```
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An anchor; `rel` may be empty.
pub(crate) fn a(href: &str, rel: &str, text: &str) -> String {
    if rel.is_empty() {
        format!("<a href=\"{}\">{}</a>", escape(href), escape(text))
    } else {
        format!(
            "<a rel=\"{}\" href=\"{}\">{}</a>",
            escape(rel),
            escape(href),
            escape(text)
        )
    }
}

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:70em;\
padding:0 1em;color:#222}h1{font-size:1.4em;word-break:break-all}table{border-collapse:collapse;\
width:100%}th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #ddd;\
vertical-align:top}th{background:#f4f4f4}td.num{font-variant-numeric:tabular-nums}\
pre{background:#f6f6f6;padding:.6em;overflow:auto;white-space:pre-wrap;word-break:break-all}\
nav ul{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.3em 1.2em}\
header a{font-weight:bold}dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}\
dt{font-weight:bold}dd{margin:0;word-break:break-all}.status{color:#666}";

/// A whole page: the site header, `title`, the paging and related links as a `nav`, and the
/// main content (already HTML). `nonce` lets the page's own style and script run under the
/// Content-Security-Policy, and nothing else.
pub(crate) fn page(
    title: &str,
    links: &[Link],
    main: &str,
    script: Option<&str>,
    nonce: &str,
) -> String {
    let mut nav = String::new();
    if !links.is_empty() {
        nav.push_str("<nav id=\"links\" aria-label=\"links\"><ul>");
        for l in links {
            let _ = write!(nav, "<li>{}</li>", a(&l.href, &l.rel, &l.title));
        }
        nav.push_str("</ul></nav>");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · eventjournal</title><style nonce=\"{nonce}\">{STYLE}</style></head>\
         <body><header>{home}</header><h1 id=\"title\">{t}</h1>{nav}<main>{main}</main>\
         {script}</body></html>\n",
        t = escape(title),
        home = a("/", "", "eventjournal"),
        script = script.map_or(String::new(), |s| format!(
            "<script nonce=\"{nonce}\">{s}</script>"
        )),
    )
}

/// Bytes as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<script>alert('x&y\")</script>"),
            "&lt;script&gt;alert(&#39;x&amp;y&quot;)&lt;/script&gt;"
        );
    }
}
