//! The `eventjournal` command line: look inside a store, follow it, check it, copy it, and
//! append to it from scripts.
//!
//! Every command names the store directory first (`eventjournal read DIR STREAM`). Read commands
//! open the store read-only, so they run beside a writer in another process and change no file.
//! Output is plain text, or with `--json` one JSON object per line (per event for listings).

use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use eventjournal::{
    AllFrom, Error, EventData, EventId, ExpectedVersion, Options, Position, RecordedEvent, Store,
    StreamFrom, Subscription, SubscriptionItem,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

/// Exit statuses, as `--help` lists them.
const EXIT_ERROR: u8 = 1;
const EXIT_DAMAGE: u8 = 3;
const EXIT_CONFLICT: u8 = 4;

const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  error: no store there, unknown stream, I/O error, ...
  2  usage error: unknown command or option, bad number
  3  damage: a store file fails a check (verify, or any command reading it)
  4  append refused: the stream's version is not the one --expected names";

/// Look inside an eventjournal store: its files, streams and events; follow it live; check
/// every checksum; back it up; append from scripts.
///
/// Every command takes the store directory as its first argument. Read commands open the store
/// read-only: they work beside a running writer and change no file of the store. With --json, commands print JSON: one object per event (JSON Lines) for listings, one
/// object otherwise. Event data and metadata print as JSON when they are valid JSON, else as
/// hex.
#[derive(Debug, Parser)]
#[command(name = "eventjournal", version, after_help = EXIT_CODES)]
struct Cli {
    /// Print JSON for scripts instead of text
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The store's files and sizes, events, streams, categories, types, head, index memory
    Info {
        /// The store directory
        dir: PathBuf,
    },
    /// Stream names with their event counts, in the store's listing order
    Streams {
        /// The store directory
        dir: PathBuf,
        /// Only streams whose names start with this
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// At most this many streams
        #[arg(long, value_name = "N")]
        max: Option<usize>,
    },
    /// Categories (stream name prefixes before the first `-`) with their event counts
    Categories {
        /// The store directory
        dir: PathBuf,
        /// Only categories whose names start with this
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// At most this many categories
        #[arg(long, value_name = "N")]
        max: Option<usize>,
    },
    /// Event types with their event counts
    Types {
        /// The store directory
        dir: PathBuf,
        /// Only types whose names start with this
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// At most this many types
        #[arg(long, value_name = "N")]
        max: Option<usize>,
    },
    /// A stream's events
    Read {
        /// The store directory
        dir: PathBuf,
        /// The stream
        stream: String,
        /// First event number (default: the first, or the last with --backward)
        #[arg(long, value_name = "N")]
        from: Option<u64>,
        /// Newest first
        #[arg(long)]
        backward: bool,
        /// At most this many events
        #[arg(long, value_name = "N")]
        max: Option<usize>,
    },
    /// Events of every stream in commit order ($all)
    All {
        /// The store directory
        dir: PathBuf,
        /// Start at the event at this position (an event's position, 0 for the start)
        #[arg(long, value_name = "POS")]
        from: Option<u64>,
        /// Newest first, from the event before --from (default: the newest)
        #[arg(long)]
        backward: bool,
        /// At most this many events
        #[arg(long, value_name = "N")]
        max: Option<usize>,
    },
    /// Events of a category: every stream named NAME-...
    Category {
        /// The store directory
        dir: PathBuf,
        /// The category (the part of a stream name before its first `-`)
        name: String,
        /// Skip the category's first N events
        #[arg(long, value_name = "N", default_value_t = 0)]
        from: u64,
        /// At most this many events
        #[arg(long, value_name = "N")]
        max: Option<usize>,
    },
    /// Events of one event type
    Type {
        /// The store directory
        dir: PathBuf,
        /// The event type
        name: String,
        /// Skip the type's first N events
        #[arg(long, value_name = "N", default_value_t = 0)]
        from: u64,
        /// At most this many events
        #[arg(long, value_name = "N")]
        max: Option<usize>,
    },
    /// Print events as they are appended (by any process) until interrupted
    Tail {
        /// The store directory
        dir: PathBuf,
        /// Only this stream's events (default: every stream)
        #[arg(conflicts_with = "all")]
        stream: Option<String>,
        /// Every stream's events (the default)
        #[arg(long)]
        all: bool,
    },
    /// Check every checksum of every file; exit status 3 naming the first damage
    Verify {
        /// The store directory
        dir: PathBuf,
    },
    /// Copy the store into DEST while writers go on (DEST empty, or an earlier backup)
    Backup {
        /// The store directory
        dir: PathBuf,
        /// The destination directory
        dest: PathBuf,
    },
    /// Serve the read-only HTTP view of the store (HTML to browsers, JSON to programs), following
    /// a writer in another process; runs until interrupted
    Serve {
        /// The store directory
        dir: PathBuf,
        /// The address to listen on (the view has no access control: loopback by default)
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Append one event (opens the store for writing; fails if a writer has it open)
    Append {
        /// The store directory (it must hold a store, unless --create)
        dir: PathBuf,
        /// The stream
        stream: String,
        /// The stream version expected: any, no-stream, exists, or the last event number
        #[arg(long, value_name = "E", value_parser = parse_expected)]
        expected: ExpectedVersion,
        /// The event type
        #[arg(long = "type", value_name = "T")]
        event_type: String,
        /// The data: @FILE reads a file, @- standard input, anything else is the data itself
        #[arg(long, value_name = "DATA")]
        data: String,
        /// Metadata, given as --data is
        #[arg(long, value_name = "DATA")]
        metadata: Option<String>,
        /// The event id (a UUID), for retries that must not append twice (default: random)
        #[arg(long, value_name = "UUID", value_parser = parse_id)]
        id: Option<EventId>,
        /// Create a new store if DIR holds none (DIR missing or empty)
        #[arg(long)]
        create: bool,
    },
    /// Soft-delete a stream: its events are no longer read; an append starts it again,
    /// numbering on (opens the store for writing)
    Delete {
        /// The store directory
        dir: PathBuf,
        /// The stream
        stream: String,
        /// The stream version expected: any, no-stream, exists, or the last event number
        #[arg(long, value_name = "E", value_parser = parse_expected, default_value = "any")]
        expected: ExpectedVersion,
    },
    /// Delete a stream for good: reads and appends of it fail from now on (opens the store for
    /// writing)
    Tombstone {
        /// The store directory
        dir: PathBuf,
        /// The stream
        stream: String,
        /// The stream version expected: any, no-stream, exists, or the last event number
        #[arg(long, value_name = "E", value_parser = parse_expected, default_value = "any")]
        expected: ExpectedVersion,
    },
    /// Show a stream's metadata (retention, deletion, custom keys), or with --set replace it
    /// (opens the store for writing then)
    Metadata {
        /// The store directory
        dir: PathBuf,
        /// The stream
        stream: String,
        /// The new metadata, as JSON: {"max_count":N, "max_age_secs":S, "truncate_before":N,
        /// "custom":{...}}; @FILE reads a file, @- standard input
        #[arg(long, value_name = "JSON")]
        set: Option<String>,
        /// With --set: the metadata stream's version expected (any, no-stream, exists, or the
        /// last metadata event's number)
        #[arg(long, value_name = "E", value_parser = parse_expected, default_value = "any")]
        expected: ExpectedVersion,
    },
    /// Rewrite the sealed segments without the events no reader sees any more, and print what
    /// it gave back (opens the store for writing)
    Compact {
        /// The store directory
        dir: PathBuf,
        /// Seal the segment being written first, so that its deleted events go too
        #[arg(long)]
        seal: bool,
    },
    /// Seal the segment being written, so that the next compaction can rewrite it (opens the
    /// store for writing)
    Seal {
        /// The store directory
        dir: PathBuf,
    },
}

/// Why a command failed, and so the exit status.
enum Failure {
    /// The store said no.
    Store(Error),
    /// Something else, explained.
    Other(String),
    /// Standard output was closed by its reader (`| head`): not a failure of the command.
    Closed,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Store(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        // Writes go to standard output only: a closed pipe ends the command quietly.
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::Closed
        } else {
            Failure::Other(format!("writing the output: {e}"))
        }
    }
}

type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = run(cli, &mut out).and_then(|()| out.flush().map_err(Failure::from));
    match result {
        Ok(()) | Err(Failure::Closed) => ExitCode::SUCCESS,
        Err(Failure::Store(e)) => {
            complain(&e);
            ExitCode::from(match e {
                Error::Corrupt { .. } => EXIT_DAMAGE,
                Error::WrongExpectedVersion { .. } => EXIT_CONFLICT,
                _ => EXIT_ERROR,
            })
        }
        Err(Failure::Other(msg)) => {
            complain(&msg);
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// The one line a failure prints on standard error; if that is closed too, nothing.
fn complain(what: &dyn std::fmt::Display) {
    let _ = writeln!(io::stderr(), "eventjournal: {what}");
}

fn run(cli: Cli, out: &mut dyn Write) -> Outcome {
    let json = cli.json;
    match cli.command {
        Command::Delete {
            dir,
            stream,
            expected,
        } => end_stream(&dir, &stream, expected, false, json, out),
        Command::Tombstone {
            dir,
            stream,
            expected,
        } => end_stream(&dir, &stream, expected, true, json, out),
        Command::Metadata {
            dir,
            stream,
            set,
            expected,
        } => metadata(&dir, &stream, set.as_deref(), expected, json, out),
        Command::Compact { dir, seal } => compact(&dir, seal, json, out),
        Command::Seal { dir } => {
            let store = open_write(&dir)?;
            let sealed = store.seal();
            store.close()?;
            let sealed = sealed?;
            if json {
                writeln!(out, "{}", json!({ "sealed": sealed }))?;
            } else if sealed {
                writeln!(out, "sealed the segment being written")?;
            } else {
                writeln!(
                    out,
                    "nothing to seal: the segment being written holds no event"
                )?;
            }
            Ok(())
        }
        Command::Info { dir } => info(&dir, json, out),
        Command::Streams { dir, prefix, max } => {
            let list = Listing::Streams;
            names(&dir, list, prefix.as_deref(), max, json, out)
        }
        Command::Categories { dir, prefix, max } => {
            let list = Listing::Categories;
            names(&dir, list, prefix.as_deref(), max, json, out)
        }
        Command::Types { dir, prefix, max } => {
            let list = Listing::Types;
            names(&dir, list, prefix.as_deref(), max, json, out)
        }
        Command::Read {
            dir,
            stream,
            from,
            backward,
            max,
        } => {
            let store = open_read(&dir)?;
            let max = max.unwrap_or(usize::MAX);
            let events = if backward {
                store.read_stream_backward(&stream, from.unwrap_or(u64::MAX), max)?
            } else {
                store.read_stream_forward(&stream, from.unwrap_or(0), max)?
            };
            let n = print_events(events, json, out)?;
            if n == 0 && store.stream_version(&stream)?.is_none() {
                return Err(Failure::Other(format!("stream `{stream}` has no events")));
            }
            Ok(())
        }
        Command::All {
            dir,
            from,
            backward,
            max,
        } => {
            let store = open_read(&dir)?;
            let max = max.unwrap_or(usize::MAX);
            let events = if backward {
                store.read_all_backward(from.map_or(Position::END, Position), max)?
            } else {
                store.read_all_forward(from.map_or(Position::START, Position), max)?
            };
            print_events(events, json, out).map(drop)
        }
        Command::Category {
            dir,
            name,
            from,
            max,
        } => {
            let store = open_read(&dir)?;
            let events = store.read_category(&name, from, max.unwrap_or(usize::MAX))?;
            let n = print_events(events, json, out)?;
            if n == 0 && store.category_len(&name)? == 0 {
                return Err(Failure::Other(format!("category `{name}` has no events")));
            }
            Ok(())
        }
        Command::Type {
            dir,
            name,
            from,
            max,
        } => {
            let store = open_read(&dir)?;
            let events = store.read_event_type(&name, from, max.unwrap_or(usize::MAX))?;
            let n = print_events(events, json, out)?;
            if n == 0 && store.event_type_len(&name)? == 0 {
                return Err(Failure::Other(format!("no events of type `{name}`")));
            }
            Ok(())
        }
        Command::Tail { dir, stream, .. } => tail(&dir, stream.as_deref(), json, out),
        Command::Verify { dir } => verify(&dir, json, out),
        Command::Serve { dir, listen } => serve(&dir, &listen, json, out),
        Command::Backup { dir, dest } => backup(&dir, &dest, json, out),
        Command::Append {
            dir,
            stream,
            expected,
            event_type,
            data,
            metadata,
            id,
            create,
        } => {
            let data = payload(&data)?;
            let mut event = EventData::new(event_type, data);
            if let Some(m) = metadata {
                event = event.with_metadata(payload(&m)?);
            }
            if let Some(id) = id {
                event = event.with_id(id);
            }
            let id = event.id();
            // Store::open would make a new store in a mistyped path: only when asked to.
            if !create {
                eventjournal::verify::inventory(&dir)?;
            }
            let store = Store::open(&dir, Options::default())?;
            let result = store.append(&stream, expected, [event]);
            store.close()?;
            let r = result?;
            let (number, position) = (r.version.unwrap_or(0), r.position.unwrap_or_default());
            if json {
                let v = json!({"stream": stream, "event_number": number,
                               "position": position.0, "id": id.to_string()});
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "appended event {number} of `{stream}` at position {position}"
                )?;
            }
            Ok(())
        }
    }
}

/// Opens the store in `dir` for writing; an error if it holds none (rather than making one in
/// a mistyped path).
fn open_write(dir: &Path) -> Result<Store, Failure> {
    eventjournal::verify::inventory(dir)?;
    Ok(Store::open(dir, Options::default())?)
}

fn end_stream(
    dir: &Path,
    stream: &str,
    expected: ExpectedVersion,
    tombstone: bool,
    json: bool,
    out: &mut dyn Write,
) -> Outcome {
    let store = open_write(dir)?;
    let result = if tombstone {
        store.tombstone_stream(stream, expected)
    } else {
        store.delete_stream(stream, expected)
    };
    store.close()?;
    result?;
    let what = if tombstone { "tombstoned" } else { "deleted" };
    if json {
        writeln!(out, "{}", json!({ "stream": stream, what: true }))?;
    } else {
        writeln!(out, "{what} `{stream}`")?;
    }
    Ok(())
}

fn metadata(
    dir: &Path,
    stream: &str,
    set: Option<&str>,
    expected: ExpectedVersion,
    json: bool,
    out: &mut dyn Write,
) -> Outcome {
    let Some(set) = set else {
        let store = open_read(dir)?;
        let current = store.stream_metadata(stream)?;
        return match current {
            None if json => Ok(writeln!(
                out,
                "{}",
                json!({ "stream": stream, "version": null, "metadata": null })
            )?),
            None => Ok(writeln!(out, "`{stream}` has no metadata")?),
            Some((version, md)) => {
                let body = serde_json::to_value(&md)
                    .map_err(|e| Failure::Other(format!("encoding the metadata: {e}")))?;
                if json {
                    let v = json!({ "stream": stream, "version": version, "metadata": body });
                    writeln!(out, "{v}")?;
                } else {
                    writeln!(out, "metadata of `{stream}` (version {version}): {body}")?;
                }
                Ok(())
            }
        };
    };
    let bytes = payload(set)?;
    let md: eventjournal::StreamMetadata = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::Other(format!("--set is not stream metadata JSON: {e}")))?;
    let store = open_write(dir)?;
    let result = store.set_stream_metadata(stream, expected, md);
    store.close()?;
    let version = result?.version.unwrap_or(0);
    if json {
        writeln!(out, "{}", json!({ "stream": stream, "version": version }))?;
    } else {
        writeln!(out, "set the metadata of `{stream}` (version {version})")?;
    }
    Ok(())
}

fn compact(dir: &Path, seal: bool, json: bool, out: &mut dyn Write) -> Outcome {
    let store = open_write(dir)?;
    let spinner = spinner("compacting".into());
    let result = (|| {
        if seal {
            store.seal()?;
        }
        store.compact()
    })();
    spinner.finish_and_clear();
    store.close()?;
    let r = result?;
    let freed = r.disk_bytes_before.saturating_sub(r.disk_bytes_after);
    if json {
        let v = json!({
            "segments_rewritten": r.segments_rewritten,
            "events_removed": r.events_removed,
            "bytes_removed": r.bytes_removed,
            "disk_bytes_before": r.disk_bytes_before,
            "disk_bytes_after": r.disk_bytes_after,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "rewrote {} segments: removed {} events ({} bytes), disk {} -> {} bytes ({} freed)",
            r.segments_rewritten,
            r.events_removed,
            r.bytes_removed,
            r.disk_bytes_before,
            r.disk_bytes_after,
            freed
        )?;
    }
    Ok(())
}

/// Opens the store in `dir` for one-shot reads: read-only, not following a writer.
fn open_read(dir: &Path) -> Result<Store, Failure> {
    let spinner = spinner(format!("opening {}", dir.display()));
    let store = Store::open_read_only(dir, Options::default().follow(None));
    spinner.finish_and_clear();
    Ok(store?)
}

fn info(dir: &Path, json: bool, out: &mut dyn Write) -> Outcome {
    let inv = eventjournal::verify::inventory(dir)?;
    let store = open_read(dir)?;
    let count = spinner("counting events".into());
    let mut events = 0u64;
    store.replay_all(Position::START, |_| {
        events += 1;
        if events.is_multiple_of(65_536) {
            count.set_message(format!("counting events: {events}"));
        }
        std::ops::ControlFlow::Continue(())
    })?;
    count.set_message("counting streams");
    let streams = Listing::Streams.count(&store)?;
    let categories = Listing::Categories.count(&store)?;
    let types = Listing::Types.count(&store)?;
    count.finish_and_clear();
    let index = store.index_info();
    // This open's own counters: a read-only open appends nothing, but shows what it replayed.
    let stats = store.stats();
    let head = store.head();
    if json {
        let files = |list: &[(PathBuf, u64)]| -> Vec<Value> {
            list.iter()
                .map(|(p, len)| json!({"file": p.display().to_string(), "bytes": len}))
                .collect()
        };
        let segments: Vec<Value> = inv
            .segments
            .iter()
            .map(|(p, base, len)| {
                json!({"file": p.display().to_string(), "base": base, "bytes": len})
            })
            .collect();
        let v = json!({
            "dir": dir.display().to_string(),
            "format_version": inv.format_version,
            "segments": segments,
            "index_files": files(&inv.index_files),
            "id_tables": files(&inv.id_tables),
            "bytes": inv.total_bytes(),
            "events": events,
            "streams": streams,
            "categories": categories,
            "event_types": types,
            "head": head.0,
            "index": {"loaded_keys": index.loaded_keys, "index_files": index.index_files},
            "stats": {
                "appends": stats.appends,
                "events_appended": stats.events_appended,
                "bytes_appended": stats.bytes_appended,
                "groups": stats.groups,
                "largest_group": stats.largest_group,
                "syncs": stats.syncs,
                "events_replayed": stats.events_replayed,
            },
        });
        writeln!(out, "{v}")?;
        return Ok(());
    }
    writeln!(out, "store           {}", dir.display())?;
    writeln!(out, "format version  {}", inv.format_version)?;
    writeln!(
        out,
        "files           {} on disk",
        human_bytes(inv.total_bytes())
    )?;
    writeln!(out, "segments        {}", inv.segments.len())?;
    for (path, base, len) in &inv.segments {
        writeln!(
            out,
            "  {}  {:>10}  base {base}",
            file_name(path),
            human_bytes(*len)
        )?;
    }
    for (what, list) in [
        ("index files", &inv.index_files),
        ("id tables", &inv.id_tables),
    ] {
        writeln!(out, "{what:<16}{}", list.len())?;
        for (path, len) in list {
            writeln!(out, "  {}  {:>10}", file_name(path), human_bytes(*len))?;
        }
    }
    writeln!(out, "events          {events}")?;
    writeln!(out, "streams         {streams}")?;
    writeln!(out, "categories      {categories}")?;
    writeln!(out, "event types     {types}")?;
    writeln!(out, "head            position {head}")?;
    writeln!(
        out,
        "index memory    {} keys loaded, {} index files mapped",
        index.loaded_keys, index.index_files
    )?;
    writeln!(
        out,
        "this open       {} events replayed, {} appends, {} syncs",
        stats.events_replayed, stats.appends, stats.syncs
    )?;
    Ok(())
}

/// What a name listing lists.
#[derive(Debug, Clone, Copy)]
enum Listing {
    Streams,
    Categories,
    Types,
}

impl Listing {
    /// The JSON key of a name.
    fn key(self) -> &'static str {
        match self {
            Listing::Streams => "stream",
            Listing::Categories => "category",
            Listing::Types => "type",
        }
    }

    /// Up to `max` names after `after`, in the store's listing order.
    fn page(
        self,
        store: &Store,
        after: Option<&str>,
        max: usize,
    ) -> eventjournal::Result<Vec<String>> {
        match self {
            Listing::Streams => store.list_streams(after, max),
            Listing::Categories => store.list_categories(after, max),
            Listing::Types => store.list_event_types(after, max),
        }
    }

    /// How many events `name` has.
    fn events(self, store: &Store, name: &str) -> eventjournal::Result<u64> {
        match self {
            Listing::Streams => Ok(store.stream_version(name)?.map_or(0, |v| v + 1)),
            Listing::Categories => store.category_len(name),
            Listing::Types => store.event_type_len(name),
        }
    }

    /// How many names there are.
    fn count(self, store: &Store) -> eventjournal::Result<u64> {
        let mut n = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self.page(store, after.as_deref(), 4096)?;
            let Some(last) = page.last() else {
                return Ok(n);
            };
            n += page.len() as u64;
            after = Some(last.clone());
        }
    }
}

