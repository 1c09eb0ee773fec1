//! SQLite through rusqlite: one file in WAL mode (readers never wait for the recorder),
//! `synchronous = FULL` (a commit the station acknowledged to the broker survives a power
//! cut), a busy timeout for the moments two connections write.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::ToSql;

use super::{Conn, Dialect, V};

pub struct Sqlite {
    c: rusqlite::Connection,
}

impl ToSql for V {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            V::Null => ToSqlOutput::Owned(SqlValue::Null),
            V::I(i) => ToSqlOutput::Owned(SqlValue::Integer(*i)),
            V::F(f) => ToSqlOutput::Owned(SqlValue::Real(*f)),
            V::T(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            V::B(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

impl Sqlite {
    pub fn open(path: &Path) -> anyhow::Result<Sqlite> {
        let c = rusqlite::Connection::open(path)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        c.busy_timeout(Duration::from_secs(10))?;
        c.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .with_context(|| format!("{}: cannot set WAL mode", path.display()))?;
        Ok(Sqlite { c })
    }
}

impl Conn for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn batch(&mut self, sql: &str) -> anyhow::Result<()> {
        Ok(self.c.execute_batch(sql)?)
    }

    fn exec(&mut self, sql: &str, params: &[V]) -> anyhow::Result<u64> {
        let mut st = self.c.prepare_cached(sql)?;
        Ok(st.execute(rusqlite::params_from_iter(params.iter()))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[V]) -> anyhow::Result<Vec<Vec<V>>> {
        let mut st = self.c.prepare_cached(sql)?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(match r.get_ref(i)? {
                    ValueRef::Null => V::Null,
                    ValueRef::Integer(i) => V::I(i),
                    ValueRef::Real(f) => V::F(f),
                    ValueRef::Text(t) => V::T(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => V::B(b.to_vec()),
                });
            }
            out.push(row);
        }
        Ok(out)
    }
}
