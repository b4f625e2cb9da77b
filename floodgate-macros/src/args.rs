//! Parsing and validation of the attributes' arguments. Every problem is a `syn::Error`
//! spanned on the offending token; all problems of one attribute are reported together.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Path, Token};

use crate::duration;

mod count;
pub(crate) use count::CountArg;

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

    /// An error over all of `tokens` (an expression, an attribute): `Spanned::span` would
    /// cover only their first token on stable Rust.
    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn append(&mut self, other: Errors) {
        if let Some(err) = other.0 {
            self.push(err);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
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
        let key: Ident = input
            .call(syn::ext::IdentExt::parse_any)
            .map_err(|e| syn::Error::new(e.span(), "expected `key = value` arguments"))?;
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            Some(input.parse()?)
        } else if input.is_empty() || input.peek(Token![,]) {
            None
        } else {
            return Err(input.error(format!("expected `=` or `,` after `{key}`")));
        };
        Ok(Entry { key, value })
    }
}

pub(crate) fn entries(tokens: TokenStream) -> syn::Result<Vec<Entry>> {
    let list = Punctuated::<Entry, Token![,]>::parse_terminated.parse2(tokens)?;
    Ok(list.into_iter().collect())
}

/// Accepts each entry's key once: an unknown key (with the valid ones listed) and a key
/// given again are errors, and such entries are not read further.
struct Keys<'v> {
    valid: &'v [&'v str],
    seen: Vec<String>,
}

impl<'v> Keys<'v> {
    fn new(valid: &'v [&'v str]) -> Self {
        Keys {
            valid,
            seen: Vec::new(),
        }
    }

    fn accept(&mut self, e: &Entry, errors: &mut Errors) -> bool {
        let key = e.key.to_string();
        if !self.valid.contains(&key.as_str()) {
            let hint = closest(&key, self.valid)
                .map(|k| format!("did you mean `{k}`? "))
                .unwrap_or_default();
            errors.at(
                e.key.span(),
                format!(
                    "unknown key `{key}`; {hint}valid keys: {}",
                    self.valid.join(", ")
                ),
            );
            false
        } else if self.seen.contains(&key) {
            errors.at(e.key.span(), format!("`{key}` is given twice; keep one"));
            false
        } else {
            self.seen.push(key);
            true
        }
    }
}

/// The valid key nearest to a misspelt one, if it is near enough to be a typo.
fn closest<'v>(key: &str, valid: &[&'v str]) -> Option<&'v str> {
    let limit = (key.chars().count() / 3).max(1);
    valid
        .iter()
        .map(|v| (edit_distance(key, v), *v))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

fn value<'a>(e: &'a Entry, errors: &mut Errors, example: &str) -> Option<&'a Expr> {
    if e.value.is_none() {
        errors.at(
            e.key.span(),
            format!("`{}` needs a value, e.g. `{} = {example}`", e.key, e.key),
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
    let expr = value(e, errors, "20")?;
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
            errors.spanned(
                expr,
                format!("`{}` expects a whole number, e.g. `{} = 20`", e.key, e.key),
            );
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
            errors.spanned(expr, format!("`{}` expects `true` or `false`", e.key));
            None
        }
    }
}

