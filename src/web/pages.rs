//! The resources: what each path shows and links to, read from the store.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use super::html::{a, escape, hex};
use super::negotiate::Format;
use super::url::{decode, path, Problem, Query};
use super::{EventStream, Link, Outcome, Resource};
use crate::{AllFrom, Error, Position, RecordedEvent, Store};

/// A parsed path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Home,
    Streams,
    Categories,
    EventTypes,
    Stream(String),
    Event(String, u64),
    All,
    Category(String),
    EventType(String),
    Live,
}

/// Routes a raw (still percent-encoded) path. Segments are split before decoding, so an encoded
/// `/` in a stream name stays part of the name.
pub(crate) fn route(raw: &str) -> Result<Route, Problem> {
    let segments: Vec<&str> = raw.trim_start_matches('/').split('/').collect();
    let name = |s: &str, what: &str| -> Result<String, Problem> {
        let n = decode(s)?;
        if n.is_empty() {
            return Err(Problem::bad_request(format!("the {what} name is empty")));
        }
        Ok(n)
    };
    match segments.as_slice() {
        [""] => Ok(Route::Home),
        ["streams"] => Ok(Route::Streams),
        ["streams", s] => match name(s, "stream")?.as_str() {
            "$all" => Ok(Route::All),
            n => Ok(Route::Stream(n.to_string())),
        },
        ["streams", s, n] => {
            let stream = name(s, "stream")?;
            let number = decode(n)?;
            // Digits only: `parse` would also take a sign (`+3`).
            let digits = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
            match number.parse::<u64>() {
                Ok(number) if digits => Ok(Route::Event(stream, number)),
                _ => Err(Problem::bad_request(format!(
                    "`{number}` is not an event number (a non-negative integer)"
                ))),
            }
        }
        ["categories"] => Ok(Route::Categories),
        ["types"] => Ok(Route::EventTypes),
        ["categories", c] => Ok(Route::Category(name(c, "category")?)),
        ["types", t] => Ok(Route::EventType(name(t, "event type")?)),
        ["live"] => Ok(Route::Live),
        _ => Err(Problem::not_found(format!("nothing here: `{raw}`"))),
    }
}

/// Builds the resource for `route`.
pub(crate) fn build(
    store: &Store,
    route: Route,
    query: &Query,
    format: Format,
    last_event_id: Option<&str>,
) -> Result<Outcome, Problem> {
    let page = match route {
        Route::Home => home(store)?,
        Route::Streams => listing(store, Names::Streams, query)?,
        Route::Categories => listing(store, Names::Categories, query)?,
        Route::EventTypes => listing(store, Names::EventTypes, query)?,
        Route::Stream(name) => stream(store, &name, query)?,
        Route::Event(name, n) => event(store, &name, n)?,
        Route::All => all(store, query)?,
        Route::Category(c) => indexed(store, Indexed::Category(&c), query)?,
        Route::EventType(t) => indexed(store, Indexed::EventType(&t), query)?,
        Route::Live if format == Format::EventStream => {
            return live_events(store, query, last_event_id).map(Outcome::Events)
        }
        Route::Live => live(store, query)?,
    };
    Ok(Outcome::Page(page))
}

