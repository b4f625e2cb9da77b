//! Parsing and validation of the attributes' arguments. Every problem is a `syn::Error`
//! spanned on the offending token; all problems of one attribute are reported together.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
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
        let mut keys = Keys::new(&["rate_limit_rules", "standalone", "key", "shadow", "cost"]);
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
        out
    }

    /// Rejects combinations that cannot mean anything. Each error goes on the key that makes
    /// the combination impossible; values that failed to parse are not checked again.
    fn check_combinations(&self, given: &[(String, Span)], errors: &mut Errors) {
        if given.iter().any(|(k, _)| k == "policy") {
            // A shared policy is defined once, on the app: no route may change it.
            // `shadow` and `cost` are the route's, not the policy's.
            let route_keys = ["policy", "shadow", "cost"];
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
mod tests {
    use super::*;
    use quote::quote;

    /// The messages of all errors, in the order reported.
    fn messages(errors: Errors) -> Vec<String> {
        match errors.finish() {
            Ok(()) => Vec::new(),
            Err(err) => err.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    fn policy(tokens: TokenStream) -> (PolicyArgs, Vec<String>) {
        let mut errors = Errors::default();
        let args = PolicyArgs::parse(tokens, &mut errors);
        (args, messages(errors))
    }

    fn specific(tokens: TokenStream) -> (SpecificArgs, Vec<String>) {
        let mut errors = Errors::default();
        let args = SpecificArgs::parse(tokens, &quote!(specific), &mut errors);
        (args, messages(errors))
    }

    #[test]
    fn cost_is_a_positive_number_or_a_path_in_either_attribute() {
        assert!(matches!(
            specific(quote!(rate_limit_rules = ["1/1s"], cost = 5))
                .0
                .cost,
            Some(CostArg::Units(5))
        ));
        assert!(matches!(
            policy(quote!(amount = 5, cost = weigh)).0.cost,
            Some(CostArg::Fn(_))
        ));
        let (args, errors) = policy(quote!(policy = "api", cost = 2, shadow));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(args.shadow && matches!(args.cost, Some(CostArg::Units(2))));
        let (_, errors) = policy(quote!(amount = 5, cost = 0));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("cost"), "{errors:?}");
        let (_, errors) = specific(quote!(rate_limit_rules = ["1/1s"], cost = "5"));
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    #[test]
    fn closest_suggests_only_near_keys() {
        assert_eq!(
            closest("stand_alone", &["rate_limit_rules", "standalone"]),
            Some("standalone")
        );
        assert_eq!(closest("amout", POLICY_KEYS), Some("amount"));
        assert_eq!(closest("time_windows", POLICY_KEYS), Some("time_window"));
        assert_eq!(closest("windw", POLICY_KEYS), None);
        assert_eq!(closest("x", POLICY_KEYS), None);
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("amount", "amount"), 0);
        assert_eq!(edit_distance("amout", "amount"), 1);
        assert_eq!(edit_distance("cooldwon", "cooldown"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
    }

    #[test]
    fn every_policy_key_is_read() {
        let (p, errors) = policy(quote!(
            amount = 10,
            time_window = "10s",
            block_duration = "500ms",
            block_limit = 0,
            block_exceed_duration = "1h",
            relative_block,
            block_exceed_reset = false,
            max_window_duration = "forever",
            accumulate_requests = true,
            accumulate_cap = 5,
            request_data_check = checks::internal,
            cooldown = "100ms",
            grace_extra = 2,
            grace_interval = "1d",
            adaptive_factor = 1.5,
            adaptive_max = "7d",
            adaptive_jitter = "1m",
        ));
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(p.amount, Some(10));
        assert_eq!(p.time_window_ms, Some(10_000));
        assert_eq!(p.block_duration_ms, Some(500));
        assert_eq!(p.block_limit, Some(0));
        assert_eq!(p.block_exceed_ms, Some(Some(3_600_000)));
        assert_eq!(p.relative_block, Some(true));
        assert_eq!(p.block_exceed_reset, Some(false));
        assert_eq!(p.max_window_ms, Some(None));
        assert_eq!(p.accumulate, Some(true));
        assert_eq!(p.accumulate_cap, Some(5));
        let check = p
            .request_data_check
            .as_ref()
            .map(|p| quote!(#p).to_string());
        assert_eq!(check.as_deref(), Some("checks :: internal"));
        assert_eq!(p.cooldown_ms, Some(100));
        assert_eq!(p.grace_extra, Some(2));
        assert_eq!(p.grace_interval_ms, Some(86_400_000));
        assert_eq!(p.adaptive_factor, Some(1.5));
        assert_eq!(p.adaptive_max_ms, Some(7 * 86_400_000));
        assert_eq!(p.adaptive_jitter_ms, Some(60_000));
    }

    #[test]
    fn no_policy_key_means_no_override() {
        let (p, errors) = policy(quote!());
        assert!(errors.is_empty());
        assert_eq!(p.amount, None);
        assert_eq!(p.block_exceed_ms, None);
        assert!(p.request_data_check.is_none());
    }

    #[test]
    fn policy_errors_are_all_reported_in_source_order() {
        let (_, errors) = policy(quote!(
            amount = 0,
            windw = "1m",
            time_window = 60,
            amount = 2,
            relative_block = "yes"
        ));
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(
            errors[0].starts_with("`amount` must be at least 1"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].starts_with("unknown key `windw`; valid keys: amount, "),
            "{}",
            errors[1]
        );
        assert!(
            errors[2].starts_with("`time_window` expects a duration string"),
            "{}",
            errors[2]
        );
        assert!(
            errors[3].starts_with("`amount` is given twice"),
            "{}",
            errors[3]
        );
        assert!(
            errors[4].starts_with("`relative_block` expects `true` or `false`"),
            "{}",
            errors[4]
        );
    }

    #[test]
    fn a_key_without_its_value_is_an_error() {
        let (_, errors) = policy(quote!(amount));
        assert_eq!(errors, ["`amount` needs a value, e.g. `amount = 20`"]);
    }

    #[test]
    fn a_missing_equals_sign_is_named() {
        let (_, errors) = policy(quote!(amount 5));
        assert_eq!(errors, ["expected `=` or `,` after `amount`"]);
    }

    #[test]
    fn forever_only_where_it_makes_sense() {
        let (p, errors) = policy(quote!(
            block_exceed_duration = "forever",
            max_window_duration = "Forever"
        ));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            (p.block_exceed_ms, p.max_window_ms),
            (Some(None), Some(None))
        );
        for key in [
            "time_window",
            "block_duration",
            "cooldown",
            "grace_interval",
            "adaptive_max",
            "adaptive_jitter",
        ] {
            let key = Ident::new(key, Span::call_site());
            let (_, errors) = policy(quote!(#key = "forever", grace_extra = 1));
            assert_eq!(errors.len(), 1, "{key}: {errors:?}");
            assert!(
                errors[0].contains("cannot be \"forever\""),
                "{key}: {}",
                errors[0]
            );
        }
    }

    #[test]
    fn counts_have_their_minimum() {
        assert!(policy(quote!(block_limit = 0)).1.is_empty());
        for key in ["amount", "accumulate_cap", "grace_extra"] {
            let key = Ident::new(key, Span::call_site());
            let (_, errors) = policy(quote!(#key = 0));
            assert_eq!(errors, [format!("`{key}` must be at least 1")]);
        }
        let (_, errors) = policy(quote!(block_limit = 4294967296));
        assert_eq!(
            errors,
            ["`block_limit` must be a whole number from 0 to 4294967295"]
        );
    }

    #[test]
    fn impossible_combinations_are_rejected() {
        let cases = [
            (
                quote!(accumulate_requests = false, accumulate_cap = 3),
                "`accumulate_cap` has no effect",
            ),
            (
                quote!(grace_interval = "1h"),
                "`grace_interval` needs `grace_extra`",
            ),
            (
                quote!(block_exceed_duration = "forever", adaptive_jitter = "1m"),
                "`adaptive_jitter` needs a finite",
            ),
            (
                quote!(block_exceed_duration = "1d", adaptive_max = "1h"),
                "`adaptive_max` is shorter",
            ),
            (
                quote!(time_window = "1h", max_window_duration = "1m"),
                "`max_window_duration` is shorter",
            ),
            (
                quote!(time_window = "1s", cooldown = "2s"),
                "`cooldown` is longer",
            ),
        ];
        for (tokens, want) in cases {
            let (_, errors) = policy(tokens.clone());
            assert_eq!(errors.len(), 1, "{tokens}: {errors:?}");
            assert!(errors[0].starts_with(want), "{tokens}: {}", errors[0]);
        }
    }

    #[test]
    fn possible_combinations_are_accepted() {
        for tokens in [
            quote!(accumulate_requests = true, accumulate_cap = 3),
            quote!(accumulate_cap = 3),
            quote!(grace_extra = 1, grace_interval = "1h"),
            quote!(block_exceed_duration = "1h", adaptive_max = "1h"),
            quote!(adaptive_factor = 3),
            quote!(time_window = "1h", max_window_duration = "1h"),
            quote!(time_window = "1h", max_window_duration = "forever"),
            quote!(time_window = "1s", cooldown = "1s"),
        ] {
            assert_eq!(policy(tokens.clone()).1, Vec::<String>::new(), "{tokens}");
        }
    }

    #[test]
    fn adaptive_factor_must_be_at_least_one() {
        assert_eq!(
            policy(quote!(adaptive_factor = 2)).0.adaptive_factor,
            Some(2.0)
        );
        assert_eq!(
            policy(quote!(adaptive_factor = 1.0)).0.adaptive_factor,
            Some(1.0)
        );
        for tokens in [
            quote!(adaptive_factor = 0.5),
            quote!(adaptive_factor = "2"),
            quote!(adaptive_factor = -2.0),
        ] {
            let (_, errors) = policy(tokens.clone());
            assert_eq!(errors.len(), 1, "{tokens}");
            assert!(errors[0].starts_with("`adaptive_factor` expects a number of at least 1"));
        }
    }

    #[test]
    fn request_data_check_takes_a_path() {
        let (p, errors) = policy(quote!(request_data_check = ::my_crate::checks::has_key));
        assert!(errors.is_empty());
        assert!(p.request_data_check.is_some());
        for tokens in [
            quote!(request_data_check = |r| true),
            quote!(request_data_check = "has_key"),
            quote!(request_data_check = <T as Check>::check),
        ] {
            let (_, errors) = policy(tokens.clone());
            assert_eq!(errors.len(), 1, "{tokens}");
            assert!(
                errors[0].starts_with("`request_data_check` expects the path"),
                "{}",
                errors[0]
            );
        }
    }

    #[test]
    fn rules_in_every_form() {
        let (s, errors) = specific(quote!(
            rate_limit_rules = [
                (1, "2s"),
                "100/1h",
                "5 per minute",
                "20 per 1 second",
                " 3 / 500ms "
            ],
            standalone
        ));
        assert!(errors.is_empty(), "{errors:?}");
        let rules: Vec<(u32, u64)> = s.rules.iter().map(|r| (r.count, r.window_ms)).collect();
        assert_eq!(
            rules,
            [
                (1, 2_000),
                (100, 3_600_000),
                (5, 60_000),
                (20, 1_000),
                (3, 500)
            ]
        );
        assert!(s.standalone);
        assert!(
            !specific(quote!(rate_limit_rules = ["1/1s"], standalone = false))
                .0
                .standalone
        );
        assert!(!specific(quote!(rate_limit_rules = ["1/1s"])).0.standalone);
    }

    #[test]
    fn bad_rules_are_all_reported() {
        let (s, errors) = specific(quote!(
            rate_limit_rules = [
                (0, "1s"),
                "0/1s",
                (1, "0s"),
                "1/forever",
                (1, "2 fortnights"),
                "x/1s",
                "4294967296/1s",
                (1, 2),
                (1, "1s", 3),
                "20 a second",
                5,
                ("1", "1s")
            ]
        ));
        assert!(s.rules.is_empty());
        let want = [
            "a rule's count must be at least 1",
            "a rule's count must be at least 1",
            "a rule's window must be longer than zero",
            "a rule's window cannot be \"forever\"",
            "`2 fortnights` is not a duration",
            "`x` is not a request count",
            "a rule's count must be a whole number from 1 to 4294967295",
            "expected a window such as \"1s\"",
            "a rule has two parts",
            "`20 a second` is not a rule",
            "expected a rule;",
            "expected a request count such as `20`",
        ];
        assert_eq!(errors.len(), want.len(), "{errors:#?}");
        for (got, want) in errors.iter().zip(want) {
            assert!(got.starts_with(want), "{got:?} should start with {want:?}");
        }
    }

    #[test]
    fn specific_needs_a_non_empty_list_of_rules() {
        let needs = "#[specific] needs `rate_limit_rules = [..]`";
        for tokens in [quote!(), quote!(standalone)] {
            let (_, errors) = specific(tokens.clone());
            assert_eq!(errors.len(), 1, "{tokens}");
            assert!(errors[0].starts_with(needs), "{}", errors[0]);
        }
        let (_, errors) = specific(quote!(rate_limit_rules = []));
        assert!(errors[0].starts_with("`rate_limit_rules` is empty"));
        let (_, errors) = specific(quote!(rate_limit_rules = "1/1s"));
        assert!(errors[0].starts_with("`rate_limit_rules` expects a list"));
        // Given without a value, the key is there: one error, not two.
        assert_eq!(specific(quote!(rate_limit_rules)).1.len(), 1);
    }

    #[test]
    fn specific_keys_are_checked() {
        let (_, errors) = specific(quote!(rate_limit_rules = ["1/1s"], stand_alone));
        assert_eq!(errors, ["unknown key `stand_alone`; did you mean `standalone`? valid keys: rate_limit_rules, standalone, key, shadow, cost"]);
        let (_, errors) = specific(quote!(rate_limit_rules = ["1/1s"], standalone, standalone));
        assert_eq!(errors, ["`standalone` is given twice; keep one"]);
    }

    #[test]
    fn bypass_takes_nothing() {
        let mut errors = Errors::default();
        no_args(quote!(), &mut errors);
        assert!(errors.is_empty());
        no_args(quote!(standalone = true), &mut errors);
        assert_eq!(
            messages(errors),
            ["#[bypass] takes no arguments: write `#[bypass]` alone"]
        );
    }
}
