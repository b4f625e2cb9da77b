//! Unit tests of `args.rs`.

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
    assert_eq!(errors, ["unknown key `stand_alone`; did you mean `standalone`? valid keys: rate_limit_rules, standalone, key, shadow, cost, count"]);
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

#[test]
fn count_is_a_class_a_status_list_or_a_path_in_either_attribute() {
    let count = |t| specific(t).0.count;
    assert!(matches!(
        count(quote!(rate_limit_rules = ["1/1s"], count = "4xx")),
        Some(CountArg::Class(4))
    ));
    assert!(matches!(
        count(quote!(rate_limit_rules = ["1/1s"], count = "401")),
        Some(CountArg::Statuses(s)) if s == [401]
    ));
    assert!(matches!(
        policy(quote!(amount = 5, count = [401, 403])).0.count,
        Some(CountArg::Statuses(s)) if s == [401, 403]
    ));
    assert!(matches!(
        policy(quote!(amount = 5, count = checks::failed)).0.count,
        Some(CountArg::Fn(_))
    ));
    // `count` is the route's: allowed beside a shared policy.
    let (args, errors) = policy(quote!(policy = "login", count = "4xx"));
    assert!(errors.is_empty(), "{errors:?}");
    assert!(matches!(args.count, Some(CountArg::Class(4))));
}

#[test]
fn count_rejects_what_is_not_a_status() {
    for (tokens, needle) in [
        (quote!(amount = 5, count = "42x"), "neither a status class"),
        (quote!(amount = 5, count = "6xx"), "neither a status class"),
        (quote!(amount = 5, count = [401, 1000]), "from 100 to 999"),
        (quote!(amount = 5, count = []), "is empty"),
        (quote!(amount = 5, count = 1.5), "`count` expects"),
    ] {
        let (args, errors) = policy(tokens.clone());
        assert!(args.count.is_none(), "{tokens}");
        assert_eq!(errors.len(), 1, "{tokens}: {errors:?}");
        assert!(errors[0].contains(needle), "{tokens}: {errors:?}");
    }
}