/// A store error as the reader's problem (bad input, nothing there) or the view's (500).
fn store_error(e: Error) -> Problem {
    let status = match &e {
        Error::InvalidInput(_) | Error::InvalidPosition(_) | Error::ReservedName { .. } => {
            http::StatusCode::BAD_REQUEST
        }
        Error::EventNotFound { .. } => http::StatusCode::NOT_FOUND,
        Error::StreamDeleted { .. } => http::StatusCode::GONE,
        Error::Closed => http::StatusCode::SERVICE_UNAVAILABLE,
        _ => {
            tracing::error!(error = %e, "HTTP view: reading the store failed");
            http::StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    Problem {
        status,
        message: e.to_string(),
    }
}

/// An error as a resource, so that it is shown in the negotiated format.
pub(crate) fn problem(p: &Problem) -> Resource {
    let mut json = Map::new();
    json.insert(
        "error".into(),
        json!({ "status": p.status.as_u16(), "message": p.message }),
    );
    Resource {
        title: format!(
            "{} {}",
            p.status.as_u16(),
            p.status.canonical_reason().unwrap_or("Error")
        ),
        links: vec![Link::new("home", path::home(), "home")],
        json,
        html: format!("<p id=\"error\">{}</p>", escape(&p.message)),
        script: None,
    }
}

/// What the engine says of a stream: each page decides what it shows for a stream deleted or
/// truncated by its metadata (see the README's "Deleting streams and retention").
enum StreamState {
    Absent,
    /// Deleted for good: nothing of it can be read.
    Tombstoned {
        newest: Option<u64>,
    },
    /// Soft-deleted (`retained`: false), or every event past its retention (`true`): nothing
    /// to show.
    Deleted {
        newest: u64,
        retained: bool,
    },
    Present {
        /// The oldest event number that can be read (above 0: truncated).
        oldest: u64,
        /// The newest event number.
        newest: u64,
    },
}

impl StreamState {
    /// What the stream's page says of it (`state` in JSON).
    fn describe(&self) -> String {
        match self {
            StreamState::Absent => "absent".into(),
            StreamState::Tombstoned { .. } => "tombstoned".into(),
            StreamState::Deleted { retained: true, .. } => "expired".into(),
            StreamState::Deleted { .. } => "deleted".into(),
            StreamState::Present { oldest: 0, .. } => "present".into(),
            StreamState::Present { oldest, .. } => format!("truncated before {oldest}"),
        }
    }
}

fn stream_state(store: &Store, name: &str) -> Result<StreamState, Problem> {
    // Checks the name as reads do: a name no stream can have is a 400, not a 404.
    match store.read_stream_backward(name, 0, 0) {
        Err(Error::StreamDeleted { .. }) => {
            return Ok(StreamState::Tombstoned {
                newest: store.stream_version(name).map_err(store_error)?,
            })
        }
        r => {
            r.map_err(store_error)?;
        }
    }
    let Some(newest) = store.stream_version(name).map_err(store_error)? else {
        return Ok(StreamState::Absent);
    };
    // The first event the stream's metadata leaves visible (retention, soft delete).
    Ok(
        match store
            .read_stream_forward(name, 0, 1)
            .map_err(store_error)?
            .next()
        {
            None => StreamState::Deleted {
                newest,
                // Deleted when its truncation covers every event; otherwise its `max_count` or
                // `max_age_secs` leaves none.
                retained: store
                    .stream_metadata(name)
                    .map_err(store_error)?
                    .and_then(|(_, md)| md.truncate_before)
                    .is_none_or(|t| t <= newest),
            },
            Some(e) => StreamState::Present {
                oldest: e.map_err(store_error)?.event_number(),
                newest,
            },
        },
    )
}

/// The visible events among entries `from..end` of a category or event type (a read of them
/// passes over hidden events, and would go on past `end`).
fn entries(mut read: crate::StreamEvents<'_>, end: u64) -> Result<Vec<RecordedEvent>, Problem> {
    let mut out = Vec::new();
    while read.next_entry() < end {
        match read.next() {
            None => break,
            Some(e) => {
                let e = e.map_err(store_error)?;
                if read.next_entry() > end {
                    break;
                }
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// One page of a sequence numbered `oldest..=newest`, shown newest first, `top` the number at
/// its top.
struct NumberedPage {
    oldest: u64,
    newest: u64,
    top: u64,
    limit: usize,
}

impl NumberedPage {
    /// The page from `from` (the newest if `None`); a `from` past the newest is a 404.
    fn new(
        oldest: u64,
        newest: u64,
        from: Option<u64>,
        limit: usize,
        what: &str,
    ) -> Result<NumberedPage, Problem> {
        let top = from.unwrap_or(newest);
        if top > newest {
            return Err(Problem::not_found(format!(
                "{what} has no event {top}: its newest is {newest}"
            )));
        }
        if top < oldest {
            return Err(Problem::not_found(format!(
                "{what} has no event {top}: its oldest is {oldest}"
            )));
        }
        Ok(NumberedPage {
            oldest,
            newest,
            top,
            limit,
        })
    }

    fn bottom(&self) -> u64 {
        self.top
            .saturating_sub(self.limit as u64 - 1)
            .max(self.oldest)
    }

    fn len(&self) -> usize {
        (self.top - self.bottom() + 1) as usize
    }

    /// The paging links, each only where its page exists; `url(from, limit)` makes a page's
    /// URL, `url(None, limit)` the head's.
    fn links(&self, url: impl Fn(Option<u64>, usize) -> String) -> Vec<Link> {
        let mut links = Vec::new();
        let limit = self.limit;
        if self.top < self.newest {
            links.push(Link::new("first head", url(None, limit), "newest"));
            // Exactly the events newer than this page: near the head that is fewer than a
            // page, and a whole page from there would show some of this one's again.
            let newer = (self.top + limit as u64).min(self.newest);
            let count = (newer - self.top) as usize;
            links.push(Link::new("previous", url(Some(newer), count), "newer"));
        }
        let bottom = self.bottom();
        if bottom > self.oldest {
            links.push(Link::new("next", url(Some(bottom - 1), limit), "older"));
            let last = (self.oldest + limit as u64 - 1).min(self.newest);
            links.push(Link::new("last", url(Some(last), limit), "oldest"));
        }
        links
    }
}

/// How many categories and event types the home page shows before linking to their lists.
const HOME_NAMES: usize = 20;

fn home(store: &Store) -> Result<Resource, Problem> {
    // Counted up to a bound, in one listing (each walks the streams in memory): the home page
    // must stay cheap on a store of millions of streams.
    const COUNT_UP_TO: usize = 10_000;
    let streams = store
        .list_streams(None, COUNT_UP_TO)
        .map_err(store_error)?
        .len();
    let streams_text = if streams >= COUNT_UP_TO {
        format!("{COUNT_UP_TO} or more")
    } else {
        streams.to_string()
    };
    let head = store.head();
    let info = store.index_info();
    let stats = store.stats();
    let limit = super::DEFAULT_LIMIT;
    let links = vec![
        Link::new("self", path::home(), "home"),
        Link::new("streams", path::streams(None, limit), "streams"),
        Link::new("categories", path::categories(None, limit), "categories"),
        Link::new("types", path::event_types(None, limit), "event types"),
        Link::new("all", path::all(None, limit), "$all"),
        Link::new("live", path::live(), "live"),
    ];
    let mut json = Map::new();
    json.insert("head".into(), head.0.into());
    json.insert(
        "streams".into(),
        if streams >= COUNT_UP_TO {
            json!({ "atLeast": COUNT_UP_TO })
        } else {
            json!(streams)
        },
    );
    json.insert(
        "index".into(),
        json!({ "loadedKeys": info.loaded_keys, "indexFiles": info.index_files }),
    );
    json.insert(
        "stats".into(),
        json!({
            "appends": stats.appends,
            "eventsAppended": stats.events_appended,
            "bytesAppended": stats.bytes_appended,
            "groups": stats.groups,
            "largestGroup": stats.largest_group,
            "meanGroup": stats.mean_group(),
            "syncs": stats.syncs,
            "eventsReplayed": stats.events_replayed,
        }),
    );
    let mut sections = String::new();
    for names in [Names::Categories, Names::EventTypes] {
        let (page, more) = names_page(store, names, None, HOME_NAMES)?;
        let (table, items) = names_table(names, &page);
        json.insert(names.what().into(), items);
        let _ = write!(
            sections,
            "<section><h2>{}</h2>{table}{}</section>",
            names.what(),
            if more {
                format!(
                    "<p>{}</p>",
                    a(
                        &names.list_url(None, limit),
                        "",
                        &format!("all {}", names.what())
                    )
                )
            } else {
                String::new()
            }
        );
        if more {
            // The list itself is already linked; the JSON says there is more than shown.
            json.insert(format!("{}Truncated", names.what()), true.into());
        }
    }
    // Kept short of a wall of numbers: the rest are in the JSON.
    let html = format!(
        "<dl id=\"store\"><dt>head position</dt><dd id=\"head\">{}</dd>\
         <dt>streams</dt><dd id=\"stream-count\">{}</dd>\
         <dt>index keys in memory</dt><dd>{}</dd><dt>index files</dt><dd>{}</dd></dl>\
         <ul id=\"sections\"><li>{}</li><li>{}</li><li>{}</li></ul>{sections}\
         <section><h2>since the store opened</h2><dl id=\"stats\">\
         <dt>appends</dt><dd>{}</dd><dt>events appended</dt><dd>{}</dd>\
         <dt>bytes appended</dt><dd>{}</dd><dt>group commits</dt><dd>{}</dd>\
         <dt>largest group</dt><dd>{}</dd><dt>syncs</dt><dd>{}</dd>\
         <dt>events replayed</dt><dd>{}</dd></dl></section>",
        head.0,
        escape(&streams_text),
        info.loaded_keys,
        info.index_files,
        a(&path::streams(None, limit), "", "streams"),
        a(&path::all(None, limit), "", "$all, newest first"),
        a(&path::live(), "", "live: events as they are committed"),
        stats.appends,
        stats.events_appended,
        stats.bytes_appended,
        stats.groups,
        stats.largest_group,
        stats.syncs,
        stats.events_replayed,
    );
    Ok(Resource {
        title: "store".into(),
        links,
        json,
        html,
        script: None,
    })
}

/// Names the store lists a page at a time, in its listing order (a hash of the names).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Names {
    Streams,
    Categories,
    EventTypes,
}

impl Names {
    /// The plural, for titles and JSON keys.
    fn what(self) -> &'static str {
        match self {
            Names::Streams => "streams",
            Names::Categories => "categories",
            Names::EventTypes => "types",
        }
    }

    fn list_url(self, after: Option<&str>, limit: usize) -> String {
        match self {
            Names::Streams => path::streams(after, limit),
            Names::Categories => path::categories(after, limit),
            Names::EventTypes => path::event_types(after, limit),
        }
    }

    fn item_url(self, name: &str) -> String {
        match self {
            Names::Streams => path::stream(name, None, super::DEFAULT_LIMIT),
            Names::Categories => path::category(name, None, super::DEFAULT_LIMIT),
            Names::EventTypes => path::event_type(name, None, super::DEFAULT_LIMIT),
        }
    }

    fn page(self, store: &Store, after: Option<&str>, max: usize) -> crate::Result<Vec<String>> {
        match self {
            Names::Streams => store.list_streams(after, max),
            Names::Categories => store.list_categories(after, max),
            Names::EventTypes => store.list_event_types(after, max),
        }
    }

    fn events(self, store: &Store, name: &str) -> crate::Result<u64> {
        match self {
            Names::Streams => Ok(store.stream_version(name)?.map_or(0, |v| v + 1)),
            Names::Categories => store.category_len(name),
            Names::EventTypes => store.event_type_len(name),
        }
    }
}

/// Up to `max` names after `after`, each with its number of events; and whether more follow.
fn names_page(
    store: &Store,
    names: Names,
    after: Option<&str>,
    max: usize,
) -> Result<(Vec<(String, u64)>, bool), Problem> {
    // One more than a page tells whether a next page exists.
    let mut page = names.page(store, after, max + 1).map_err(store_error)?;
    let more = page.len() > max;
    page.truncate(max);
    let mut out = Vec::with_capacity(page.len());
    for name in page {
        let n = names.events(store, &name).map_err(store_error)?;
        out.push((name, n));
    }
    Ok((out, more))
}

/// A table of names (`id` the plural) with their event counts, and the same as JSON.
fn names_table(names: Names, page: &[(String, u64)]) -> (String, Value) {
    let mut rows = String::new();
    let mut items = Vec::new();
    let (class, heading) = match names {
        Names::Streams => ("stream", "stream"),
        Names::Categories => ("category", "category"),
        Names::EventTypes => ("type", "event type"),
    };
    for (name, events) in page {
        let href = names.item_url(name);
        let _ = write!(
            rows,
            "<tr class=\"{class}\"><td>{}</td><td class=\"num\">{events}</td></tr>",
            a(&href, "", name),
        );
        items.push(json!({ "name": name, "events": events, "links": { "self": href } }));
    }
    let html = format!(
        "<table id=\"{}\"><thead><tr><th>{heading}</th><th>events</th></tr></thead>\
         <tbody>{rows}</tbody></table>",
        names.what()
    );
    (html, items.into())
}

fn listing(store: &Store, names: Names, query: &Query) -> Result<Resource, Problem> {
    let limit = query.limit()?;
    if query.number("from")?.is_some() {
        return Err(Problem::bad_request(format!(
            "the list of {} is paged with `after=NAME`, not `from`",
            names.what()
        )));
    }
    let after = query.get("after");
    let (page, more) = names_page(store, names, after, limit)?;
    let mut links = vec![Link::new("self", names.list_url(after, limit), "this page")];
    if after.is_some() {
        links.push(Link::new(
            "first",
            names.list_url(None, limit),
            "first page",
        ));
    }
    if let (true, Some((last, _))) = (more, page.last()) {
        links.push(Link::new(
            "next",
            names.list_url(Some(last), limit),
            "next page",
        ));
    }
    links.push(Link::new("up", path::home(), "home"));
    let (table, items) = names_table(names, &page);
    let mut json = Map::new();
    json.insert(names.what().into(), items);
    let html = format!(
        "<p class=\"status\">in the store's listing order (stable, not alphabetical)</p>{table}"
    );
    Ok(Resource {
        title: names.what().into(),
        links,
        json,
        html,
        script: None,
    })
}

/// An event in a list, as JSON.
pub(crate) fn event_summary(e: &RecordedEvent) -> Value {
    json!({
        "stream": e.stream(),
        "number": e.event_number(),
        "position": e.position().0,
        "id": e.id().to_string(),
        "type": e.event_type(),
        "time": e.time_utc(),
        "links": {
            "self": path::event(e.stream(), e.event_number()),
            "stream": path::stream(e.stream(), None, super::DEFAULT_LIMIT),
            "type": path::event_type(e.event_type(), None, super::DEFAULT_LIMIT),
        },
    })
}

pub(crate) fn event_summary_json(e: &RecordedEvent) -> String {
    event_summary(e).to_string()
}

/// Events as the rows of a table (`id="events"`), newest first as given.
fn events_table(events: &[RecordedEvent], table_id: &str) -> String {
    let mut rows = String::new();
    for e in events {
        let _ = write!(
            rows,
            "<tr class=\"event\" data-position=\"{pos}\"><td class=\"num\">{pos}</td><td>{stream}</td>\
             <td class=\"num\">{num}</td><td>{ty}</td><td>{t}</td></tr>",
            pos = e.position().0,
            stream = a(
                &path::stream(e.stream(), None, super::DEFAULT_LIMIT),
                "",
                e.stream()
            ),
            num = a(
                &path::event(e.stream(), e.event_number()),
                "",
                &e.event_number().to_string()
            ),
            ty = a(
                &path::event_type(e.event_type(), None, super::DEFAULT_LIMIT),
                "",
                e.event_type()
            ),
            t = e.time_utc(),
        );
    }
    format!(
        "<table id=\"{table_id}\"><thead><tr><th>position</th><th>stream</th><th>number</th>\
         <th>type</th><th>time</th></tr></thead><tbody>{rows}</tbody></table>"
    )
}

fn collect(
    events: impl Iterator<Item = crate::Result<RecordedEvent>>,
) -> Result<Vec<RecordedEvent>, Problem> {
    events
        .collect::<crate::Result<Vec<_>>>()
        .map_err(store_error)
}

fn stream(store: &Store, name: &str, query: &Query) -> Result<Resource, Problem> {
    let limit = query.limit()?;
    if query.get("after").is_some() {
        return Err(Problem::bad_request(
            "a stream is paged with `from=NUMBER`, not `after`",
        ));
    }
    let state = stream_state(store, name)?;
    let (oldest, newest) = match state {
        StreamState::Absent => {
            return Err(Problem::not_found(format!("no stream `{name}`")));
        }
        StreamState::Tombstoned { newest } => return Ok(gone_stream(name, &state, newest)),
        StreamState::Deleted { newest, .. } => return Ok(gone_stream(name, &state, Some(newest))),
        StreamState::Present { oldest, newest } => (oldest, newest),
    };
    let what = format!("stream `{name}`");
    let page = NumberedPage::new(oldest, newest, query.number("from")?, limit, &what)?;
    let events = collect(
        store
            .read_stream_backward(name, page.top, page.len())
            .map_err(store_error)?,
    )?;
    let mut links = vec![Link::new(
        "self",
        path::stream(name, query.number("from")?, limit),
        "this page",
    )];
    links.extend(page.links(|from, limit| path::stream(name, from, limit)));
    // A name starting with `-` has an empty category, which no index keeps.
    let category = crate::category_of(name);
    if !category.is_empty() {
        links.push(Link::new(
            "category",
            path::category(category, None, super::DEFAULT_LIMIT),
            format!("category {category}"),
        ));
    }
    links.push(Link::new(
        "up",
        path::streams(None, super::DEFAULT_LIMIT),
        "streams",
    ));
    let mut json = Map::new();
    json.insert("stream".into(), name.into());
    json.insert("version".into(), newest.into());
    json.insert("state".into(), state.describe().into());
    json.insert(
        "events".into(),
        events.iter().map(event_summary).collect::<Vec<_>>().into(),
    );
    let truncated = if oldest > 0 {
        format!(
            "<p class=\"state\" id=\"state\">truncated before {oldest}: events 0 to {} are \
             no longer read</p>",
            oldest - 1
        )
    } else {
        String::new()
    };
    let html = format!(
        "{truncated}<p class=\"status\">events {} to {} of {} (numbers {}..={}), newest first</p>{}",
        page.bottom(),
        page.top,
        newest + 1,
        oldest,
        newest,
        events_table(&events, "events")
    );
    Ok(Resource {
        title: format!("stream {name}"),
        links,
        json,
        html,
        script: None,
    })
}

/// The page of a stream deleted (soft or for good): says so, and links to nothing of it.
fn gone_stream(name: &str, state: &StreamState, newest: Option<u64>) -> Resource {
    let mut links = vec![Link::new(
        "self",
        path::stream(name, None, super::DEFAULT_LIMIT),
        "this page",
    )];
    links.push(Link::new(
        "up",
        path::streams(None, super::DEFAULT_LIMIT),
        "streams",
    ));
    let mut json = Map::new();
    json.insert("stream".into(), name.into());
    json.insert("version".into(), newest.map_or(Value::Null, Value::from));
    json.insert("state".into(), state.describe().into());
    json.insert("events".into(), Vec::<Value>::new().into());
    let what = match state {
        StreamState::Tombstoned { .. } => {
            "deleted for good (tombstoned): it can never be read or written again"
        }
        StreamState::Deleted { retained: true, .. } => {
            "expired: every event is past its retention (max_count, max_age_secs)"
        }
        _ => "deleted: its events are no longer read; an append starts it again",
    };
    let numbers = match newest {
        Some(n) => format!(" Its events were numbered up to {n}."),
        None => String::new(),
    };
    Resource {
        title: format!("stream {name}"),
        links,
        json,
        html: format!("<p class=\"state\" id=\"state\">This stream is {what}.{numbers}</p>"),
        script: None,
    }
}

/// Event data or metadata: JSON when it parses as JSON, hex otherwise.
fn payload(bytes: &[u8]) -> (Value, &'static str, String) {
    if !bytes.is_empty() {
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
            return (v, "json", pretty);
        }
    }
    let h = hex(bytes);
    (Value::String(h.clone()), "hex", h)
}

/// A payload's text for a `<pre>`, saying so when there is none.
fn shown(text: &str) -> String {
    if text.is_empty() {
        "(empty)".into()
    } else {
        escape(text)
    }
}

fn event(store: &Store, name: &str, number: u64) -> Result<Resource, Problem> {
    let (oldest, newest) = match stream_state(store, name)? {
        StreamState::Absent => return Err(Problem::not_found(format!("no stream `{name}`"))),
        StreamState::Tombstoned { .. } => {
            return Err(store_error(Error::StreamDeleted {
                stream: name.to_string(),
            }))
        }
        StreamState::Deleted { .. } => {
            return Err(Problem::not_found(format!(
                "stream `{name}` is deleted: event {number} is no longer read"
            )))
        }
        StreamState::Present { oldest, newest } => (oldest, newest),
    };
    let e = store.read_event(name, number).map_err(store_error)?;
    let mut links = vec![
        Link::new("self", path::event(name, number), "this event"),
        Link::new(
            "up",
            path::stream(name, Some(number), super::DEFAULT_LIMIT),
            format!("stream {name}"),
        ),
    ];
    if number > oldest {
        links.push(Link::new(
            "previous",
            path::event(name, number - 1),
            "previous event",
        ));
    }
    if number < newest {
        links.push(Link::new(
            "next",
            path::event(name, number + 1),
            "next event",
        ));
    }
    links.push(Link::new(
        "all",
        path::all(Some(e.next_position().0), super::DEFAULT_LIMIT),
        "in $all",
    ));
    links.push(Link::new(
        "type",
        path::event_type(e.event_type(), None, super::DEFAULT_LIMIT),
        format!("type {}", e.event_type()),
    ));
    let category = crate::category_of(name);
    if !category.is_empty() {
        links.push(Link::new(
            "category",
            path::category(category, None, super::DEFAULT_LIMIT),
            format!("category {category}"),
        ));
    }
    let (data, data_enc, data_text) = payload(e.data());
    let (meta, meta_enc, meta_text) = payload(e.metadata());
    let mut json = match event_summary(&e) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    json.remove("links");
    json.insert("data".into(), data);
    json.insert("dataEncoding".into(), data_enc.into());
    json.insert("metadata".into(), meta);
    json.insert("metadataEncoding".into(), meta_enc.into());
    let html = format!(
        "<dl id=\"event\" class=\"event\"><dt>stream</dt><dd>{}</dd><dt>number</dt><dd>{}</dd>\
         <dt>position</dt><dd>{}</dd><dt>id</dt><dd>{}</dd><dt>type</dt><dd>{}</dd>\
         <dt>time</dt><dd>{}</dd></dl>\
         <h2>data ({data_enc})</h2><pre id=\"data\">{}</pre>\
         <h2>metadata ({meta_enc})</h2><pre id=\"metadata\">{}</pre>",
        a(&path::stream(name, None, super::DEFAULT_LIMIT), "", name),
        number,
        e.position().0,
        e.id(),
        escape(e.event_type()),
        e.time_utc(),
        shown(&data_text),
        shown(&meta_text),
    );
    Ok(Resource {
        title: format!("{name} #{number}"),
        links,
        json,
        html,
        script: None,
    })
}

fn all(store: &Store, query: &Query) -> Result<Resource, Problem> {
    let limit = query.limit()?;
    if query.get("after").is_some() {
        return Err(Problem::bad_request(
            "$all is paged with `from=POSITION`, not `after`",
        ));
    }
    let from = query.number("from")?;
    let before = from.map_or(Position::END, Position);
    let mut events = collect(
        store
            .read_all_backward(before, limit + 1)
            .map_err(store_error)?,
    )?;
    let more = events.len() > limit;
    events.truncate(limit);
    let mut links = vec![Link::new("self", path::all(from, limit), "this page")];
    if let Some(newest) = events.first() {
        let newer = collect(
            store
                .read_all_forward(newest.next_position(), limit)
                .map_err(store_error)?,
        )?;
        if let Some(top) = newer.last() {
            links.push(Link::new("first head", path::all(None, limit), "newest"));
            // Exactly the events newer than this page (fewer than a page near the head).
            links.push(Link::new(
                "previous",
                path::all(Some(top.next_position().0), newer.len()),
                "newer",
            ));
        }
    }
    if events.is_empty() && from.is_some() && store.head() != Position::START {
        // Before the first event (`from` at the start): nothing here, the head is the way on.
        let any = collect(
            store
                .read_all_backward(Position::END, 1)
                .map_err(store_error)?,
        )?;
        if !any.is_empty() {
            links.push(Link::new("first head", path::all(None, limit), "newest"));
        }
    }
    if let (true, Some(oldest)) = (more, events.last()) {
        links.push(Link::new(
            "next",
            path::all(Some(oldest.position().0), limit),
            "older",
        ));
        let first_page = collect(
            store
                .read_all_forward(Position::START, limit)
                .map_err(store_error)?,
        )?;
        if let Some(last) = first_page.last() {
            links.push(Link::new(
                "last",
                path::all(Some(last.next_position().0), limit),
                "oldest",
            ));
        }
    }
    links.push(Link::new("up", path::home(), "home"));
    let mut json = Map::new();
    json.insert("head".into(), store.head().0.into());
    json.insert(
        "events".into(),
        events.iter().map(event_summary).collect::<Vec<_>>().into(),
    );
    let html = format!(
        "<p class=\"status\">every event in commit order, newest first; the head is at \
         position {}</p>{}",
        store.head().0,
        events_table(&events, "events")
    );
    Ok(Resource {
        title: "$all".into(),
        links,
        json,
        html,
        script: None,
    })
}

/// A sequence of events served by an index of the store, numbered from 0 in position order.
#[derive(Clone, Copy)]
enum Indexed<'a> {
    Category(&'a str),
    EventType(&'a str),
}

fn indexed(store: &Store, which: Indexed<'_>, query: &Query) -> Result<Resource, Problem> {
    let limit = query.limit()?;
    if query.get("after").is_some() {
        return Err(Problem::bad_request(
            "paged with `from=NUMBER`, not `after`",
        ));
    }
    let (name, what, len) = match which {
        Indexed::Category(c) => {
            // Checks the name first: `a-b` can never be a category (400, not 404).
            store.read_category(c, 0, 0).map_err(store_error)?;
            (c, "category", store.category_len(c).map_err(store_error)?)
        }
        Indexed::EventType(t) => {
            store.read_event_type(t, 0, 0).map_err(store_error)?;
            (
                t,
                "event type",
                store.event_type_len(t).map_err(store_error)?,
            )
        }
    };
    let url = |from: Option<u64>, limit: usize| match which {
        Indexed::Category(c) => path::category(c, from, limit),
        Indexed::EventType(t) => path::event_type(t, from, limit),
    };
    let Some(newest) = len.checked_sub(1) else {
        return Err(Problem::not_found(format!("no events in {what} `{name}`")));
    };
    let page = NumberedPage::new(
        0,
        newest,
        query.number("from")?,
        limit,
        &format!("{what} `{name}`"),
    )?;
    // Read to the end of the page's entries: events the streams' metadata hides are passed
    // over, and the page shows fewer.
    let read = match which {
        Indexed::Category(c) => store.read_category(c, page.bottom(), usize::MAX),
        Indexed::EventType(t) => store.read_event_type(t, page.bottom(), usize::MAX),
    };
    let mut events = entries(read.map_err(store_error)?, page.top + 1)?;
    events.reverse();
    let mut links = vec![Link::new(
        "self",
        url(query.number("from")?, limit),
        "this page",
    )];
    links.extend(page.links(url));
    links.push(Link::new("up", path::home(), "home"));
    let mut json = Map::new();
    json.insert(
        if matches!(which, Indexed::Category(_)) {
            "category"
        } else {
            "type"
        }
        .into(),
        name.into(),
    );
    json.insert("count".into(), len.into());
    json.insert(
        "events".into(),
        events.iter().map(event_summary).collect::<Vec<_>>().into(),
    );
    let html = format!(
        "<p class=\"status\">{} to {} of {len} events, newest first</p>{}",
        page.bottom(),
        page.top,
        events_table(&events, "events")
    );
    Ok(Resource {
        title: format!("{what} {name}"),
        links,
        json,
        html,
        script: None,
    })
}

/// Prepends each event pushed by the server to the table, built with text nodes (never as
/// HTML), and keeps the table to a couple of hundred rows.
const LIVE_SCRIPT: &str = r#"(function () {
  var table = document.getElementById("live");
  var body = table.tBodies[0];
  var status = document.getElementById("live-status");
  var url = "/live" + (table.dataset.after ? "?after=" + table.dataset.after : "");
  var source = new EventSource(url);
  function cell(row, text, href) {
    var td = row.insertCell(-1);
    if (href) { var a = document.createElement("a"); a.href = href; a.textContent = text; td.appendChild(a); }
    else { td.textContent = text; }
  }
  source.onopen = function () { status.textContent = "connected: new events appear at the top"; };
  source.onerror = function () { status.textContent = "disconnected, retrying"; };
  source.onmessage = function (m) {
    var e = JSON.parse(m.data);
    var row = body.insertRow(0);
    row.className = "event";
    row.dataset.position = e.position;
    cell(row, String(e.position));
    cell(row, e.stream, e.links.stream);
    cell(row, String(e.number), e.links.self);
    cell(row, e.type, e.links.type);
    cell(row, e.time);
    while (body.rows.length > 200) { body.deleteRow(-1); }
  };
})();"#;

fn live(store: &Store, query: &Query) -> Result<Resource, Problem> {
    // The page shows the newest events whatever `after` says (it is for the event stream), but
    // a malformed one is still refused.
    query.number("after")?;
    if query.get("from").is_some() || query.get("limit").is_some() {
        return Err(Problem::bad_request(
            "the live view takes only `after=POSITION`",
        ));
    }
    let events = collect(
        store
            .read_all_backward(Position::END, super::DEFAULT_LIMIT)
            .map_err(store_error)?,
    )?;
    // The script asks for events after the newest one shown, so none is missed in between.
    let after = events.first().map(|e| e.position().0);
    let links = vec![
        Link::new("self", path::live(), "live"),
        Link::new("all", path::all(None, super::DEFAULT_LIMIT), "$all"),
        Link::new("up", path::home(), "home"),
    ];
    let mut json = Map::new();
    json.insert(
        "eventStream".into(),
        json!({
            "href": path::live(),
            "type": "text/event-stream",
            "description": "Server-Sent Events, one per committed event (`id`: its position; \
                            `data`: the event as JSON); `?after=POSITION` or `Last-Event-ID` \
                            to start after an event, else at the head",
        }),
    );
    json.insert(
        "events".into(),
        events.iter().map(event_summary).collect::<Vec<_>>().into(),
    );
    let table = events_table(&events, "live");
    let table = match after {
        Some(p) => table.replacen(
            "<table id=\"live\"",
            &format!("<table id=\"live\" data-after=\"{p}\""),
            1,
        ),
        None => table,
    };
    let html = format!("<p id=\"live-status\" class=\"status\">connecting…</p>{table}");
    Ok(Resource {
        title: "live".into(),
        links,
        json,
        html,
        script: Some(LIVE_SCRIPT),
    })
}

fn live_events(
    store: &Store,
    query: &Query,
    last_event_id: Option<&str>,
) -> Result<EventStream, Problem> {
    // A reconnecting EventSource sends the last id it saw, which wins over the URL it reuses.
    let after = match last_event_id.map(str::trim).filter(|s| !s.is_empty()) {
        Some(id) => Some(id.parse::<u64>().map_err(|_| {
            Problem::bad_request(format!("Last-Event-ID `{id}` is not a position"))
        })?),
        None => query.number("after")?,
    };
    let from = after.map_or(AllFrom::End, |p| AllFrom::After(Position(p)));
    let sub = store.subscribe_to_all(from, None).map_err(store_error)?;
    Ok(EventStream { sub, ended: false })
}
