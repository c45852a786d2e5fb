//! Where committed documents live: the seam between the in-memory store and
//! a database. SQLite (one process, the embedded default) and PostgreSQL
//! (any number of processes sharing one database) implement it.

/// One stored document as a database holds it; `doc: None` is a deletion
/// (in a feed of changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub kind: String,
    pub key: String,
    pub doc: Option<String>,
    pub account: String,
}

/// What other processes committed since a position of the change feed.
#[derive(Debug)]
pub enum Feed {
    /// These changes, in commit order, lead to `position`.
    Changes { rows: Vec<Row>, position: u64 },
    /// The feed no longer reaches back that far: here is everything stored,
    /// as of `position`.
    Everything { rows: Vec<Row>, position: u64 },
}

impl Feed {
    pub fn nothing_since(position: u64) -> Feed {
        Feed::Changes {
            rows: Vec::new(),
            position,
        }
    }
}

/// A database the store commits to. Calls come from one thread at a time
/// (the store's writer lock), so an implementation needs no locking of its
/// own beyond what keeps other processes out.
pub trait Durable: Send {
    /// Every stored document, and the feed position they reflect.
    fn load(&mut self) -> anyhow::Result<(Vec<Row>, u64)>;
    /// Starts a commit: from here until [`Durable::commit`] or
    /// [`Durable::rollback`] no other process commits. Returns what others
    /// committed after `seen`, so the commit is decided on the newest state.
    fn begin(&mut self, seen: u64) -> anyhow::Result<Feed>;
    /// Writes the changes (every row with its owner) and ends the commit;
    /// returns the new feed position.
    fn commit(&mut self, changes: &[Row]) -> anyhow::Result<u64>;
    /// Ends a begun commit with nothing written.
    fn rollback(&mut self);
    /// What others committed after `seen`, outside any commit.
    fn since(&mut self, seen: u64) -> anyhow::Result<Feed>;
    /// Gives every document stored without an account to `account` (see
    /// [`crate::Store::adopt_unowned`]).
    fn adopt_unowned(&mut self, account: &str) -> anyhow::Result<()>;
    /// The messages between processes ([`crate::Store::send`]), when the
    /// database is shared.
    fn messages(&mut self) -> Option<&mut dyn Messages> {
        None
    }
}

/// Messages between processes sharing a database: appended to a topic,
/// read oldest first, removed once handled.
pub trait Messages {
    fn send(&mut self, topic: &str, payloads: &[String]) -> anyhow::Result<()>;
    /// The oldest `max` messages of `topic`, with their ids.
    fn receive(&mut self, topic: &str, max: usize) -> anyhow::Result<Vec<(i64, String)>>;
    fn remove(&mut self, ids: &[i64]) -> anyhow::Result<()>;
}
