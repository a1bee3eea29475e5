//! The HTTP view in a real headless browser: its style and script run under its
//! Content-Security-Policy, a stream named like a script stays text, `rel` links lead where
//! they say, and the live page shows committed events without a reload.

mod browser_harness;

use std::sync::Arc;

use browser_harness::{screenshot_dir, Browser};
use eventjournal::{web, Durability, EventData, ExpectedVersion, Options, Store};
use serde_json::json;

const SCRIPT: &str = "<script>alert(1)</script>";

/// Clicks the link `selector` finds, as a person would; returns where it led.
fn follow(b: &mut Browser, selector: &str) -> String {
    b.click_link(selector)
}

#[test]
fn the_view_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open(dir.path(), Options::default().durability(Durability::None)).unwrap());
    let events: Vec<EventData> = (0..45)
        .map(|i| EventData::new("Deposited", format!("{{\"cents\":{i}}}")))
        .collect();
    store
        .append("account-1", ExpectedVersion::NoStream, events)
        .unwrap();
    store
        .append(
            SCRIPT,
            ExpectedVersion::NoStream,
            [EventData::new("Odd", "{}")],
        )
        .unwrap();
    let server = web::serve(store.clone(), "127.0.0.1:0").unwrap();
    let base = format!("http://{}", server.addr());
    let mut b = Browser::start(1100, 800);

    // The page's own style applies (the policy lets its nonce through).
    b.goto(&format!("{base}/"));
    assert_eq!(
        b.eval("getComputedStyle(document.body).maxWidth"),
        json!("1050px")
    );

    // From the home page, by clicking: the list of streams, a stream, one of its events.
    assert!(b.text().contains("$all"), "{}", b.text());
    follow(&mut b, "a[rel~=streams]");
    b.wait_for("document.querySelector('a[href=\"/streams/account-1\"]')");
    follow(&mut b, "a[href=\"/streams/account-1\"]");
    assert_eq!(
        b.eval("document.getElementById('title').textContent"),
        json!("stream account-1")
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#events tr.event').length"),
        json!(20)
    );
    let event = follow(
        &mut b,
        "#events tr.event a[href$=\"/streams/account-1/44\"]",
    );
    assert!(event.ends_with("/streams/account-1/44"), "{event}");
    let shown = b.text();
    assert!(
        shown.contains("Deposited") && shown.contains("\"cents\": 44"),
        "{shown}"
    );
    b.screenshot(&screenshot_dir().join("web-walk-event.png"));

    // A stream named like a script is shown as its name, and runs nothing.
    b.goto(&format!(
        "{base}/streams/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"
    ));
    assert_eq!(
        b.eval("document.getElementById('title').textContent"),
        json!(format!("stream {SCRIPT}"))
    );
    assert_eq!(b.eval("document.scripts.length"), json!(0));
    assert_eq!(
        b.eval("document.querySelectorAll('#events tr.event').length"),
        json!(1)
    );

    // Paging by the links' relations.
    b.goto(&format!("{base}/streams/account-1"));
    assert_eq!(
        b.eval("document.querySelector('#events tr.event td:nth-child(3)').textContent"),
        json!("44")
    );
    assert_eq!(
        b.eval("document.querySelector('a[rel~=previous]')"),
        json!(null)
    );
    let next = follow(&mut b, "a[rel~=next]");
    assert!(next.ends_with("/streams/account-1?from=24"), "{next}");
    assert_eq!(
        b.eval("document.querySelector('#events tr.event td:nth-child(3)').textContent"),
        json!("24")
    );
    follow(&mut b, "a[rel~=last]");
    assert_eq!(
        b.eval("document.querySelector('a[rel~=next]')"),
        json!(null)
    );
    let first = follow(&mut b, "a[rel~=head]");
    assert!(first.ends_with("/streams/account-1"), "{first}");
    b.screenshot(&screenshot_dir().join("web-stream.png"));

    // The live page: events committed after it loaded appear at the top, with no reload.
    b.goto(&format!("{base}/live"));
    b.wait_for("document.getElementById('live-status').textContent.startsWith('connected')");
    b.eval("window.loadedOnce = true");
    let rows_before = b.eval("document.querySelectorAll('#live tr.event').length");
    store
        .append(
            "cart-7",
            ExpectedVersion::Any,
            [EventData::new("Opened", "{}")],
        )
        .unwrap();
    b.wait_for("document.querySelector('#live tr.event td:nth-child(2)').textContent === 'cart-7'");
    store
        .append(
            SCRIPT,
            ExpectedVersion::Any,
            [EventData::new("<img src=x onerror=alert(2)>", "{}")],
        )
        .unwrap();
    b.wait_for(&format!(
        "document.querySelector('#live tr.event td:nth-child(2)').textContent === {}",
        json!(SCRIPT)
    ));
    assert_eq!(
        b.eval("window.loadedOnce"),
        json!(true),
        "the page was reloaded"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#live img').length"),
        json!(0)
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#live tr.event').length"),
        json!(rows_before.as_u64().unwrap() + 2)
    );
    // The new row links to the event, under its encoded name.
    let event = follow(&mut b, "#live tr.event td:nth-child(3) a");
    assert!(
        event.ends_with("/streams/%3Cscript%3Ealert%281%29%3C%2Fscript%3E/1"),
        "{event}"
    );
    assert_eq!(
        b.eval("document.getElementById('title').textContent"),
        json!(format!("{SCRIPT} #1"))
    );
    b.screenshot(&screenshot_dir().join("web-event.png"));
    drop(b);
    server.stop();
}