/// Prints names with their event counts, a page at a time: memory does not grow with their
/// number.
fn names(
    dir: &Path,
    list: Listing,
    prefix: Option<&str>,
    max: Option<usize>,
    json: bool,
    out: &mut dyn Write,
) -> Outcome {
    let store = open_read(dir)?;
    let max = max.unwrap_or(usize::MAX);
    let mut after: Option<String> = None;
    let mut printed = 0usize;
    'pages: loop {
        let page = list.page(&store, after.as_deref(), 1024)?;
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        for name in page {
            if printed >= max {
                break 'pages;
            }
            if prefix.is_some_and(|p| !name.starts_with(p)) {
                continue;
            }
            let events = list.events(&store, &name)?;
            if json {
                writeln!(out, "{}", json!({list.key(): name, "events": events}))?;
            } else {
                writeln!(out, "{name}\t{events}")?;
            }
            printed += 1;
        }
    }
    Ok(())
}

/// Prints each event; returns how many.
fn print_events(
    events: impl Iterator<Item = eventjournal::Result<RecordedEvent>>,
    json: bool,
    out: &mut dyn Write,
) -> Result<u64, Failure> {
    let mut n = 0;
    for e in events {
        print_event(&e?, json, out)?;
        n += 1;
    }
    Ok(n)
}

