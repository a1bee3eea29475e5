//! The `eventjournal` command line: look inside a store.

fn main() {}
