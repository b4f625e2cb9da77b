//! Code generation: one `static RouteSpec` per annotated handler, and a `wrap = ".."`
//! argument added to the handler's route attribute that installs `floodgate::RouteRules`.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Attribute, ItemFn, LitStr, Meta};

use crate::args::{self, CostArg, CountArg, Errors, PolicyArgs, SpecificArgs};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    RateLimited,
    Specific,
    Bypass,
}

impl Kind {
    fn from_attr(attr: &Attribute) -> Option<Kind> {
        let path = attr.path();
        let last = path.segments.last()?.ident.to_string();
        let ours = path.segments.len() == 1
            || (path.segments.len() == 2 && path.segments[0].ident == "floodgate");
        if !ours {
            return None;
        }
        match last.as_str() {
            "rate_limited" => Some(Kind::RateLimited),
            "specific" => Some(Kind::Specific),
            "bypass" => Some(Kind::Bypass),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::RateLimited => "#[rate_limited]",
            Kind::Specific => "#[specific]",
            Kind::Bypass => "#[bypass]",
        }
    }
}

/// actix-web's route attributes (actix-web-codegen 4.5 added `query`).
const METHODS: &[&str] = &[
    "get", "post", "put", "delete", "patch", "head", "options", "trace", "connect", "query",
    "route",
];

/// What kind of actix-web route attribute an attribute is, if it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteAttr {
    /// `#[get(..)]`, `#[actix_web::post(..)]`, `#[route(..)]`: one route.
    Method,
    /// `#[routes]`, which gathers several method attributes below it.
    Routes,
}

/// The kind of route attribute `attr` is; `None` for any other attribute.
fn route_attr_kind(attr: &Attribute) -> Option<RouteAttr> {
    let path = attr.path();
    let last = path.segments.last()?.ident.to_string();
    let from_actix = path.segments.len() == 1
        || (path.segments.len() == 2 && path.segments[0].ident == "actix_web");
    if !from_actix {
        return None;
    }
    if last == "routes" {
        Some(RouteAttr::Routes)
    } else {
        METHODS
            .contains(&last.as_str())
            .then_some(RouteAttr::Method)
    }
}

/// The argument that marks an attribute already merged into the one above it.
const MERGED: &str = "__floodgate_merged";

/// Expands one floodgate attribute, or reports its errors next to the item.
pub(crate) fn attribute(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    // Merged into the attribute above, which left it in place (with the path the user
    // wrote) so that its import counts as used: nothing more to do.
    if is_merged_marker(&args) {
        return item;
    }
    match expand(kind, args, item) {
        Ok(tokens) | Err(tokens) => tokens,
    }
}

#[derive(Default)]
struct Spec {
    bypass: bool,
    specific: Option<SpecificArgs>,
    policy: Option<PolicyArgs>,
}

impl Spec {
    /// Adds one floodgate attribute. `site` is the whole attribute, where errors about the
    /// attribute as a whole go. Errors between attributes (given twice, bypass with rules) go
    /// to `between`; errors in this attribute's own arguments go to `own`.
    fn add(
        &mut self,
        kind: Kind,
        args: TokenStream,
        site: &TokenStream,
        seen: &mut Vec<Kind>,
        between: &mut Errors,
        own: &mut Errors,
    ) {
        if seen.contains(&kind) {
            between.spanned(
                site,
                format!(
                    "{} is given twice on this handler: merge the two into one",
                    kind.name()
                ),
            );
            return;
        }
        let conflict = match kind {
            Kind::Bypass => seen.iter().find(|k| **k != Kind::Bypass),
            _ => seen.iter().find(|k| **k == Kind::Bypass),
        };
        if let Some(other) = conflict {
            between.spanned(
                site,
                format!(
                    "{} cannot be combined with {}: a bypassed route has no rules at all",
                    kind.name(),
                    other.name()
                ),
            );
        }
        seen.push(kind);
        match kind {
            Kind::Bypass => {
                args::no_args(args, own);
                self.bypass = true;
            }
            Kind::Specific => self.specific = Some(SpecificArgs::parse(args, site, own)),
            Kind::RateLimited => self.policy = Some(PolicyArgs::parse(args, own)),
        }
    }
}

fn is_merged_marker(args: &TokenStream) -> bool {
    let mut tokens = args.clone().into_iter();
    matches!((tokens.next(), tokens.next()), (Some(TokenTree::Ident(i)), None) if i == MERGED)
}