fn string<'a>(e: &'a Entry, errors: &mut Errors) -> Option<&'a LitStr> {
    let expr = value(e, errors, "\"1m\"")?;
    match lit(expr) {
        Some(Lit::Str(s)) => Some(s),
        _ => {
            errors.spanned(
                expr,
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
        errors.at(
            s.span(),
            format!(
                "`{}` cannot be \"forever\"; only `block_exceed_duration` and `max_window_duration` can",
                e.key
            ),
        );
        return None;
    }
    match duration::millis(&text) {
        Ok(0) => {
            errors.at(s.span(), format!("`{}` must be longer than zero", e.key));
            None
        }
        Ok(ms) => Some(Some(ms)),
        Err(msg) if forever => {
            errors.at(s.span(), format!("{msg}, or \"forever\""));
            None
        }
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

const RULE_SHAPE: &str = "write rules as `(count, \"window\")` or `\"count/window\"`, e.g. `(20, \"1s\")`, `\"20/1s\"` or `\"100 per 10 seconds\"`";

/// A rule's window, parsed as `floodgate::Rule`'s `FromStr` does; errors go on `span`.
fn rule_window(text: &str, span: Span, errors: &mut Errors) -> Option<u64> {
    if text.trim().eq_ignore_ascii_case("forever") {
        errors.at(
            span,
            "a rule's window cannot be \"forever\": a rule counts requests in a finite window",
        );
        return None;
    }
    match duration::millis(text) {
        Ok(0) => {
            errors.at(span, "a rule's window must be longer than zero");
            None
        }
        Ok(ms) => Some(ms),
        Err(msg) => {
            errors.at(span, msg);
            None
        }
    }
}

/// A rule's count: at least 1.
fn rule_count(count: Result<u32, ()>, span: Span, errors: &mut Errors) -> Option<u32> {
    match count {
        Ok(0) => {
            errors.at(span, "a rule's count must be at least 1");
            None
        }
        Ok(n) => Some(n),
        Err(()) => {
            errors.at(
                span,
                format!(
                    "a rule's count must be a whole number from 1 to {}",
                    u32::MAX
                ),
            );
            None
        }
    }
}

fn rule(expr: &Expr, errors: &mut Errors) -> Option<RuleLit> {
    if let Expr::Tuple(t) = expr {
        if t.elems.len() != 2 {
            errors.spanned(
                t,
                format!("a rule has two parts, a count and a window; {RULE_SHAPE}"),
            );
            return None;
        }
        let (count_expr, window_expr) = (&t.elems[0], &t.elems[1]);
        let count = match lit(count_expr) {
            Some(Lit::Int(i)) => {
                rule_count(i.base10_parse::<u32>().map_err(drop), i.span(), errors)
            }
            _ => {
                errors.spanned(
                    count_expr,
                    format!("expected a request count such as `20`; {RULE_SHAPE}"),
                );
                None
            }
        };
        let window_ms = match lit(window_expr) {
            Some(Lit::Str(s)) => rule_window(&s.value(), s.span(), errors),
            _ => {
                errors.spanned(
                    window_expr,
                    format!("expected a window such as \"1s\"; {RULE_SHAPE}"),
                );
                None
            }
        };
        return Some(RuleLit {
            count: count?,
            window_ms: window_ms?,
        });
    }
    let Some(Lit::Str(s)) = lit(expr) else {
        errors.spanned(expr, format!("expected a rule; {RULE_SHAPE}"));
        return None;
    };
    let text = s.value();
    let Some((count, window)) = text.split_once('/').or_else(|| text.split_once(" per ")) else {
        errors.at(s.span(), format!("`{text}` is not a rule; {RULE_SHAPE}"));
        return None;
    };
    let count_text = count.trim();
    let count = match count_text.parse::<u32>() {
        Ok(n) => rule_count(Ok(n), s.span(), errors),
        // All digits, yet no u32: too large.
        Err(_) if !count_text.is_empty() && count_text.bytes().all(|b| b.is_ascii_digit()) => {
            rule_count(Err(()), s.span(), errors)
        }
        Err(_) => {
            errors.at(
                s.span(),
                format!("`{count_text}` is not a request count; {RULE_SHAPE}"),
            );
            None
        }
    };
    let window_ms = rule_window(window, s.span(), errors);
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
    /// `shadow`: the rules are checked and counted, and what they would refuse is served.
    pub(crate) shadow: bool,
    /// `cost = 5` or `cost = path::to::fn`: units of every limit one request uses.
    pub(crate) cost: Option<CostArg>,
    /// `count = "4xx" | [401, 403] | path::to::fn`: which responses the rules count.
    pub(crate) count: Option<CountArg>,
}

/// `cost = ..`: a constant number of units, or a function of the request.
pub(crate) enum CostArg {
    Units(u32),
    Fn(Path),
}

fn cost(e: &Entry, errors: &mut Errors) -> Option<CostArg> {
    let expr = value(e, errors, "5")?;
    match expr {
        Expr::Path(p) if p.qself.is_none() => Some(CostArg::Fn(p.path.clone())),
        Expr::Lit(_) => int(e, errors, 1).map(CostArg::Units),
        other => {
            errors.spanned(
                other,
                "`cost` expects a number of units (`cost = 5`) or the path of a `fn(&HttpRequest) -> u32`",
            );
            None
        }
    }
}

impl SpecificArgs {
    /// `attr` is the whole attribute, where an error about a missing key goes.
    pub(crate) fn parse(
        tokens: TokenStream,
        attr: &TokenStream,
        errors: &mut Errors,
    ) -> SpecificArgs {
        let mut out = SpecificArgs::default();
        let entries = match entries(tokens) {
            Ok(e) => e,
            Err(err) => {
                errors.push(err);
                return out;
            }
        };
        let mut keys = Keys::new(&[
            "rate_limit_rules",
            "standalone",
            "key",
            "shadow",
            "cost",
            "count",
        ]);
        let mut unknown_key = false;
        for e in &entries {
            if !keys.accept(e, errors) {
                unknown_key = true;
                continue;
            }
            match e.key.to_string().as_str() {
                "rate_limit_rules" => {
                    let Some(expr) = value(e, errors, "[(20, \"1s\")]") else {
                        continue;
                    };
                    match expr {
                        Expr::Array(list) if !list.elems.is_empty() => {
                            out.rules
                                .extend(list.elems.iter().filter_map(|r| rule(r, errors)));
                        }
                        Expr::Array(list) => errors.spanned(
                            list,
                            "`rate_limit_rules` is empty; give at least one rule, e.g. `[(20, \"1s\")]`",
                        ),
                        other => errors.spanned(
                            other,
                            "`rate_limit_rules` expects a list: `[(20, \"1s\"), \"100/10s\"]`",
                        ),
                    }
                }
                "standalone" => out.standalone = boolean(e, errors).unwrap_or(false),
                "shadow" => out.shadow = boolean(e, errors).unwrap_or(false),
                "cost" => out.cost = cost(e, errors),
                "count" => out.count = count::count(e, errors),
                "key" => out.key = key_path(e, errors),
                _ => {}
            }
        }
        // A misspelt key already has its error (with a suggestion): a second one saying the
        // rules are missing would only mislead.
        if !unknown_key && entries.iter().all(|e| e.key != "rate_limit_rules") {
            errors.spanned(
                attr,
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
    /// `policy = "name"`: a policy registered on the app, shared with every route naming it.
    pub(crate) shared: Option<LitStr>,
    /// `shadow`: the policy is checked and counted, and what it would refuse is served.
    pub(crate) shadow: bool,
    /// `cost = ..`: units of every limit one request uses.
    pub(crate) cost: Option<CostArg>,
    /// `count = ..`: which responses the policy counts.
    pub(crate) count: Option<CountArg>,
    /// The keys given, with their spans, for errors about the attributes together.
    pub(crate) given: Vec<(String, Span)>,
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
    "policy",
    "shadow",
    "cost",
    "count",
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
        let mut keys = Keys::new(POLICY_KEYS);
        // The keys accepted, in the order written, for errors about combinations.
        let mut given: Vec<(String, Span)> = Vec::new();
        for e in &entries {
            if !keys.accept(e, errors) {
                continue;
            }
            let key = e.key.to_string();
            given.push((key.clone(), e.key.span()));
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
                        _ => errors.spanned(
                            expr,
                            "`adaptive_factor` expects a number of at least 1, such as 2.0",
                        ),
                    }
                }
                "key" => out.key = key_path(e, errors),
                "shadow" => out.shadow = boolean(e, errors).unwrap_or(false),
                "cost" => out.cost = cost(e, errors),
                "count" => out.count = count::count(e, errors),
                "policy" => {
                    let Some(expr) = value(e, errors, "\"api\"") else {
                        continue;
                    };
                    match lit(expr) {
                        Some(Lit::Str(s)) if !s.value().trim().is_empty() => {
                            out.shared = Some(s.clone())
                        }
                        _ => errors.spanned(
                            expr,
                            "`policy` expects the name of a policy registered with `Floodgate::policy`, such as \"api\"",
                        ),
                    }
                }
                "request_data_check" => {
                    let Some(expr) = value(e, errors, "path::to::check") else {
                        continue;
                    };
                    match expr {
                        Expr::Path(p) if p.qself.is_none() => {
                            out.request_data_check = Some(p.path.clone())
                        }
                        other => errors.spanned(
                            other,
                            "`request_data_check` expects the path of a `fn(&HttpRequest) -> bool`, e.g. `request_data_check = has_api_key`",
                        ),
                    }
                }
                _ => {}
            }
        }
        out.check_combinations(&given, errors);
        out.given = given;
        out
    }

    /// Rejects combinations that cannot mean anything. Each error goes on the key that makes
    /// the combination impossible; values that failed to parse are not checked again.
    fn check_combinations(&self, given: &[(String, Span)], errors: &mut Errors) {
        if given.iter().any(|(k, _)| k == "policy") {
            // A shared policy is defined once, on the app: no route may change it.
            // `shadow`, `cost` and `count` are the route's, not the policy's.
            let route_keys = ["policy", "shadow", "cost", "count"];
            for (key, span) in given
                .iter()
                .filter(|(k, _)| !route_keys.contains(&k.as_str()))
            {
                errors.at(
                    *span,
                    format!(
                        "`{key}` cannot be given beside `policy = ..`: a shared policy is set once, \
                         with `Floodgate::policy`, for every route that names it"
                    ),
                );
            }
            return;
        }
        let span = |k: &str| {
            given
                .iter()
                .find(|(key, _)| key == k)
                .map_or_else(Span::call_site, |(_, span)| *span)
        };
        if self.accumulate_cap.is_some() && self.accumulate == Some(false) {
            errors.at(
                span("accumulate_cap"),
                "`accumulate_cap` has no effect with `accumulate_requests = false`: remove one of them",
            );
        }
        if self.grace_interval_ms.is_some() && self.grace_extra.is_none() {
            errors.at(
                span("grace_interval"),
                "`grace_interval` needs `grace_extra` (how many requests over the limit the grace allows)",
            );
        }
        let adaptive = given.iter().find(|(key, _)| {
            matches!(
                key.as_str(),
                "adaptive_factor" | "adaptive_max" | "adaptive_jitter"
            )
        });
        if let Some((key, key_span)) = adaptive {
            if self.block_exceed_ms == Some(None) {
                errors.at(
                    *key_span,
                    format!("`{key}` needs a finite `block_exceed_duration`: a blacklist (\"forever\") cannot grow"),
                );
            }
            if let (Some(max), Some(Some(base))) = (self.adaptive_max_ms, self.block_exceed_ms) {
                if max < base {
                    errors.at(
                        span("adaptive_max"),
                        "`adaptive_max` is shorter than `block_exceed_duration`: punishments could never grow",
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
            errors.spanned(
                other,
                "`key` expects the path of a `fn(&HttpRequest) -> Option<K>` (K: a String, &str or ClientKey)",
            );
            None
        }
    }
}

/// `#[bypass]` takes no arguments.
pub(crate) fn no_args(tokens: TokenStream, errors: &mut Errors) {
    if !tokens.is_empty() {
        errors.spanned(
            tokens,
            "#[bypass] takes no arguments: write `#[bypass]` alone",
        );
    }
}

#[cfg(test)]
mod tests;
