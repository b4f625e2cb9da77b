//! `import-flaskfloodgate`: a FlaskFloodgate 1.0.x SQLite file's blacklists, and its running
//! blocks when the handler's `amount` is given, carried into a floodgate SQLite file.
//!
//! FlaskFloodgate's `Sqlite3Handler` keeps `<table>` (ip, amount, last_window_request_limit,
//! blocked) and `<table>Blacklist` (ip). Each address is validated (the text is whatever
//! Flask saw); a blacklisted one becomes a floodgate blacklist. A row whose window end lies
//! in the future with more than `amount` requests is a running block: with `--amount`, a
//! ban until that end. Version 1.0.1's `UPDATE` lacks a `WHERE` clause and may have
//! rewritten every row with the last client's values: when every row holds the same values,
//! blocks are not imported (they would ban every address).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use floodgate::{ClientKey, SqliteStore, Store, Timestamp};
use rusqlite::{Connection, OpenFlags};
use serde_json::json;

use crate::Failure;

#[derive(Args, Debug)]
pub(crate) struct ImportArgs {
    /// The FlaskFloodgate SQLite file (read only).
    old: PathBuf,
    /// FlaskFloodgate's table name (its blacklist is this name plus "Blacklist").
    #[arg(long)]
    table: String,
    /// The floodgate SQLite file to write (created when missing).
    #[arg(long, value_name = "NEW")]
    into: PathBuf,
    /// The table in the floodgate file.
    #[arg(long, default_value = "floodgate_clients")]
    into_table: String,
    /// The handler's `amount`: import running blocks (clients over it until their window
    /// ends) as bans.
    #[arg(long)]
    amount: Option<u64>,
}

fn now() -> Timestamp {
    use floodgate::Clock;
    floodgate::SystemClock.now()
}

fn valid_table(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn ip_of(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

fn failed(e: floodgate::StoreError) -> Failure {
    Failure::new(e.to_string())
}

fn sql_failure(path: &std::path::Path, e: &rusqlite::Error) -> Failure {
    Failure::new(format!("{}: {e}", path.display()))
}

/// Runs the import; the summary to print.
pub(crate) async fn run(args: &ImportArgs, json_out: bool) -> Result<String, Failure> {
    if !valid_table(&args.table) {
        return Err(Failure::usage(format!(
            "--table {:?}: FlaskFloodgate table names are letters, digits and underscores",
            args.table
        )));
    }
    let old = Connection::open_with_flags(&args.old, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| sql_failure(&args.old, &e))?;
    let blacklist_table = format!("{}Blacklist", args.table);
    let blacklisted: Vec<String> = old
        .prepare(&format!("SELECT ip FROM \"{blacklist_table}\""))
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(|e| {
            Failure::new(format!(
                "{}: cannot read FlaskFloodgate's table {blacklist_table}: {e}",
                args.old.display()
            ))
        })?;
    type Row = (String, i64, i64, i64);
    let rows: Vec<Row> = old
        .prepare(&format!(
            "SELECT ip, amount, last_window_request_limit, blocked FROM \"{}\"",
            args.table
        ))
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect()
        })
        .map_err(|e| {
            Failure::new(format!(
                "{}: cannot read FlaskFloodgate's table {}: {e}",
                args.old.display(),
                args.table
            ))
        })?;

    let store = SqliteStore::builder(&args.into)
        .table(args.into_table.clone())
        .open()
        .map_err(|e| Failure::new(e.to_string()))?;
    let now = now();
    let mut warnings = Vec::new();
    let (mut done_black, mut done_blocks, mut skipped) = (0u64, 0u64, 0u64);
    for text in &blacklisted {
        let Some(ip) = ip_of(text) else {
            skipped += 1;
            continue;
        };
        store
            .ban(&ClientKey::from_ip(ip, 64), None, now)
            .await
            .map_err(failed)?;
        done_black += 1;
    }
    let rewritten = rows.len() > 1
        && rows
            .iter()
            .all(|r| (r.1, r.2, r.3) == (rows[0].1, rows[0].2, rows[0].3));
    match args.amount {
        None => {
            warnings.push("running blocks not imported: give the handler's --amount".to_owned())
        }
        Some(_) if rewritten => warnings.push(format!(
            "every row of {} holds the same values (FlaskFloodgate 1.0.1's UPDATE without WHERE): \
             running blocks not imported",
            args.table
        )),
        Some(amount) => {
            for (text, count, window_end, _) in &rows {
                let end_ms = u64::try_from(*window_end).unwrap_or(0).saturating_mul(1000);
                if u64::try_from(*count).unwrap_or(0) <= amount || end_ms <= now.as_millis() {
                    continue;
                }
                let Some(ip) = ip_of(text) else {
                    skipped += 1;
                    continue;
                };
                let key = ClientKey::from_ip(ip, 64);
                let until = Some(Timestamp::from_millis(end_ms));
                store
                    .extend_ban(&key, until, floodgate::BanReason::Operator, now)
                    .await
                    .map_err(failed)?;
                done_blocks += 1;
            }
        }
    }
    drop(store);
    if skipped > 0 {
        warnings.push(format!("{skipped} rows skipped: not an IP address"));
    }
    let summary = json!({
        "blacklisted": done_black,
        "blocked": done_blocks,
        "skipped": skipped,
        "warnings": warnings,
    });
    if json_out {
        return Ok(format!("{summary:#}\n"));
    }
    let mut out = format!(
        "imported into {}: {done_black} blacklisted, {done_blocks} blocked until their window ends\n",
        args.into.display()
    );
    for w in &warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    Ok(out)
}
