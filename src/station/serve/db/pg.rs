//! PostgreSQL through the blocking `postgres` client (it runs its own small runtime, so it
//! lives on the store's threads, never inside tokio's). The shared SQL's `?N` placeholders
//! become `$N`; statements are prepared once per connection and kept.

use std::collections::HashMap;

use anyhow::Context;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::{Conn, Dialect, V};

pub struct Pg {
    c: Client,
    prepared: HashMap<String, Statement>,
}

/// A postgres URL with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "postgres://***".into();
    };
    let (auth, tail) = match rest.split_once('@') {
        Some((a, t)) => (Some(a), t),
        None => (None, rest),
    };
    match auth {
        Some(a) => {
            let user = a.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{tail}")
        }
        None => url.to_string(),
    }
}

/// `?1` → `$1` (the shared SQL has no `?` inside string literals).
fn placeholders(sql: &str) -> String {
    sql.replace('?', "$")
}

impl Pg {
    pub fn open(url: &str) -> anyhow::Result<Pg> {
        let c = Client::connect(url, NoTls)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("cannot connect to {}", redact(url)))?;
        Ok(Pg {
            c,
            prepared: HashMap::new(),
        })
    }

    fn statement(&mut self, sql: &str) -> anyhow::Result<Statement> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self
            .c
            .prepare(&placeholders(sql))
            .with_context(|| format!("cannot prepare {sql}"))?;
        self.prepared.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

/// Values for a prepared statement; a NULL takes the type the statement expects there
/// (the client checks types even for NULL).
fn bind(params: &[V], types: &[Type]) -> Vec<Box<dyn ToSql + Sync>> {
    params
        .iter()
        .zip(types)
        .map(|(v, t)| -> Box<dyn ToSql + Sync> {
            match v {
                V::Null if *t == Type::INT8 => Box::new(Option::<i64>::None),
                V::Null if *t == Type::FLOAT8 => Box::new(Option::<f64>::None),
                V::Null if *t == Type::BYTEA => Box::new(Option::<Vec<u8>>::None),
                V::Null => Box::new(Option::<String>::None),
                V::I(i) if *t == Type::FLOAT8 => Box::new(*i as f64),
                V::I(i) => Box::new(*i),
                V::F(f) => Box::new(*f),
                V::T(s) => Box::new(s.clone()),
                V::B(b) => Box::new(b.clone()),
            }
        })
        .collect()
}

impl Conn for Pg {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn batch(&mut self, sql: &str) -> anyhow::Result<()> {
        Ok(self.c.batch_execute(sql)?)
    }

    fn exec(&mut self, sql: &str, params: &[V]) -> anyhow::Result<u64> {
        let st = self.statement(sql)?;
        let owned = bind(params, st.params());
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref()).collect();
        Ok(self.c.execute(&st, &refs)?)
    }

    fn query(&mut self, sql: &str, params: &[V]) -> anyhow::Result<Vec<Vec<V>>> {
        let st = self.statement(sql)?;
        let owned = bind(params, st.params());
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref()).collect();
        let rows = self.c.query(&st, &refs)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut row = Vec::with_capacity(r.len());
            for (i, col) in r.columns().iter().enumerate() {
                let t = col.type_();
                row.push(if *t == Type::INT8 {
                    r.get::<_, Option<i64>>(i).map_or(V::Null, V::I)
                } else if *t == Type::INT4 {
                    r.get::<_, Option<i32>>(i)
                        .map_or(V::Null, |v| V::I(v.into()))
                } else if *t == Type::INT2 {
                    r.get::<_, Option<i16>>(i)
                        .map_or(V::Null, |v| V::I(v.into()))
                } else if *t == Type::FLOAT8 {
                    r.get::<_, Option<f64>>(i).map_or(V::Null, V::F)
                } else if *t == Type::BOOL {
                    r.get::<_, Option<bool>>(i)
                        .map_or(V::Null, |v| V::I(v.into()))
                } else if *t == Type::BYTEA {
                    r.get::<_, Option<Vec<u8>>>(i).map_or(V::Null, V::B)
                } else {
                    r.get::<_, Option<String>>(i).map_or(V::Null, V::T)
                });
            }
            out.push(row);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_and_placeholders_rewritten() {
        assert_eq!(
            redact("postgres://camgw:s3cret@127.0.0.1:5432/station"),
            "postgres://camgw:***@127.0.0.1:5432/station"
        );
        assert_eq!(
            redact("postgres://127.0.0.1/station"),
            "postgres://127.0.0.1/station"
        );
        assert_eq!(placeholders("a = ?1 AND b = ?2"), "a = $1 AND b = $2");
    }
}
