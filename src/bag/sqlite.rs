//! Reading rosbag2 sqlite3 (`.db3`) storage files, still the default on many Humble robots.
//!
//! Tables: `topics(id, name, type, serialization_format, offered_qos_profiles[, ...])`,
//! `messages(id, topic_id, timestamp, data)`, and on newer bags
//! `message_definitions(topic_type, encoding, encoded_message_definition, ...)`.
//! Messages stream from a query run on its own read-only connection in a thread, in
//! (timestamp, id) order, through a bounded channel: memory stays flat for any bag size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rusqlite::{Connection, OpenFlags};

use super::BagError;

/// A topic row.
#[derive(Debug, Clone)]
pub struct SqliteTopic {
    /// Row id (messages refer to it).
    pub id: i64,
    /// Topic name.
    pub name: String,
    /// ROS type name.
    pub type_name: String,
    /// `offered_qos_profiles` YAML ("" on old bags).
    pub qos_yaml: String,
    /// `.msg` definition from `message_definitions`, when the bag has one.
    pub definition: Option<String>,
}

/// One open `.db3` file.
pub struct SqliteFile {
    path: PathBuf,
    conn: Connection,
}

fn db_err(path: &Path, e: rusqlite::Error) -> BagError {
    BagError::Sqlite {
        file: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn open_ro(path: &Path) -> Result<Connection, BagError> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| db_err(path, e))
}

fn has_table(conn: &Connection, name: &str) -> bool {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .unwrap_or(0)
        > 0
}

fn has_column(conn: &Connection, table: &str, column: &str) -> bool {
    let Ok(mut stmt) = conn.prepare(&format!("PRAGMA table_info({table})")) else {
        return false;
    };
    let Ok(rows) = stmt.query_map([], |r| r.get::<_, String>(1)) else {
        return false;
    };
    let mut found = false;
    for name in rows.flatten() {
        found |= name == column;
    }
    found
}

impl SqliteFile {
    /// Opens `path` read-only and checks it is a rosbag2 database.
    pub fn open(path: &Path) -> Result<Self, BagError> {
        let conn = open_ro(path)?;
        if !has_table(&conn, "topics") || !has_table(&conn, "messages") {
            return Err(BagError::NotABag(path.to_path_buf()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            conn,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The topics table.
    pub fn topics(&self) -> Result<Vec<SqliteTopic>, BagError> {
        let qos_col = if has_column(&self.conn, "topics", "offered_qos_profiles") {
            "offered_qos_profiles"
        } else {
            "''"
        };
        let mut defs: HashMap<String, String> = HashMap::new();
        if has_table(&self.conn, "message_definitions") {
            let mut stmt = self
                .conn
                .prepare("SELECT topic_type, encoding, encoded_message_definition FROM message_definitions")
                .map_err(|e| db_err(&self.path, e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(|e| db_err(&self.path, e))?;
            for (ty, enc, def) in rows.flatten() {
                if enc == "ros2msg" && !def.is_empty() {
                    defs.insert(ty, def);
                }
            }
        }
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT id, name, type, {qos_col} FROM topics ORDER BY id"
            ))
            .map_err(|e| db_err(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(SqliteTopic {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    type_name: r.get(2)?,
                    qos_yaml: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    definition: None,
                })
            })
            .map_err(|e| db_err(&self.path, e))?;
        let mut topics: Vec<SqliteTopic> = rows
            .collect::<Result<_, _>>()
            .map_err(|e| db_err(&self.path, e))?;
        for t in &mut topics {
            t.definition = defs.get(&t.type_name).cloned();
        }
        Ok(topics)
    }

    /// Topic row ids with their names.
    pub fn topic_ids(&self) -> Vec<(i64, String)> {
        self.topics()
            .map(|ts| ts.into_iter().map(|t| (t.id, t.name)).collect())
            .unwrap_or_default()
    }

    /// Streams `(topic index, timestamp, data)` in time order within `[start, end)`;
    /// `topics` maps row ids to the reader's topic indexes.
    pub fn rows(
        &self,
        topics: HashMap<i64, usize>,
        start: Option<u64>,
        end: Option<u64>,
    ) -> Rows<'_> {
        let (tx, rx) = mpsc::sync_channel(256);
        let path = self.path.clone();
        let start = start.map_or(i64::MIN, |s| s.min(i64::MAX as u64) as i64);
        let end = end.map_or(i64::MAX, |e| e.min(i64::MAX as u64) as i64);
        std::thread::spawn(move || {
            let run = || -> Result<(), BagError> {
                let conn = open_ro(&path)?;
                let mut stmt = conn
                    .prepare("SELECT topic_id, timestamp, data FROM messages WHERE timestamp >= ?1 AND timestamp < ?2 ORDER BY timestamp, id")
                    .map_err(|e| db_err(&path, e))?;
                let mut rows = stmt.query([start, end]).map_err(|e| db_err(&path, e))?;
                while let Some(row) = rows.next().map_err(|e| db_err(&path, e))? {
                    let topic: i64 = row.get(0).map_err(|e| db_err(&path, e))?;
                    let Some(&t) = topics.get(&topic) else {
                        continue;
                    };
                    let time: i64 = row.get(1).map_err(|e| db_err(&path, e))?;
                    let data: Vec<u8> = row.get(2).map_err(|e| db_err(&path, e))?;
                    if tx.send(Ok((t, time.max(0) as u64, data))).is_err() {
                        return Ok(()); // the reader stopped early
                    }
                }
                Ok(())
            };
            if let Err(e) = run() {
                let _ = tx.send(Err(e));
            }
        });
        Rows {
            rx,
            _file: std::marker::PhantomData,
        }
    }
}

/// `(topic index, timestamp, data)` of one message row.
pub type Row = (usize, u64, Vec<u8>);

/// Streaming message rows of one `.db3` file.
pub struct Rows<'a> {
    rx: mpsc::Receiver<Result<Row, BagError>>,
    _file: std::marker::PhantomData<&'a SqliteFile>,
}

impl Iterator for Rows<'_> {
    type Item = Result<Row, BagError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.recv().ok()
    }
}