/// `attr` (a floodgate attribute merged into the one above) reduced to its marker: the same
/// path, so that the user's import of it is used, and no arguments to expand again.
fn merged_marker(attr: &Attribute) -> Attribute {
    let path = attr.path();
    let marker = proc_macro2::Ident::new(MERGED, Span::call_site());
    let mut out: Attribute = syn::parse_quote!(#[#path(#marker)]);
    out.pound_token = attr.pound_token;
    out
}

/// The expansion, or on error the errors and the untouched item.
///
/// The other floodgate attributes of the handler (those below this one) are merged into
/// this expansion when all is well. When anything is wrong, the item is emitted untouched,
/// so those attributes expand next, each reporting the errors in its own arguments itself;
/// this expansion reports only its own errors and those between attributes, so that every
/// error is reported exactly once.
fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> Result<TokenStream, TokenStream> {
    let mut func: ItemFn = match syn::parse2(item.clone()) {
        Ok(func) => func,
        Err(e) => {
            let err = syn::Error::new(
                e.span(),
                format!(
                    "{} goes on an actix-web handler function (`async fn` with a route attribute)",
                    kind.name()
                ),
            )
            .to_compile_error();
            return Err(quote! { #err #item });
        }
    };
    let mut errors = Errors::default();
    let mut spec = Spec::default();
    let mut seen = Vec::new();
    // Errors about this attribute as a whole go on it: the call site.
    let call_site = quote_spanned!(Span::call_site()=> _);
    let mut own = Errors::default();
    spec.add(kind, args, &call_site, &mut seen, &mut errors, &mut own);
    errors.append(own);

    // Other floodgate attributes on the same handler are merged into one spec. Errors in
    // their arguments are collected only to know that this expansion must step aside: each
    // of those attributes reports them itself when it expands (see above).
    let mut deferred = Errors::default();
    let mut key_value_form = false;
    let untouched_attrs = func.attrs.clone();
    let mut kept = Vec::new();
    for attr in std::mem::take(&mut func.attrs) {
        match Kind::from_attr(&attr) {
            Some(other) => {
                let tokens = match &attr.meta {
                    Meta::Path(_) => TokenStream::new(),
                    Meta::List(list) => list.tokens.clone(),
                    Meta::NameValue(_) => {
                        // `#[specific = ..]`: rustc rejects it when it expands it in turn.
                        key_value_form = true;
                        continue;
                    }
                };
                let site = attr.to_token_stream();
                spec.add(other, tokens, &site, &mut seen, &mut errors, &mut deferred);
                kept.push(merged_marker(&attr));
            }
            None => kept.push(attr),
        }
    }
    func.attrs = kept;

    let routes: Vec<usize> = func
        .attrs
        .iter()
        .enumerate()
        .filter(|(_, a)| route_attr_kind(a) == Some(RouteAttr::Method))
        .map(|(i, _)| i)
        .collect();
    // Reported by each floodgate attribute for itself: each of them is misplaced.
    if routes.is_empty() {
        let name = kind.name();
        errors.at(
            Span::call_site(),
            format!(
                "move {name} up, above the handler's route attribute (#[get(..)], #[post(..)], #[route(..)] or #[routes]): it found none below it. For routes registered with web::resource, wrap the resource with floodgate::RouteRules instead"
            ),
        );
    }
    if let (Some(_), Some(b)) = (
        spec.specific.as_ref().and_then(|s| s.key.as_ref()),
        spec.policy.as_ref().and_then(|p| p.key.as_ref()),
    ) {
        errors.at(
            b.span(),
            "`key` is given in both #[specific] and #[rate_limited]; give it once",
        );
    }
    // `cost` and `count` are the route's: given in both attributes, one would be ignored.
    if let (Some(s), Some(p)) = (&spec.specific, &spec.policy) {
        for (key, in_specific) in [("cost", s.cost.is_some()), ("count", s.count.is_some())] {
            if let Some((_, span)) = p.given.iter().find(|(k, _)| k == key) {
                if in_specific {
                    errors.at(
                        *span,
                        format!(
                            "`{key}` is given in both #[specific] and #[rate_limited]; it is \
                             the route's: give it once"
                        ),
                    );
                }
            }
        }
    }
    let name = &func.sig.ident;
    let static_name = format_ident!("__floodgate_route_{}", name);
    let wrap = format!("::floodgate::RouteRules::from_static(&{static_name})");
    let step_aside = key_value_form || !deferred.is_empty();
    if errors.is_empty() && !step_aside {
        for &i in &routes {
            add_wrap(&mut func.attrs[i], &wrap, &mut errors);
        }
    }
    if !errors.is_empty() || step_aside || routes.is_empty() {
        func.attrs = untouched_attrs;
        let err = errors.finish().err().map(|e| e.to_compile_error());
        return Err(quote! { #err #func });
    }

    let spec_tokens = spec_tokens(&spec, &name.to_string());
    Ok(quote! {
        #[allow(non_upper_case_globals)]
        #[doc(hidden)]
        static #static_name: ::floodgate::__private::RouteSpec = #spec_tokens;
        #func
    })
}

/// Appends `wrap = ".."` to a route attribute's arguments.
fn add_wrap(attr: &mut Attribute, wrap: &str, errors: &mut Errors) {
    let Meta::List(list) = &mut attr.meta else {
        errors.spanned(
            &*attr,
            "expected a route attribute with arguments, such as #[get(\"/path\")]",
        );
        return;
    };
    let trailing_comma = matches!(list.tokens.clone().into_iter().last(), Some(TokenTree::Punct(p)) if p.as_char() == ',');
    let lit = LitStr::new(wrap, Span::call_site());
    let tokens = &list.tokens;
    list.tokens = if trailing_comma || tokens.is_empty() {
        quote!(#tokens wrap = #lit)
    } else {
        quote!(#tokens, wrap = #lit)
    };
}

fn opt<T: quote::ToTokens>(v: &Option<T>) -> TokenStream {
    match v {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

fn nested_option_tokens(v: &Option<Option<u64>>) -> TokenStream {
    match v {
        Some(inner) => {
            let inner = opt(inner);
            quote!(::core::option::Option::Some(#inner))
        }
        None => quote!(::core::option::Option::None),
    }
}

fn spec_tokens(spec: &Spec, fn_name: &str) -> TokenStream {
    let bypass = spec.bypass;
    let (rules, standalone) = match &spec.specific {
        Some(s) => {
            let rules = s.rules.iter().map(|r| {
                let (count, ms) = (r.count, r.window_ms);
                quote!(::floodgate::Rule::new(#count, ::floodgate::__private::Duration::from_millis(#ms)))
            });
            (quote!(#(#rules),*), s.standalone)
        }
        None => (TokenStream::new(), false),
    };
    let policy = match &spec.policy {
        None => quote!(::core::option::Option::None),
        Some(PolicyArgs {
            shared: Some(name), ..
        }) => quote! {
            ::core::option::Option::Some(::floodgate::__private::PolicySpec::Shared(
                ::floodgate::__private::Cow::Borrowed(#name)
            ))
        },
        Some(p) => {
            let amount = opt(&p.amount);
            let time_window_ms = opt(&p.time_window_ms);
            let block_duration_ms = opt(&p.block_duration_ms);
            let block_limit = opt(&p.block_limit);
            let block_exceed_ms = nested_option_tokens(&p.block_exceed_ms);
            let relative_block = opt(&p.relative_block);
            let block_exceed_reset = opt(&p.block_exceed_reset);
            let max_window_ms = nested_option_tokens(&p.max_window_ms);
            let accumulate = opt(&p.accumulate);
            let accumulate_cap = opt(&p.accumulate_cap);
            let cooldown_ms = opt(&p.cooldown_ms);
            let grace = match p.grace_extra {
                Some(extra) => {
                    let interval = p.grace_interval_ms.unwrap_or(86_400_000);
                    quote!(::core::option::Option::Some((#extra, #interval)))
                }
                None => quote!(::core::option::Option::None),
            };
            let adaptive = if p.adaptive_factor.is_some()
                || p.adaptive_max_ms.is_some()
                || p.adaptive_jitter_ms.is_some()
            {
                let factor = p.adaptive_factor.unwrap_or(2.0);
                let max = p.adaptive_max_ms.unwrap_or(30 * 86_400_000);
                let jitter = p.adaptive_jitter_ms.unwrap_or(0);
                quote!(::core::option::Option::Some((#factor, #max, #jitter)))
            } else {
                quote!(::core::option::Option::None)
            };
            let check = match &p.request_data_check {
                // A typed `let`, not an `as` cast: a function of the wrong signature is then a
                // "mismatched types" error on the user's path, not an "invalid cast" on the
                // whole attribute.
                Some(path) => {
                    let ty = quote_spanned!(path.span()=> ::floodgate::RequestCheck);
                    quote!(::core::option::Option::Some({
                        let __floodgate_check: #ty = #path;
                        __floodgate_check
                    }))
                }
                None => quote!(::core::option::Option::None),
            };
            quote! {
                ::core::option::Option::Some(::floodgate::__private::PolicySpec::Overrides(
                    ::floodgate::__private::PolicyOverrides {
                        amount: #amount,
                        time_window_ms: #time_window_ms,
                        block_duration_ms: #block_duration_ms,
                        block_limit: #block_limit,
                        block_exceed_ms: #block_exceed_ms,
                        relative_block: #relative_block,
                        block_exceed_reset: #block_exceed_reset,
                        max_window_ms: #max_window_ms,
                        accumulate: #accumulate,
                        accumulate_cap: #accumulate_cap,
                        cooldown_ms: #cooldown_ms,
                        grace: #grace,
                        adaptive: #adaptive,
                        request_data_check: #check,
                    }
                ))
            }
        }
    };
    let shadow = spec.specific.as_ref().is_some_and(|s| s.shadow)
        || spec.policy.as_ref().is_some_and(|p| p.shadow);
    let cost_arg = spec
        .specific
        .as_ref()
        .and_then(|s| s.cost.as_ref())
        .or(spec.policy.as_ref().and_then(|p| p.cost.as_ref()));
    let cost = match cost_arg {
        None => quote!(::core::option::Option::None),
        Some(CostArg::Units(n)) => {
            quote!(::core::option::Option::Some(::floodgate::__private::RouteCost::Units(#n)))
        }
        Some(CostArg::Fn(path)) => quote! {
            ::core::option::Option::Some(::floodgate::__private::RouteCost::Fn({
                fn __floodgate_cost(req: &::floodgate::__private::HttpRequest) -> u32 {
                    #path(req)
                }
                __floodgate_cost
            }))
        },
    };
    let count_arg = spec
        .specific
        .as_ref()
        .and_then(|s| s.count.as_ref())
        .or(spec.policy.as_ref().and_then(|p| p.count.as_ref()));
    let count = match count_arg {
        None => quote!(::core::option::Option::None),
        Some(CountArg::Class(c)) => {
            quote!(::core::option::Option::Some(::floodgate::__private::CountWhen::Class(#c)))
        }
        Some(CountArg::Statuses(list)) => quote! {
            ::core::option::Option::Some(::floodgate::__private::CountWhen::Statuses(
                ::floodgate::__private::Cow::Borrowed(&[#(#list),*]),
            ))
        },
        Some(CountArg::Fn(path)) => quote! {
            ::core::option::Option::Some(::floodgate::__private::CountWhen::Fn({
                fn __floodgate_count(res: &::floodgate::__private::ServiceResponse) -> bool {
                    #path(res)
                }
                __floodgate_count
            }))
        },
    };
    let key_path = spec
        .specific
        .as_ref()
        .and_then(|s| s.key.as_ref())
        .or(spec.policy.as_ref().and_then(|p| p.key.as_ref()));
    let key = match key_path {
        Some(path) => quote! {
            ::core::option::Option::Some(::floodgate::__private::RouteKey::Fn({
                fn __floodgate_key(
                    req: &::floodgate::__private::HttpRequest,
                ) -> ::core::option::Option<::floodgate::ClientKey> {
                    ::floodgate::__private::into_key(#path(req))
                }
                __floodgate_key
            }))
        },
        None => quote!(::core::option::Option::None),
    };
    quote! {
        ::floodgate::__private::RouteSpec {
            name: ::floodgate::__private::Cow::Borrowed(::core::concat!(::core::module_path!(), "::", #fn_name)),
            bypass: #bypass,
            rules: ::floodgate::__private::Cow::Borrowed(&[#rules]),
            standalone: #standalone,
            policy: #policy,
            key: #key,
            shadow: #shadow,
            cost: #cost,
            count: #count,
        }
    }
}

#[cfg(test)]
mod tests;
