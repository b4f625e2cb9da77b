//! Parsing and validation of the attributes' arguments. Every problem is a `syn::Error`
//! spanned on the offending token; all problems of one attribute are reported together.

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Path, Token};

use crate::duration;

/// Collects errors, serde_derive style, to report them all at once.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, err: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(err),
            None => self.0 = Some(err),
        }
    }

    pub(crate) fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// `key` or `key = value`.
pub(crate) struct Entry {
    pub(crate) key: Ident,
    pub(crate) value: Option<Expr>,
}

impl Parse for Entry {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key: Ident = input.call(syn::ext::IdentExt::parse_any)?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else {
            None
        };
        Ok(Entry { key, value })
    }
}

pub(crate) fn entries(tokens: TokenStream) -> syn::Result<Vec<Entry>> {
    let list = Punctuated::<Entry, Token![,]>::parse_terminated.parse2(tokens)?;
    Ok(list.into_iter().collect())
}

/// Rejects keys given twice and unknown keys (listing the valid ones).
fn check_keys(entries: &[Entry], valid: &[&str], errors: &mut Errors) {
    let mut seen: Vec<String> = Vec::new();
    for e in entries {
        let key = e.key.to_string();
        if !valid.contains(&key.as_str()) {
            errors.at(
                e.key.span(),
                format!("unknown key `{key}`; valid keys: {}", valid.join(", ")),
            );
        } else if seen.contains(&key) {
            errors.at(e.key.span(), format!("`{key}` is given twice"));
        } else {
            seen.push(key);
        }
    }
}

fn value<'a>(e: &'a Entry, errors: &mut Errors, what: &str) -> Option<&'a Expr> {
    if e.value.is_none() {
        errors.at(
            e.key.span(),
            format!("`{}` needs a value: `{} = {what}`", e.key, e.key),
        );
    }
    e.value.as_ref()
}

fn lit(expr: &Expr) -> Option<&Lit> {
    match expr {
        Expr::Lit(ExprLit { lit, .. }) => Some(lit),
        Expr::Group(g) => lit(&g.expr),
        _ => None,
    }
}

fn int(e: &Entry, errors: &mut Errors, min: u32) -> Option<u32> {
    let expr = value(e, errors, "a number")?;
    match lit(expr) {
        Some(Lit::Int(i)) => match i.base10_parse::<u32>() {
            Ok(n) if n >= min => Some(n),
            Ok(_) if min == 1 => {
                errors.at(i.span(), format!("`{}` must be at least 1", e.key));
                None
            }
            _ => {
                errors.at(
                    i.span(),
                    format!(
                        "`{}` must be a whole number from {min} to {}",
                        e.key,
                        u32::MAX
                    ),
                );
                None
            }
        },
        _ => {
            errors.at(expr.span(), format!("`{}` expects a whole number", e.key));
            None
        }
    }
}

fn boolean(e: &Entry, errors: &mut Errors) -> Option<bool> {
    let Some(expr) = &e.value else {
        return Some(true); // `relative_block` alone means true
    };
    match lit(expr) {
        Some(Lit::Bool(b)) => Some(b.value),
        _ => {
            errors.at(
                expr.span(),
                format!("`{}` expects `true` or `false`", e.key),
            );
            None
        }
    }
}

fn string<'a>(e: &'a Entry, errors: &mut Errors) -> Option<&'a LitStr> {
    let expr = value(e, errors, "\"1m\"")?;
    match lit(expr) {
        Some(Lit::Str(s)) => Some(s),
        _ => {
            errors.at(
                expr.span(),
                format!("`{}` expects a duration string such as \"1m\"", e.key),
            );
            None
        }
    }
}

/// A positive duration in milliseconds; `forever` allows `"forever"` (returned as `None`).
fn duration_ms(e: &Entry, errors: &mut Errors, forever: bool) -> Option<Option<u64>> {
    let s = string(e, errors)?;
    let text = s.value();
    if text.trim().eq_ignore_ascii_case("forever") {
        if forever {
            return Some(None);
        }
        errors.at(s.span(), format!("`{}` cannot be \"forever\"", e.key));
        return None;
    }
    match duration::millis(&text) {
        Ok(0) => {
            errors.at(s.span(), format!("`{}` must be longer than zero", e.key));
            None
        }
        Ok(ms) => Some(Some(ms)),
        Err(msg) => {
            errors.at(s.span(), msg);
            None
        }
    }
}

