//! Code generation: one `static RouteSpec` per annotated handler, and a `wrap = ".."`
//! argument added to the handler's route attribute that installs `floodgate::RouteRules`.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{Attribute, ItemFn, LitStr, Meta};

use crate::args::{self, Errors, PolicyArgs, SpecificArgs};

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

const METHODS: &[&str] = &[
    "get", "post", "put", "delete", "patch", "head", "options", "trace", "connect", "route",
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

/// Expands one floodgate attribute, or reports its errors next to the untouched item.
pub(crate) fn attribute(kind: Kind, args: TokenStream, item: TokenStream) -> TokenStream {
    match expand(kind, args, item.clone()) {
        Ok(tokens) => tokens,
        Err(err) => {
            let err = err.to_compile_error();
            quote! { #err #item }
        }
    }
}

#[derive(Default)]
struct Spec {
    bypass: bool,
    specific: Option<SpecificArgs>,
    policy: Option<PolicyArgs>,
}

impl Spec {
    fn add(
        &mut self,
        kind: Kind,
        args: TokenStream,
        span: Span,
        seen: &mut Vec<Kind>,
        errors: &mut Errors,
    ) {
        if seen.contains(&kind) {
            errors.at(
                span,
                format!("{} is given twice on this handler", kind.name()),
            );
            return;
        }
        let conflict = match kind {
            Kind::Bypass => seen.iter().find(|k| **k != Kind::Bypass),
            _ => seen.iter().find(|k| **k == Kind::Bypass),
        };
        if let Some(other) = conflict {
            errors.at(
                span,
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
                args::no_args(args, errors);
                self.bypass = true;
            }
            Kind::Specific => self.specific = Some(SpecificArgs::parse(args, errors)),
            Kind::RateLimited => self.policy = Some(PolicyArgs::parse(args, errors)),
        }
    }
}

fn expand(kind: Kind, args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut func: ItemFn = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("{} goes on an actix-web handler function", kind.name()),
        )
    })?;
    let mut errors = Errors::default();
    let mut spec = Spec::default();
    let mut seen = Vec::new();
    spec.add(kind, args, Span::call_site(), &mut seen, &mut errors);

    // Other floodgate attributes on the same handler are merged into one spec.
    let mut kept = Vec::new();
    for attr in std::mem::take(&mut func.attrs) {
        match Kind::from_attr(&attr) {
            Some(other) => {
                let tokens = match &attr.meta {
                    Meta::Path(_) => TokenStream::new(),
                    Meta::List(list) => list.tokens.clone(),
                    Meta::NameValue(nv) => {
                        errors.at(
                            nv.span(),
                            format!("write {}(..), not {} = ..", other.name(), other.name()),
                        );
                        continue;
                    }
                };
                spec.add(other, tokens, attr.span(), &mut seen, &mut errors);
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
    if routes.is_empty() {
        errors.at(
            Span::call_site(),
            format!(
                "{} must be written above the handler's route attribute (#[get(..)], #[post(..)], #[route(..)], #[routes] ...): move it up. For routes registered with web::resource, wrap the resource with floodgate::RouteRules instead",
                kind.name()
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
    errors.finish()?;

    let name = &func.sig.ident;
    let static_name = format_ident!("__floodgate_route_{}", name);
    let spec_tokens = spec_tokens(&spec, &name.to_string());
    let wrap = format!("::floodgate::RouteRules::from_static(&{static_name})");
    for i in routes {
        add_wrap(&mut func.attrs[i], &wrap)?;
    }
    Ok(quote! {
        #[allow(non_upper_case_globals)]
        #[doc(hidden)]
        static #static_name: ::floodgate::__private::RouteSpec = #spec_tokens;
        #func
    })
}

/// Appends `wrap = ".."` to a route attribute's arguments.
fn add_wrap(attr: &mut Attribute, wrap: &str) -> syn::Result<()> {
    let Meta::List(list) = &mut attr.meta else {
        return Err(syn::Error::new(
            attr.span(),
            "expected a route attribute with arguments, such as #[get(\"/path\")]",
        ));
    };
    let trailing_comma = matches!(list.tokens.clone().into_iter().last(), Some(TokenTree::Punct(p)) if p.as_char() == ',');
    let lit = LitStr::new(wrap, Span::call_site());
    let tokens = &list.tokens;
    list.tokens = if trailing_comma || tokens.is_empty() {
        quote!(#tokens wrap = #lit)
    } else {
        quote!(#tokens, wrap = #lit)
    };
    Ok(())
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
                Some(path) => {
                    quote!(::core::option::Option::Some(#path as ::floodgate::RequestCheck))
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
        }
    }
}
