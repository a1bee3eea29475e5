//! eventjournal: an embedded, append-only event store.
//!
//! Events live in named streams (`account-42`); each append names the version the caller
//! expects the stream to have, so concurrent writers cannot both extend one stream. Every event
//! also has a place in `$all`, the global commit order. Reads come straight from memory-mapped
//! segment files without copying event bytes.
//!
//! See [`Store`] for the API, `FORMAT.md` for the bytes on disk, and `README.md` for the design.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod append;
mod backup;
mod compaction;
mod disk;
mod error;
#[cfg(feature = "fault-injection")]
#[cfg_attr(docsrs, doc(cfg(feature = "fault-injection")))]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
#[allow(dead_code)]
mod fault;
mod follower;
mod handover;
mod ids;
mod index;
pub mod journal;
mod lifecycle;
mod log;
mod manifest;
mod mapping;
mod options;
mod read;
mod slots;
mod startup;
mod stats;
mod store;
mod subscription;
mod types;
pub mod verify;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod web;

pub use append::{MAX_EVENT_TYPE_LEN, MAX_STREAM_NAME_LEN, SYSTEM_PREFIX};
pub use backup::Backup;
pub use compaction::CompactionReport;
pub use error::{Error, Result};
pub use lifecycle::{metadata_stream, StreamMetadata, METADATA_EVENT_TYPE, METADATA_STREAM_PREFIX};
pub use options::{Durability, Options, Recovery, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
pub use read::{AllEvents, StreamEvents};
pub use stats::Stats;
pub use store::{IndexInfo, Store};
#[cfg(feature = "async")]
#[cfg_attr(docsrs, doc(cfg(feature = "async")))]
pub use subscription::SubscriptionStream;
pub use subscription::{AllFrom, Filter, StreamFrom, Subscription, SubscriptionItem};
pub use types::{
    category_of, AppendResult, EventData, EventId, EventParts, EventRef, ExpectedVersion, Payload,
    Position, RecordedEvent, StreamWrite,
};

/// The README's Rust examples, compiled and run by `cargo test --doc` so that they cannot drift
/// from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