fn print_event(e: &RecordedEvent, json: bool, out: &mut dyn Write) -> io::Result<()> {
    if json {
        let mut v = json!({
            "stream": e.stream(),
            "event_number": e.event_number(),
            "position": e.position().0,
            "next_position": e.next_position().0,
            "id": e.id().to_string(),
            "type": e.event_type(),
            "timestamp": e.time_utc(),
            "timestamp_micros": e.timestamp_micros(),
        });
        put_payload(&mut v, "data", e.data());
        if e.metadata().is_empty() {
            v["metadata"] = Value::Null;
        } else {
            put_payload(&mut v, "metadata", e.metadata());
        }
        return writeln!(out, "{v}");
    }
    writeln!(
        out,
        "{}@{}  position {}  {}  {}  id {}",
        e.stream(),
        e.event_number(),
        e.position(),
        e.event_type(),
        e.time_utc(),
        e.id()
    )?;
    writeln!(out, "  data: {}", payload_text(e.data()))?;
    if !e.metadata().is_empty() {
        writeln!(out, "  metadata: {}", payload_text(e.metadata()))?;
    }
    Ok(())
}

/// Sets `key` to the payload as JSON if it is JSON, else `<key>_hex` to its hex.
fn put_payload(v: &mut Value, key: &str, bytes: &[u8]) {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(parsed) => v[key] = parsed,
        Err(_) => v[format!("{key}_hex")] = Value::String(hex(bytes)),
    }
}

