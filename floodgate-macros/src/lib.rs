//! Attribute macros of [floodgate](https://docs.rs/floodgate): `#[rate_limited]`,
//! `#[specific]` and `#[bypass]`. Use them through the `floodgate` crate, which re-exports
//! them; generated code names only `::floodgate::...` paths.
//!
//! Each attribute is written above an actix-web route attribute (`#[get]`, `#[post]`,
//! `#[route]`, `#[routes]`...). Written below it, or on a function without one, it is a
//! compile error that says where to move it.

use proc_macro::TokenStream;

mod args;
mod duration;
mod expand;
#[cfg(test)]
mod key_tests;

/// Applies a policy of the floodgate family to this handler: the app's default policy, with
/// the keys given here replacing its values.
///
/// Keys: `amount`, `time_window`, `block_duration`, `block_limit`, `block_exceed_duration`
/// (a duration or `"forever"`), `relative_block`, `block_exceed_reset`,
/// `max_window_duration` (a duration or `"forever"`), `accumulate_requests`,
/// `accumulate_cap`, `request_data_check` (a path to `fn(&HttpRequest) -> bool`),
/// `cooldown`, `grace_extra`, `grace_interval`, `adaptive_factor`, `adaptive_max`,
/// `adaptive_jitter`, `key` (a path to `fn(&HttpRequest) -> Option<K>`: this route's requests
/// are counted under that key instead of the IP). Durations are strings: `"500ms"`, `"2s"`, `"1m"`, `"1h"`, `"7d"`.
///
/// ```
/// use actix_web::{get, App};
/// use floodgate::{rate_limited, Floodgate};
///
/// #[rate_limited(amount = 20, time_window = "1m", block_limit = 5, block_exceed_duration = "forever")]
/// #[get("/rate-limited")]
/// async fn rate_limited_route() -> &'static str { "Hello!" }
///
/// let app = App::new().wrap(Floodgate::new()).service(rate_limited_route);
/// ```
#[proc_macro_attribute]
pub fn rate_limited(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(expand::Kind::RateLimited, args.into(), item.into()).into()
}

/// Adds rules of this handler's own, counted per client for this handler, on top of the
/// app's global rules; with `standalone`, only these rules apply. `key = path::to::fn`
/// (`fn(&HttpRequest) -> Option<K>`) counts this route's requests under that key instead of
/// the client's IP address.
///
/// ```
/// use actix_web::{get, App};
/// use floodgate::{specific, Floodgate};
///
/// #[specific(rate_limit_rules = [(1, "2s"), "100/1h", "5 per minute"], standalone)]
/// #[get("/standalone")]
/// async fn standalone() -> &'static str { "ok" }
///
/// let app = App::new().wrap(Floodgate::new()).service(standalone);
/// ```
#[proc_macro_attribute]
pub fn specific(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(expand::Kind::Specific, args.into(), item.into()).into()
}

/// Nothing applies on this handler: no rule, no counting, no ban check.
///
/// ```
/// use actix_web::{get, App};
/// use floodgate::{bypass, Floodgate};
///
/// #[bypass]
/// #[get("/health")]
/// async fn health() -> &'static str { "ok" }
///
/// let app = App::new().wrap(Floodgate::new()).service(health);
/// ```
#[proc_macro_attribute]
pub fn bypass(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(expand::Kind::Bypass, args.into(), item.into()).into()
}