/// One rule of `rate_limit_rules`: `(count, "window")` or `"count/window"`.
#[derive(Clone, Copy)]
pub(crate) struct RuleLit {
    pub(crate) count: u32,
    pub(crate) window_ms: u64,
}

fn rule(expr: &Expr, errors: &mut Errors) -> Option<RuleLit> {
    let shape = "write rules as `(count, \"window\")` or `\"count/window\"`, e.g. `(20, \"1s\")` or `\"20/1s\"`";
    let (count_expr, window): (Option<&Expr>, LitStr) = match expr {
        Expr::Tuple(t) if t.elems.len() == 2 => {
            let window = match lit(&t.elems[1]) {
                Some(Lit::Str(s)) => s.clone(),
                _ => {
                    errors.at(
                        t.elems[1].span(),
                        format!("expected a window such as \"1s\"; {shape}"),
                    );
                    return None;
                }
            };
            (Some(&t.elems[0]), window)
        }
        other => match lit(other) {
            Some(Lit::Str(s)) => {
                let text = s.value();
                let Some((count, window)) =
                    text.split_once('/').or_else(|| text.split_once(" per "))
                else {
                    errors.at(s.span(), format!("`{text}` is not a rule; {shape}"));
                    return None;
                };
                let count = match count.trim().parse::<u32>() {
                    Ok(0) => {
                        errors.at(s.span(), "a rule's count must be at least 1");
                        return None;
                    }
                    Ok(n) => n,
                    Err(_) => {
                        errors.at(
                            s.span(),
                            format!("`{}` is not a request count", count.trim()),
                        );
                        return None;
                    }
                };
                return match duration::millis(window) {
                    Ok(0) => {
                        errors.at(s.span(), "a rule's window must be longer than zero");
                        None
                    }
                    Ok(window_ms) => Some(RuleLit { count, window_ms }),
                    Err(msg) => {
                        errors.at(s.span(), msg);
                        None
                    }
                };
            }
            _ => {
                errors.at(other.span(), format!("expected a rule; {shape}"));
                return None;
            }
        },
    };
    let count = match count_expr.and_then(lit) {
        Some(Lit::Int(i)) => match i.base10_parse::<u32>() {
            Ok(0) => {
                errors.at(i.span(), "a rule's count must be at least 1");
                None
            }
            Ok(n) => Some(n),
            Err(_) => {
                errors.at(i.span(), "a rule's count must fit in a u32");
                None
            }
        },
        _ => {
            let span = count_expr.map_or(expr.span(), Spanned::span);
            errors.at(span, format!("expected a request count; {shape}"));
            None
        }
    };
    let window_ms = match duration::millis(&window.value()) {
        Ok(0) => {
            errors.at(window.span(), "a rule's window must be longer than zero");
            None
        }
        Ok(ms) => Some(ms),
        Err(msg) => {
            errors.at(window.span(), msg);
            None
        }
    };
    Some(RuleLit {
        count: count?,
        window_ms: window_ms?,
    })
}

/// `#[specific(rate_limit_rules = [..], standalone)]`.
#[derive(Default)]
pub(crate) struct SpecificArgs {
    pub(crate) rules: Vec<RuleLit>,
    pub(crate) standalone: bool,
    pub(crate) key: Option<Path>,
}

