//! The SQLite store's schema: table names, migrations and the check of a table's columns.

use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::bans::{backfill, index_name};
use crate::error::ConfigError;

/// The longest table name accepted.
const MAX_TABLE_LEN: usize = 64;

/// The table that lists floodgate's tables in a file, created by migration 1.
const REGISTRY: &str = "floodgate_tables";

/// Schema migrations, applied in order and never edited once shipped: migration `n` (from 1)
/// brings a file from `PRAGMA user_version = n - 1` to `n`. `file` runs once per file;
/// `table` runs for each floodgate table in the file, with `{table}` and `{index}` replaced
/// by the table's (validated, quoted) names. A table created later gets every `table` step.
struct Migration {
    file: &'static [&'static str],
    table: &'static [&'static str],
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        file: &["CREATE TABLE floodgate_tables (name TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID"],
        // WITHOUT ROWID: the key is the primary key, so a decision touches one b-tree (plus
        // the expiry index) instead of a rowid table and a key index.
        table: &[
            "CREATE TABLE {table} (key TEXT PRIMARY KEY NOT NULL, state BLOB NOT NULL, \
             expires_at INTEGER NOT NULL) WITHOUT ROWID",
            "CREATE INDEX {index} ON {table} (expires_at)",
        ],
    },
    // The expiry index cost every write a second b-tree update (a quarter of the store
    // thread's time) for the benefit of the sweep alone, which now walks the table in key
    // order, a chunk at a time.
    Migration {
        file: &[],
        table: &["DROP INDEX IF EXISTS {index}"],
    },
    // One spelling of a custom key in every store: `key:` (it was `custom:` here).
    Migration {
        file: &[],
        table: &["UPDATE {table} SET key = 'key:' || substr(key, 8) \
                  WHERE key >= 'custom:' AND key < 'custom;'"],
    },
    // The index of bans (see `bans.rs`), filled from the rows by `backfill` when an older
    // file is migrated: listing the bans in force reads the banned clients only.
    Migration {
        file: &[],
        table: &[
            "CREATE TABLE {bans} (key TEXT PRIMARY KEY NOT NULL, ban_until INTEGER NOT NULL) \
             WITHOUT ROWID",
            "CREATE INDEX {bans_order} ON {bans} (ban_until, key)",
        ],
    },
];

/// The first schema version with the index of bans.
const BANS_VERSION: i64 = 4;

/// The columns a floodgate table has: name, declared type, part of the primary key.
const COLUMNS: &[(&str, &str, bool)] = &[
    ("key", "TEXT", true),
    ("state", "BLOB", false),
    ("expires_at", "INTEGER", false),
];

pub(super) fn validate_table(name: &str) -> Result<(), ConfigError> {
    let mut chars = name.chars();
    let problem = match chars.next() {
        None => Some("is empty".to_owned()),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            Some("must start with an ASCII letter or an underscore".to_owned())
        }
        _ if name.len() > MAX_TABLE_LEN => {
            Some(format!("is longer than {MAX_TABLE_LEN} characters"))
        }
        _ if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Some("may hold only ASCII letters, digits and underscores".to_owned())
        }
        _ if name.to_ascii_lowercase().starts_with("sqlite_") => {
            Some("must not start with sqlite_ (reserved by SQLite)".to_owned())
        }
        _ if name.eq_ignore_ascii_case(REGISTRY) => Some(format!("{REGISTRY} is floodgate's own")),
        _ => None,
    };
    match problem {
        Some(p) => {
            let shown: String = name.chars().take(80).collect();
            Err(ConfigError::invalid(
                "table",
                format!("table name {shown:?} {p}"),
            ))
        }
        None => Ok(()),
    }
}

pub(super) fn path_error(path: &str, e: &rusqlite::Error, busy: Duration) -> ConfigError {
    let message = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            format!("{path} is not an SQLite database (nor a floodgate one)")
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            format!("{path} is locked by another process (waited {busy:?}): {e}")
        }
        Some(ErrorCode::CannotOpen) => format!("cannot open or create {path}: {e}"),
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
            format!("{path} is not writable: {e}")
        }
        _ => format!("cannot use {path}: {e}"),
    };
    ConfigError::invalid("path", message)
}

