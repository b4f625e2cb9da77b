//! What the command prints: aligned tables for people, JSON (`--json`) for scripts.

use serde_json::{json, Value};

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Control characters of client-chosen keys, escaped so that a key cannot forge table rows
/// or terminal sequences.
fn cell(v: &Value) -> String {
    text(v)
        .chars()
        .flat_map(char::escape_debug)
        .collect::<String>()
        .replace("\\\"", "\"")
        .replace("\\'", "'")
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn pretty(v: &Value) -> String {
    format!(
        "{}\n",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    )
}

pub(crate) fn bans(v: &Value, json: bool) -> String {
    if json {
        return pretty(v);
    }
    let rows: Vec<Vec<String>> = v["bans"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|b| {
            vec![
                cell(&b["client"]),
                cell(&b["reason"]),
                cell(&b["since"]),
                cell(&b["until"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no bans in force\n".to_owned();
    }
    table(&["CLIENT", "REASON", "SINCE", "UNTIL"], &rows)
}

pub(crate) fn status(v: &Value, json: bool) -> String {
    if json {
        return pretty(v);
    }
    let mut out = format!("{}: ", cell(&v["client"]));
    match v.get("ban").filter(|b| !b.is_null()) {
        Some(ban) if ban["until"].is_null() => {
            out.push_str(&format!("blacklisted ({})", cell(&ban["reason"])));
        }
        Some(ban) => out.push_str(&format!(
            "banned until {} ({})",
            cell(&ban["until"]),
            cell(&ban["reason"])
        )),
        None => out.push_str("not banned"),
    }
    if let Some(since) = v["ban"]["since"].as_str() {
        out.push_str(&format!(" since {since}"));
    }
    if let Some(n) = v["offences"].as_u64() {
        out.push_str(&format!(", {n} offences"));
    }
    match v["last_seen"].as_str() {
        Some(t) => out.push_str(&format!(", last seen {t}\n")),
        None => out.push_str(", never seen\n"),
    }
    if let Some(windows) = v["windows"].as_array().filter(|w| !w.is_empty()) {
        let rows: Vec<Vec<String>> = windows
            .iter()
            .map(|w| {
                vec![
                    cell(&w["scope"]),
                    cell(&w["limit"]),
                    cell(&w["used"]),
                    cell(&w["remaining"]),
                    cell(&w["resets_at"]),
                ]
            })
            .collect();
        out.push_str(&table(
            &["SCOPE", "LIMIT", "USED", "LEFT", "RESETS AT"],
            &rows,
        ));
    }
    out
}

pub(crate) fn unbanned(was: bool, json: bool) -> String {
    if json {
        return pretty(&json!({ "was_banned": was }));
    }
    if was {
        "unbanned\n"
    } else {
        "was not banned\n"
    }
    .to_owned()
}

pub(crate) fn top(v: &Value, json: bool) -> String {
    if json {
        return pretty(v);
    }
    let rows: Vec<Vec<String>> = v["clients"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            vec![
                cell(&c["client"]),
                cell(&c["refusals"]),
                cell(&c["reports"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no offenders lately\n".to_owned();
    }
    table(&["CLIENT", "REFUSALS", "REPORTS"], &rows)
}