/// A payload for a line of text: JSON as it was written if it is JSON on one line (compacted
/// if it spans lines), else `hex:` and its bytes.
fn payload_text(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(parsed) => match std::str::from_utf8(bytes) {
            Ok(text) if !text.trim().contains('\n') => text.trim().to_string(),
            _ => parsed.to_string(),
        },
        Err(_) => format!("hex:{}", hex(bytes)),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn tail(dir: &Path, stream: Option<&str>, json: bool, out: &mut dyn Write) -> Outcome {
    // Following: the store shows what a writer in another process commits, every millisecond.
    let store = Store::open_read_only(dir, Options::default())?;
    let mut sub: Subscription = match stream {
        Some(s) => store.subscribe_to_stream(s, StreamFrom::End)?,
        None => store.subscribe_to_all(AllFrom::End, None)?,
    };
    loop {
        match sub.recv_timeout(Duration::from_secs(1))? {
            Some(SubscriptionItem::Event(e)) => {
                print_event(&e, json, out)?;
                // Each event is shown as it comes, not when a buffer fills.
                out.flush()?;
            }
            Some(SubscriptionItem::Checkpoint(_)) => {}
            // Nothing for a while: a reader that went away is noticed by the next write only.
            None => out.flush()?,
        }
    }
}

fn serve(dir: &Path, listen: &str, json: bool, out: &mut dyn Write) -> Outcome {
    // Following, as `tail` does: the view shows what a writer in another process commits.
    let store = std::sync::Arc::new(Store::open_read_only(dir, Options::default())?);
    let server = eventjournal::web::serve(store, listen)?;
    let url = format!("http://{}/", server.addr());
    if json {
        writeln!(
            out,
            "{}",
            json!({"listening": server.addr().to_string(), "url": url})
        )?;
    } else {
        writeln!(
            out,
            "serving {} read-only at {url} (interrupt to stop)",
            dir.display()
        )?;
    }
    out.flush()?;
    loop {
        // The server answers on its own threads until the process is interrupted.
        std::thread::park();
    }
}

fn verify(dir: &Path, json: bool, out: &mut dyn Write) -> Outcome {
    let bar = progress_bar("verifying");
    let result = eventjournal::verify::verify(dir, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(Error::Corrupt {
            file,
            offset,
            reason,
        }) => {
            if json {
                let v = json!({"ok": false, "file": file.display().to_string(),
                               "offset": offset, "reason": reason});
                writeln!(out, "{v}")?;
            }
            return Err(Failure::Store(Error::Corrupt {
                file,
                offset,
                reason,
            }));
        }
        Err(e) => return Err(e.into()),
    };
    let tail = report
        .unfinished_tail
        .as_ref()
        .map(|(f, at)| (f.display().to_string(), *at));
    if json {
        let skipped: Vec<Value> = report
            .skipped
            .iter()
            .map(|(f, why)| json!({"file": f.display().to_string(), "reason": why}))
            .collect();
        let v = json!({
            "ok": true,
            "format_version": report.format_version,
            "segments": report.segments.len(),
            "events": report.events,
            "index_files": report.index_files,
            "index_offsets": report.index_offsets,
            "id_tables": report.id_tables,
            "id_entries": report.id_entries,
            "unfinished_tail": tail.map(|(f, at)| json!({"file": f, "offset": at})),
            "skipped": skipped,
        });
        writeln!(out, "{v}")?;
        return Ok(());
    }
    writeln!(
        out,
        "ok: {} segments, {} events; {} index files, {} offsets checked against their records; \
         {} id tables, {} entries",
        report.segments.len(),
        report.events,
        report.index_files,
        report.index_offsets,
        report.id_tables,
        report.id_entries
    )?;
    if let Some((file, at)) = tail {
        writeln!(
            out,
            "note: {file} ends at offset {at} with an unfinished batch (a crash's torn write, \
             or a batch being written): not damage, nothing acknowledged is there"
        )?;
    }
    for (file, why) in &report.skipped {
        writeln!(out, "skipped: {}: {why}", file.display())?;
    }
    Ok(())
}

fn backup(dir: &Path, dest: &Path, json: bool, out: &mut dyn Write) -> Outcome {
    let store = open_read(dir)?;
    let spinner = spinner(format!("copying into {}", dest.display()));
    let result = store.backup(dest);
    spinner.finish_and_clear();
    let b = result?;
    if json {
        let v = json!({
            "dest": dest.display().to_string(),
            "head": b.head.0,
            "segments_copied": b.segments_copied,
            "segments_kept": b.segments_kept,
            "bytes_copied": b.bytes_copied,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "backed up {} into {}: every event before position {}; {} segments copied, {} \
             already there kept, {} written",
            dir.display(),
            dest.display(),
            b.head,
            b.segments_copied,
            b.segments_kept,
            human_bytes(b.bytes_copied)
        )?;
    }
    Ok(())
}

/// `--data`: `@FILE`, `@-` (standard input), or the bytes of the argument itself.
fn payload(arg: &str) -> Result<Vec<u8>, Failure> {
    match arg.strip_prefix('@') {
        Some("-") => {
            let mut buf = Vec::new();
            io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::Other(format!("reading standard input: {e}")))?;
            Ok(buf)
        }
        Some(file) => {
            std::fs::read(file).map_err(|e| Failure::Other(format!("reading {file}: {e}")))
        }
        None => Ok(arg.as_bytes().to_vec()),
    }
}

fn parse_expected(s: &str) -> Result<ExpectedVersion, String> {
    match s {
        "any" => Ok(ExpectedVersion::Any),
        "no-stream" => Ok(ExpectedVersion::NoStream),
        "exists" => Ok(ExpectedVersion::StreamExists),
        n => n
            .parse()
            .map(ExpectedVersion::Exact)
            .map_err(|_| format!("`{n}` is not any, no-stream, exists, or an event number")),
    }
}

fn parse_id(s: &str) -> Result<EventId, String> {
    uuid::Uuid::parse_str(s)
        .map(EventId::from)
        .map_err(|e| format!("not a UUID: {e}"))
}

/// A progress bar on standard error, drawn only when it is a terminal.
fn progress_bar(what: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// A spinner on standard error for work of unknown length, drawn only when it is a terminal;
/// its callers clear it when the work is done, so that it never mixes with the output.
fn spinner(what: String) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.set_message(what);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    )
}