impl SpecificArgs {
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> SpecificArgs {
        let mut out = SpecificArgs::default();
        let entries = match entries(tokens) {
            Ok(e) => e,
            Err(err) => {
                errors.push(err);
                return out;
            }
        };
        check_keys(&entries, &["rate_limit_rules", "standalone", "key"], errors);
        let mut has_rules = false;
        for e in &entries {
            match e.key.to_string().as_str() {
                "rate_limit_rules" => {
                    has_rules = true;
                    let Some(expr) = value(e, errors, "[(20, \"1s\")]") else {
                        continue;
                    };
                    match expr {
                        Expr::Array(list) if !list.elems.is_empty() => {
                            out.rules
                                .extend(list.elems.iter().filter_map(|r| rule(r, errors)));
                        }
                        Expr::Array(list) => errors.at(
                            list.span(),
                            "`rate_limit_rules` is empty; give at least one rule",
                        ),
                        other => errors.at(
                            other.span(),
                            "`rate_limit_rules` expects a list: `[(20, \"1s\"), \"100/10s\"]`",
                        ),
                    }
                }
                "standalone" => out.standalone = boolean(e, errors).unwrap_or(false),
                "key" => out.key = key_path(e, errors),
                _ => {}
            }
        }
        if !has_rules && entries.iter().all(|e| e.key != "rate_limit_rules") {
            errors.at(
                Span::call_site(),
                "#[specific] needs `rate_limit_rules = [..]`, e.g. `#[specific(rate_limit_rules = [(1, \"2s\")])]`",
            );
        }
        out
    }
}

/// `#[rate_limited(..)]`: the keys given; what is absent comes from the app's default policy.
#[derive(Default)]
pub(crate) struct PolicyArgs {
    pub(crate) amount: Option<u32>,
    pub(crate) time_window_ms: Option<u64>,
    pub(crate) block_duration_ms: Option<u64>,
    pub(crate) block_limit: Option<u32>,
    pub(crate) block_exceed_ms: Option<Option<u64>>,
    pub(crate) relative_block: Option<bool>,
    pub(crate) block_exceed_reset: Option<bool>,
    pub(crate) max_window_ms: Option<Option<u64>>,
    pub(crate) accumulate: Option<bool>,
    pub(crate) accumulate_cap: Option<u32>,
    pub(crate) request_data_check: Option<Path>,
    pub(crate) key: Option<Path>,
    pub(crate) cooldown_ms: Option<u64>,
    pub(crate) grace_extra: Option<u32>,
    pub(crate) grace_interval_ms: Option<u64>,
    pub(crate) adaptive_factor: Option<f64>,
    pub(crate) adaptive_max_ms: Option<u64>,
    pub(crate) adaptive_jitter_ms: Option<u64>,
}

const POLICY_KEYS: &[&str] = &[
    "amount",
    "time_window",
    "block_duration",
    "block_limit",
    "block_exceed_duration",
    "relative_block",
    "block_exceed_reset",
    "max_window_duration",
    "accumulate_requests",
    "accumulate_cap",
    "request_data_check",
    "key",
    "cooldown",
    "grace_extra",
    "grace_interval",
    "adaptive_factor",
    "adaptive_max",
    "adaptive_jitter",
];

impl PolicyArgs {
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> PolicyArgs {
        let mut out = PolicyArgs::default();
        let entries = match entries(tokens) {
            Ok(e) => e,
            Err(err) => {
                errors.push(err);
                return out;
            }
        };
        check_keys(&entries, POLICY_KEYS, errors);
        let mut span_of = std::collections::HashMap::new();
        for e in &entries {
            let key = e.key.to_string();
            span_of.entry(key.clone()).or_insert(e.key.span());
            match key.as_str() {
                "amount" => out.amount = int(e, errors, 1),
                "time_window" => out.time_window_ms = duration_ms(e, errors, false).flatten(),
                "block_duration" => out.block_duration_ms = duration_ms(e, errors, false).flatten(),
                "block_limit" => out.block_limit = int(e, errors, 0),
                "block_exceed_duration" => out.block_exceed_ms = duration_ms(e, errors, true),
                "relative_block" => out.relative_block = boolean(e, errors),
                "block_exceed_reset" => out.block_exceed_reset = boolean(e, errors),
                "max_window_duration" => out.max_window_ms = duration_ms(e, errors, true),
                "accumulate_requests" => out.accumulate = boolean(e, errors),
                "accumulate_cap" => out.accumulate_cap = int(e, errors, 1),
                "cooldown" => out.cooldown_ms = duration_ms(e, errors, false).flatten(),
                "grace_extra" => out.grace_extra = int(e, errors, 1),
                "grace_interval" => out.grace_interval_ms = duration_ms(e, errors, false).flatten(),
                "adaptive_max" => out.adaptive_max_ms = duration_ms(e, errors, false).flatten(),
                "adaptive_jitter" => {
                    out.adaptive_jitter_ms = duration_ms(e, errors, false).flatten()
                }
                "adaptive_factor" => {
                    let Some(expr) = value(e, errors, "2.0") else {
                        continue;
                    };
                    let factor = match lit(expr) {
                        Some(Lit::Float(f)) => f.base10_parse::<f64>().ok(),
                        Some(Lit::Int(i)) => i.base10_parse::<u32>().ok().map(f64::from),
                        _ => None,
                    };
                    match factor {
                        Some(f) if f.is_finite() && f >= 1.0 => out.adaptive_factor = Some(f),
                        _ => errors.at(
                            expr.span(),
                            "`adaptive_factor` expects a number of at least 1, such as 2.0",
                        ),
                    }
                }
                "key" => out.key = key_path(e, errors),
                "request_data_check" => {
                    let Some(expr) = value(e, errors, "path::to::check") else {
                        continue;
                    };
                    match expr {
                        Expr::Path(p) if p.qself.is_none() => {
                            out.request_data_check = Some(p.path.clone())
                        }
                        other => errors.at(
                            other.span(),
                            "`request_data_check` expects the path of a `fn(&HttpRequest) -> bool`",
                        ),
                    }
                }
                _ => {}
            }
        }
        out.check_combinations(&span_of, errors);
        out
    }

