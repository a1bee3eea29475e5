//! Moving a store between the embedded store and PostgreSQL.
