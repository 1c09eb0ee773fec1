//! The two databases the station records into, behind one small [`Conn`] trait: SQLite
//! (one file, WAL; [`sqlite`]) and PostgreSQL (a `postgres://` URL; [`pg`]). Every query the
//! station runs is written once, in [`super::store`], over [`Conn`]: SQL with `?N`
//! placeholders and the column types of [`Dialect`]. Connections are blocking; they live on
//! the store's own threads, never on an async worker.

pub mod pg;
pub mod sqlite;

use std::path::PathBuf;

use anyhow::bail;

/// A value going into or coming out of a query.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    Null,
    I(i64),
    F(f64),
    T(String),
    B(Vec<u8>),
}

impl V {
    pub fn i(&self) -> Option<i64> {
        match self {
            V::I(i) => Some(*i),
            _ => None,
        }
    }
    pub fn f(&self) -> Option<f64> {
        match self {
            V::F(f) => Some(*f),
            V::I(i) => Some(*i as f64),
            _ => None,
        }
    }
    pub fn t(&self) -> Option<&str> {
        match self {
            V::T(s) => Some(s),
            _ => None,
        }
    }
    pub fn text(&self) -> String {
        self.t().unwrap_or_default().to_string()
    }
    pub fn opt_text(&self) -> Option<String> {
        self.t().map(String::from)
    }
    pub fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            V::B(b) => Some(b),
            _ => None,
        }
    }
}

impl From<&str> for V {
    fn from(s: &str) -> V {
        V::T(s.to_string())
    }
}
impl From<String> for V {
    fn from(s: String) -> V {
        V::T(s)
    }
}
impl From<&String> for V {
    fn from(s: &String) -> V {
        V::T(s.clone())
    }
}
impl From<i64> for V {
    fn from(i: i64) -> V {
        V::I(i)
    }
}
impl From<bool> for V {
    fn from(b: bool) -> V {
        V::I(b as i64)
    }
}
impl<T: Into<V>> From<Option<T>> for V {
    fn from(o: Option<T>) -> V {
        o.map_or(V::Null, Into::into)
    }
}
impl From<f64> for V {
    fn from(f: f64) -> V {
        V::F(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The schema text with `{int}`, `{real}` and `{blob}` replaced by this dialect's types.
    pub fn ddl(self, sql: &str) -> String {
        let (int, real, blob) = match self {
            Dialect::Sqlite => ("INTEGER", "REAL", "BLOB"),
            Dialect::Postgres => ("BIGINT", "DOUBLE PRECISION", "BYTEA"),
        };
        sql.replace("{int}", int)
            .replace("{real}", real)
            .replace("{blob}", blob)
    }
}

/// One blocking connection.
pub trait Conn: Send {
    fn dialect(&self) -> Dialect;
    /// Several statements, no parameters (schema).
    fn batch(&mut self, sql: &str) -> anyhow::Result<()>;
    /// One statement; the number of rows it changed.
    fn exec(&mut self, sql: &str, params: &[V]) -> anyhow::Result<u64>;
    fn query(&mut self, sql: &str, params: &[V]) -> anyhow::Result<Vec<Vec<V>>>;
    fn begin(&mut self) -> anyhow::Result<()> {
        self.batch("BEGIN")
    }
    fn commit(&mut self) -> anyhow::Result<()> {
        self.batch("COMMIT")
    }
    fn rollback(&mut self) -> anyhow::Result<()> {
        self.batch("ROLLBACK")
    }
}

/// Where the station's records live, from `--db`.
#[derive(Debug, Clone)]
pub enum Target {
    /// A SQLite file; stills go in `{path}.stills/` beside it.
    Sqlite(PathBuf),
    /// A PostgreSQL URL; stills go in the database.
    Postgres(String),
}

impl Target {
    pub fn parse(db: &str) -> anyhow::Result<Target> {
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            return Ok(Target::Postgres(db.to_string()));
        }
        if db.contains("://") {
            bail!("--db: a file path, or a postgres:// URL");
        }
        if db.is_empty() {
            bail!("--db: empty path");
        }
        Ok(Target::Sqlite(PathBuf::from(db)))
    }

    pub fn open(&self) -> anyhow::Result<Box<dyn Conn>> {
        Ok(match self {
            Target::Sqlite(p) => Box::new(sqlite::Sqlite::open(p)?),
            Target::Postgres(url) => Box::new(pg::Pg::open(url)?),
        })
    }

    /// The folder of still files (SQLite only).
    pub fn stills_dir(&self) -> Option<PathBuf> {
        match self {
            Target::Sqlite(p) => {
                let mut s = p.as_os_str().to_owned();
                s.push(".stills");
                Some(s.into())
            }
            Target::Postgres(_) => None,
        }
    }

    /// For logs and errors: a PostgreSQL URL without its password.
    pub fn display(&self) -> String {
        match self {
            Target::Sqlite(p) => p.display().to_string(),
            Target::Postgres(url) => pg::redact(url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert!(matches!(
            Target::parse("/var/lib/camgw-station/station.db").unwrap(),
            Target::Sqlite(_)
        ));
        let t = Target::parse("postgres://u:secret@127.0.0.1:5432/db").unwrap();
        assert!(matches!(t, Target::Postgres(_)));
        assert!(!t.display().contains("secret"));
        assert!(Target::parse("mysql://x").is_err());
        assert_eq!(
            Target::parse("/x/s.db").unwrap().stills_dir().unwrap(),
            PathBuf::from("/x/s.db.stills")
        );
    }
}
