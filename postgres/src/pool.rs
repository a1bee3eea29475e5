//! A small connection pool: a stack of idle connections, each with its prepared statements.
//!
//! The store's calls are short and synchronous, so a mutex-guarded stack and a condition
//! variable are all the pooling needed; a connection that broke is dropped on return and a new one
//! is opened in its place on the next demand.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

use parking_lot::{Condvar, Mutex};
use postgres::{Client, Config, NoTls, Statement};

use crate::pg_error;
use eventjournal::Result;

/// A connection and the statements prepared on it, by their text.
pub(crate) struct Conn {
    pub(crate) client: Client,
    statements: HashMap<&'static str, Statement>,
}

impl Conn {
    /// Opens a connection.
    pub(crate) fn open(config: &Config) -> Result<Conn> {
        Ok(Conn {
            client: config.connect(NoTls).map_err(pg_error)?,
            statements: HashMap::new(),
        })
    }

    /// `sql` prepared on this connection, once: each later use saves the round trip of a parse.
    pub(crate) fn prepare(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).map_err(pg_error)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }
}

struct State {
    idle: Vec<Conn>,
    /// Connections open, idle or lent.
    open: usize,
}

/// At most `size` connections to one database, opened as demand grows.
pub(crate) struct Pool {
    config: Config,
    size: usize,
    state: Mutex<State>,
    returned: Condvar,
}

impl Pool {
    pub(crate) fn new(config: Config, size: usize) -> Pool {
        Pool {
            config,
            size: size.max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        }
    }

    /// The connection settings, for connections kept outside the pool (a listener).
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// An idle connection, a new one while fewer than `size` are open, or the next returned.
    pub(crate) fn get(&self) -> Result<Pooled<'_>> {
        let mut state = self.state.lock();
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(Pooled {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if state.open < self.size {
                state.open += 1;
                drop(state);
                return match Conn::open(&self.config) {
                    Ok(conn) => Ok(Pooled {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        self.state.lock().open -= 1;
                        self.returned.notify_one();
                        Err(e)
                    }
                };
            }
            self.returned.wait(&mut state);
        }
    }
}

/// A connection lent by the pool, given back when dropped.
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<Conn>,
}

impl Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.state.lock();
        match self.conn.take() {
            // A connection the server closed, or one left inside a transaction by a panic, is not
            // lent again.
            Some(conn) if !conn.client.is_closed() && !std::thread::panicking() => {
                state.idle.push(conn)
            }
            _ => state.open -= 1,
        }
        drop(state);
        self.pool.returned.notify_one();
    }
}
