//! Code generation: one `static RouteSpec` per annotated handler, and a `wrap = ".."`
//! argument added to the handler's route attribute that installs `floodgate::RouteRules`.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Attribute, ItemFn, LitStr, Meta};

use crate::args::{self, CostArg, Errors, PolicyArgs, SpecificArgs};

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

/// An actix-web route attribute (`#[get(..)]`, `#[actix_web::post(..)]`, `#[route(..)]`), or
/// `#[routes]`.
fn route_attr(attr: &Attribute) -> Option<bool> {
    let path = attr.path();
    let last = path.segments.last()?.ident.to_string();
    let from_actix = path.segments.len() == 1
        || (path.segments.len() == 2 && path.segments[0].ident == "actix_web");
    if !from_actix {
        return None;
    }
    if last == "routes" {
        Some(false)
    } else {
        METHODS.contains(&last.as_str()).then_some(true)
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
        .filter(|(_, a)| route_attr(a) == Some(true))
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

fn opt_opt(v: &Option<Option<u64>>) -> TokenStream {
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
            let block_exceed_ms = opt_opt(&p.block_exceed_ms);
            let relative_block = opt(&p.relative_block);
            let block_exceed_reset = opt(&p.block_exceed_reset);
            let max_window_ms = opt_opt(&p.max_window_ms);
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(kind: Kind, args: TokenStream, item: TokenStream) -> String {
        attribute(kind, args, item).to_string()
    }

    #[test]
    fn wrap_is_appended_to_the_route_arguments() {
        for (route, want) in [
            (quote!(#[get("/x")]), r#"# [get ("/x" , wrap = "W")]"#),
            (quote!(#[get("/x",)]), r#"# [get ("/x" , wrap = "W")]"#),
            (
                quote!(#[get("/x", name = "n")]),
                r#"# [get ("/x" , name = "n" , wrap = "W")]"#,
            ),
            (quote!(#[routes()]), r#"# [routes (wrap = "W")]"#),
        ] {
            let mut attr: Attribute = syn::parse_quote!(#route);
            let mut errors = Errors::default();
            add_wrap(&mut attr, "W", &mut errors);
            assert!(errors.is_empty());
            assert_eq!(attr.to_token_stream().to_string(), want);
        }
        let mut attr: Attribute = syn::parse_quote!(#[get]);
        let mut errors = Errors::default();
        add_wrap(&mut attr, "W", &mut errors);
        assert!(!errors.is_empty());
    }

    #[test]
    fn route_attributes_are_recognised() {
        let route = |tokens: TokenStream| {
            let attr: Attribute = syn::parse_quote!(#tokens);
            route_attr(&attr)
        };
        assert_eq!(route(quote!(#[get("/")])), Some(true));
        assert_eq!(route(quote!(#[query("/")])), Some(true));
        assert_eq!(
            route(quote!(#[actix_web::route("/", method = "GET")])),
            Some(true)
        );
        assert_eq!(route(quote!(#[routes])), Some(false));
        assert_eq!(route(quote!(#[other::get("/")])), None);
        assert_eq!(route(quote!(#[inline])), None);
    }

    #[test]
    fn floodgate_attributes_are_recognised() {
        let kind = |tokens: TokenStream| {
            let attr: Attribute = syn::parse_quote!(#tokens);
            Kind::from_attr(&attr)
        };
        assert_eq!(kind(quote!(#[bypass])), Some(Kind::Bypass));
        assert_eq!(
            kind(quote!(#[floodgate::specific(x)])),
            Some(Kind::Specific)
        );
        assert_eq!(
            kind(quote!(#[::floodgate::rate_limited])),
            Some(Kind::RateLimited)
        );
        assert_eq!(kind(quote!(#[other::bypass])), None);
        assert_eq!(kind(quote!(#[get("/")])), None);
    }

    #[test]
    fn shadow_is_the_routes_in_either_attribute_and_allowed_beside_a_shared_policy() {
        let item = quote! {
            #[get("/x")]
            async fn handler() -> &'static str { "ok" }
        };
        for (kind, args) in [
            (
                Kind::Specific,
                quote!(rate_limit_rules = [(1, "2s")], shadow),
            ),
            (Kind::RateLimited, quote!(amount = 5, shadow)),
            (Kind::RateLimited, quote!(policy = "api", shadow)),
        ] {
            let out = expand_str(kind, args, item.clone());
            assert!(out.contains("shadow : true"), "{out}");
            assert!(!out.contains("compile_error"), "{out}");
        }
        let out = expand_str(Kind::RateLimited, quote!(amount = 5), item);
        assert!(out.contains("shadow : false"), "{out}");
    }

    #[test]
    fn a_valid_handler_gets_its_static_and_wrap() {
        let out = expand_str(
            Kind::Specific,
            quote!(rate_limit_rules = [(1, "2s")], standalone),
            quote! {
                #[get("/x")]
                async fn handler() -> &'static str { "ok" }
            },
        );
        assert!(
            out.contains(
                "static __floodgate_route_handler : :: floodgate :: __private :: RouteSpec"
            ),
            "{out}"
        );
        assert!(
            out.contains(r#"# [get ("/x" , wrap = "::floodgate::RouteRules::from_static(&__floodgate_route_handler)")]"#),
            "{out}"
        );
        assert!(out.contains("standalone : true"), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn merged_attributes_make_one_static() {
        let out = expand_str(
            Kind::Specific,
            quote!(rate_limit_rules = ["1/1s"]),
            quote! {
                #[floodgate::rate_limited(amount = 3)]
                #[get("/x")]
                async fn handler() -> &'static str { "ok" }
            },
        );
        assert_eq!(
            out.matches("static __floodgate_route_handler").count(),
            1,
            "{out}"
        );
        assert!(
            out.contains("amount : :: core :: option :: Option :: Some (3u32)"),
            "{out}"
        );
        // The merged attribute stays, reduced to its marker, so that its import is used.
        assert!(
            out.contains("# [floodgate :: rate_limited (__floodgate_merged)]"),
            "{out}"
        );
        assert!(!out.contains("amount = 3"), "{out}");
        // The marker expands to the item as it is.
        let item = quote!(
            async fn handler() {}
        );
        let again = attribute(Kind::RateLimited, quote!(__floodgate_merged), item.clone());
        assert_eq!(again.to_string(), item.to_string());
    }

    #[test]
    fn on_error_the_item_is_untouched_and_each_attribute_reports_its_own_errors() {
        let item = quote! {
            #[specific(rate_limit_rules = [(0, "1s")])]
            #[get("/x")]
            async fn handler() -> &'static str { "ok" }
        };
        let out = expand_str(Kind::RateLimited, quote!(amount = 0), item.clone());
        // Only `amount = 0`: `#[specific]` reports its rule when it expands in turn.
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
        assert!(out.contains("`amount` must be at least 1"), "{out}");
        assert!(out.ends_with(&item.to_string()), "{out}");
        assert!(!out.contains("__floodgate_route"), "{out}");

        // Fine itself, but a merged attribute is wrong: no error here, the item untouched.
        let out = expand_str(Kind::RateLimited, quote!(amount = 1), item.clone());
        assert_eq!(out, item.to_string());
    }

    #[test]
    fn errors_between_attributes_are_reported_by_the_first() {
        let out = expand_str(
            Kind::Bypass,
            quote!(),
            quote! {
                #[specific(rate_limit_rules = [(1, "1s")])]
                #[get("/x")]
                async fn handler() -> &'static str { "ok" }
            },
        );
        assert!(
            out.contains("#[specific] cannot be combined with #[bypass]"),
            "{out}"
        );
        let out = expand_str(
            Kind::RateLimited,
            quote!(),
            quote! {
                #[floodgate::rate_limited(amount = 0)]
                #[get("/x")]
                async fn handler() -> &'static str { "ok" }
            },
        );
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
        assert!(out.contains("#[rate_limited] is given twice"), "{out}");
    }

    #[test]
    fn never_panics() {
        let items = [
            quote!(),
            quote!(
                struct S;
            ),
            quote!(fn),
            quote!(
                #[get("/")]
                async fn f() {}
            ),
            quote!(
                #[get]
                async fn f() {}
            ),
            quote!(
                #[get = "/"]
                async fn f() {}
            ),
            quote!(
                #[routes]
                async fn f() {}
            ),
            quote!(
                #[bypass = 1]
                #[specific]
                #[rate_limited(amount)]
                #[get("/")]
                async fn f() {}
            ),
            quote!(
                #[get("/")]
                async fn r#type() {}
            ),
        ];
        let args = [
            quote!(),
            quote!(,),
            quote!(=),
            quote!(amount =),
            quote!(amount = = 1),
            quote!(rate_limit_rules = [(), (1,), "/", " per ", "1/", "/1s"]),
            quote!(
                rate_limit_rules = [(18446744073709551616, "1s")],
                standalone = 1
            ),
            quote!(amount = 99999999999999999999999, adaptive_factor = 1e400),
            quote!(time_window = "\u{1F600}", cooldown = "9999999999999999999w"),
            quote!(self = 1, crate, super = "x", r#type = 1),
        ];
        for kind in [Kind::RateLimited, Kind::Specific, Kind::Bypass] {
            for item in &items {
                for args in &args {
                    let _ = attribute(kind, args.clone(), item.clone());
                }
            }
        }
    }
}
