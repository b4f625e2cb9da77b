//! Unit tests of `expand.rs`.

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
        route_attr_kind(&attr)
    };
    assert_eq!(route(quote!(#[get("/")])), Some(RouteAttr::Method));
    assert_eq!(route(quote!(#[query("/")])), Some(RouteAttr::Method));
    assert_eq!(
        route(quote!(#[actix_web::route("/", method = "GET")])),
        Some(RouteAttr::Method)
    );
    assert_eq!(route(quote!(#[routes])), Some(RouteAttr::Routes));
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
        out.contains("static __floodgate_route_handler : :: floodgate :: __private :: RouteSpec"),
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
