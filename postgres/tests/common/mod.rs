//! The database the PostgreSQL tests run against, and a store of their own in it.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use eventjournal_postgres::{PgOptions, PgStore};

/// The server's URL from `EVJ_PG_URL`. Without it a test is skipped with a note on stderr,
/// except under CI (`CI=true`), where the server is part of the run and its absence a failure.
pub fn pg_url() -> Option<String> {
    match std::env::var("EVJ_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "EVJ_PG_URL is not set: under CI the PostgreSQL tests must run (.ci/run starts \
                 a server and sets it)"
            );
            // Straight to stderr: the test harness would hide a printed line of a passing test.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "note: EVJ_PG_URL is not set; PostgreSQL test skipped"
            );
            None
        }
    }
}

/// A store in a schema of its own, dropped with it.
pub struct TestPg {
    pub store: PgStore,
    pub url: String,
    pub schema: String,
}

impl Drop for TestPg {
    fn drop(&mut self) {
        let _ = PgStore::drop_schema(&self.url, &self.schema);
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh store named after `name` (and this process, so that runs can overlap), or `None`
/// when no server is given.
pub fn pg_store(name: &str) -> Option<TestPg> {
    pg_store_with(name, PgOptions::default())
}

/// [`pg_store`] with `options` (their schema is replaced).
pub fn pg_store_with(name: &str, options: PgOptions) -> Option<TestPg> {
    let url = pg_url()?;
    let schema = format!(
        "t_{}_{}_{}",
        name.to_ascii_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(24)
            .collect::<String>(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    PgStore::drop_schema(&url, &schema).unwrap();
    let store = PgStore::open(&url, options.schema(schema.clone())).unwrap();
    Some(TestPg { store, url, schema })
}