    /// Rejects combinations that cannot mean anything.
    fn check_combinations(
        &self,
        span_of: &std::collections::HashMap<String, Span>,
        errors: &mut Errors,
    ) {
        let span = |k: &str| span_of.get(k).copied().unwrap_or_else(Span::call_site);
        if self.accumulate_cap.is_some() && self.accumulate == Some(false) {
            errors.at(
                span("accumulate_cap"),
                "`accumulate_cap` needs `accumulate_requests = true`",
            );
        }
        if self.grace_interval_ms.is_some() && self.grace_extra.is_none() {
            errors.at(
                span("grace_interval"),
                "`grace_interval` needs `grace_extra` (how many requests over the limit the grace allows)",
            );
        }
        let adaptive = ["adaptive_factor", "adaptive_max", "adaptive_jitter"]
            .into_iter()
            .find(|k| span_of.contains_key(*k));
        if let Some(key) = adaptive {
            if self.block_exceed_ms == Some(None) {
                errors.at(
                    span(key),
                    "adaptive punishment needs a finite `block_exceed_duration`; a blacklist (\"forever\") cannot grow",
                );
            }
            if let (Some(max), Some(Some(base))) = (self.adaptive_max_ms, self.block_exceed_ms) {
                if max < base {
                    errors.at(
                        span("adaptive_max"),
                        "`adaptive_max` is shorter than `block_exceed_duration`",
                    );
                }
            }
        }
        if let (Some(Some(max)), Some(window)) = (self.max_window_ms, self.time_window_ms) {
            if max < window {
                errors.at(
                    span("max_window_duration"),
                    "`max_window_duration` is shorter than `time_window`: records would be deleted while their window is open",
                );
            }
        }
        if let (Some(cooldown), Some(window)) = (self.cooldown_ms, self.time_window_ms) {
            if cooldown > window {
                errors.at(
                    span("cooldown"),
                    "`cooldown` is longer than `time_window`: at most one request per window could pass",
                );
            }
        }
    }
}

/// `key = path::to::fn`: the route's key extractor, `fn(&HttpRequest) -> Option<K>`.
fn key_path(e: &Entry, errors: &mut Errors) -> Option<Path> {
    let expr = value(e, errors, "path::to::key_fn")?;
    match expr {
        Expr::Path(p) if p.qself.is_none() => Some(p.path.clone()),
        other => {
            errors.at(
                other.span(),
                "`key` expects the path of a `fn(&HttpRequest) -> Option<K>` (K: a String, &str or ClientKey)",
            );
            None
        }
    }
}

/// `#[bypass]` takes no arguments.
pub(crate) fn no_args(tokens: TokenStream, errors: &mut Errors) {
    if !tokens.is_empty() {
        errors.at(tokens.span(), "#[bypass] takes no arguments");
    }
}
