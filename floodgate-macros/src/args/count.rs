//! `count = ..`: which responses a route's own rules count (response-based counting).

use syn::{Expr, Lit, Path};

use super::{lit, value, Entry, Errors};

/// `count = "4xx"`, `count = "401"`, `count = [401, 403]` or `count = path::to::fn`.
pub(crate) enum CountArg {
    /// A status class, 1 to 5.
    Class(u8),
    Statuses(Vec<u16>),
    Fn(Path),
}

const EXPECTS: &str = "`count` expects a status class (`count = \"4xx\"`), a list of statuses \
                       (`count = [401, 403]`) or the path of a `fn(&ServiceResponse) -> bool`";

/// A status from 100 to 999.
fn status(expr: &Expr, errors: &mut Errors) -> Option<u16> {
    match lit(expr) {
        Some(Lit::Int(i)) => match i.base10_parse::<u16>() {
            Ok(n) if (100..=999).contains(&n) => Some(n),
            _ => {
                errors.spanned(i, "an HTTP status is a number from 100 to 999, such as 401");
                None
            }
        },
        _ => {
            errors.spanned(expr, EXPECTS);
            None
        }
    }
}

pub(super) fn count(e: &Entry, errors: &mut Errors) -> Option<CountArg> {
    let expr = value(e, errors, "\"4xx\"")?;
    match expr {
        Expr::Path(p) if p.qself.is_none() => Some(CountArg::Fn(p.path.clone())),
        Expr::Array(list) if list.elems.is_empty() => {
            errors.spanned(list, "`count = []` is empty: no request would ever count; give statuses such as `[401, 403]`");
            None
        }
        Expr::Array(list) => {
            let mut bad = Errors::default();
            let statuses: Vec<u16> = list
                .elems
                .iter()
                .filter_map(|s| status(s, &mut bad))
                .collect();
            let ok = bad.is_empty();
            errors.append(bad);
            ok.then_some(CountArg::Statuses(statuses))
        }
        _ => match lit(expr) {
            Some(Lit::Str(s)) => {
                let text = s.value();
                match text.trim().as_bytes() {
                    [c @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => Some(CountArg::Class(c - b'0')),
                    t => match std::str::from_utf8(t)
                        .ok()
                        .and_then(|t| t.parse::<u16>().ok())
                    {
                        Some(n) if (100..=999).contains(&n) => Some(CountArg::Statuses(vec![n])),
                        _ => {
                            errors.spanned(
                                s,
                                format!("{text:?} is neither a status class (\"1xx\" to \"5xx\") nor a status (\"401\")"),
                            );
                            None
                        }
                    },
                }
            }
            Some(Lit::Int(_)) => status(expr, errors).map(|n| CountArg::Statuses(vec![n])),
            _ => {
                errors.spanned(expr, EXPECTS);
                None
            }
        },
    }
}