/// Fills a migration step for one table. `table` is validated, so quoting it is enough.
fn fill(step: &str, table: &str) -> String {
    let bans = index_name(table);
    step.replace("{table}", &format!("\"{table}\""))
        .replace("{index}", &format!("\"{table}_expires_at\""))
        .replace("{bans_order}", &format!("\"{bans}_order\""))
        .replace("{bans}", &format!("\"{bans}\""))
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
}

/// Applies the migrations the file lacks and creates the table, in one exclusive transaction.
pub(super) fn migrate(
    conn: &mut Connection,
    table: &str,
    path: &str,
    busy: Duration,
) -> Result<(), ConfigError> {
    let err = |e: rusqlite::Error| path_error(path, &e, busy);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(err)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    let latest = MIGRATIONS.len() as i64;
    let has_registry = table_exists(&tx, REGISTRY).map_err(err)?;
    if (version > 0) != has_registry {
        return Err(ConfigError::invalid(
            "path",
            format!(
                "{path} is not a floodgate database (user_version {version}, {} {REGISTRY} \
                 table); use another file",
                if has_registry { "a" } else { "no" }
            ),
        ));
    }
    if version > latest {
        return Err(ConfigError::invalid(
            "path",
            format!(
                "{path} has floodgate schema version {version}, newer than this floodgate \
                 knows ({latest}); upgrade floodgate"
            ),
        ));
    }
    let mut tables: Vec<String> = Vec::new();
    if has_registry {
        let mut stmt = tx
            .prepare("SELECT name FROM floodgate_tables")
            .map_err(err)?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(err)?;
        for row in rows {
            let name: String = row.map_err(err)?;
            // Names were validated when they were registered; check again rather than trust
            // the file.
            if validate_table(&name).is_ok() {
                tables.push(name);
            }
        }
    }
    for m in &MIGRATIONS[version as usize..] {
        for step in m.file {
            tx.execute_batch(step).map_err(err)?;
        }
        for t in &tables {
            for step in m.table {
                tx.execute_batch(&fill(step, t)).map_err(err)?;
            }
        }
    }
    if version < BANS_VERSION {
        for t in &tables {
            backfill(&tx, t).map_err(err)?;
        }
    }
    if version < latest {
        tx.pragma_update(None, "user_version", latest)
            .map_err(err)?;
    }
    if !tables.iter().any(|t| t.eq_ignore_ascii_case(table)) {
        if table_exists(&tx, table).map_err(err)? {
            return Err(ConfigError::invalid(
                "table",
                format!(
                    "{path} already has a table {table:?} that floodgate did not create; \
                     name another table"
                ),
            ));
        }
        for m in MIGRATIONS {
            for step in m.table {
                tx.execute_batch(&fill(step, table)).map_err(err)?;
            }
        }
        tx.execute("INSERT INTO floodgate_tables (name) VALUES (?1)", [table])
            .map_err(err)?;
    }
    tx.commit().map_err(err)
}

/// Checks that `table` has floodgate's columns.
pub(super) fn check_columns(
    conn: &Connection,
    table: &str,
) -> rusqlite::Result<Result<(), ConfigError>> {
    let mut stmt = conn.prepare("SELECT name, type, pk FROM pragma_table_info(?1)")?;
    let found: Vec<(String, String, bool)> = stmt
        .query_map([table], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? > 0))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let expected = COLUMNS
        .iter()
        .map(|(n, t, pk)| ((*n).to_owned(), (*t).to_owned(), *pk))
        .collect::<Vec<_>>();
    let same = found.len() == expected.len()
        && found.iter().zip(&expected).all(|(f, e)| {
            f.0.eq_ignore_ascii_case(&e.0) && f.1.eq_ignore_ascii_case(&e.1) && f.2 == e.2
        });
    if same {
        return Ok(Ok(()));
    }
    let names: Vec<&str> = found.iter().map(|f| f.0.as_str()).collect();
    Ok(Err(ConfigError::invalid(
        "table",
        format!(
            "table {table:?} has columns {names:?}, not floodgate's (key, state, expires_at); \
             name another table"
        ),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_validated() {
        for ok in ["IP_Data", "_x", "floodgate_clients", "a1", &"t".repeat(64)] {
            assert!(validate_table(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "x\"; DROP TABLE y; --",
            "é",
            "sqlite_master",
            "floodgate_tables",
            &"t".repeat(65),
        ] {
            let err = validate_table(bad).unwrap_err();
            assert_eq!(err.field(), "table", "{bad}");
        }
    }
}
