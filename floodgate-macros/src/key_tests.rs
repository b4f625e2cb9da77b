//! The `key = path::to::fn` argument of `#[specific]` and `#[rate_limited]`.

use quote::quote;

use crate::expand::{attribute, Kind};

fn expand(kind: Kind, args: proc_macro2::TokenStream) -> String {
    let item = quote! {
        #[get("/x")]
        async fn handler() -> &'static str { "ok" }
    };
    attribute(kind, args, item).to_string()
}

#[test]
fn a_key_path_becomes_the_routes_extractor() {
    let out = expand(
        Kind::Specific,
        quote!(rate_limit_rules = [(1, "1s")], key = crate::api_key),
    );
    assert!(!out.contains("compile_error"), "{out}");
    assert!(out.contains("RouteKey :: Fn"), "{out}");
    assert!(out.contains("crate :: api_key (req)"), "{out}");
    let out = expand(Kind::RateLimited, quote!(amount = 2, key = user_of));
    assert!(
        !out.contains("compile_error") && out.contains("user_of (req)"),
        "{out}"
    );
    let out = expand(Kind::RateLimited, quote!(amount = 2));
    assert!(
        out.contains("key : :: core :: option :: Option :: None"),
        "{out}"
    );
}

#[test]
fn a_bad_or_doubled_key_is_a_compile_error() {
    let out = expand(
        Kind::Specific,
        quote!(rate_limit_rules = [(1, "1s")], key = "x-api-key"),
    );
    assert!(
        out.contains("compile_error") && out.contains("`key` expects the path"),
        "{out}"
    );
    let out = expand(Kind::Specific, quote!(rate_limit_rules = [(1, "1s")], key));
    assert!(out.contains("`key` needs a value"), "{out}");
    let out = expand(
        Kind::Specific,
        quote!(rate_limit_rules = [(1, "1s")], key = a, key = b),
    );
    assert!(out.contains("`key` is given twice"), "{out}");
    let item = quote! {
        #[rate_limited(amount = 1, key = b)]
        #[get("/x")]
        async fn handler() -> &'static str { "ok" }
    };
    let out = attribute(
        Kind::Specific,
        quote!(rate_limit_rules = [(1, "1s")], key = a),
        item,
    );
    assert!(out.to_string().contains("given in both"), "{out}");
}
