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
/// the keys given here replacing its values; or, with `policy = "name"`, a policy registered
/// on the app with `Floodgate::policy` and shared by every route naming it (one window, one
/// block count and one punishment per client across them; no other key may be given beside
/// it).
///
/// Write it above the route attribute (`#[get(..)]`, `#[post(..)]`, `#[route(..)]`,
/// `#[routes]`); below it, it is a compile error saying to move it up. It may be stacked
/// with `#[specific]` on one handler: both apply.
///
/// | key | meaning (default, from the app's default policy) |
/// |---|---|
/// | `amount`, `time_window` | requests allowed per window (20 per `"1m"`); request amount+1 blocks the client (429) |
/// | `block_duration` | how long a block lasts (`time_window`) |
/// | `relative_block` | `false`: a block ends `block_duration` after the first refused request; `true`: every refused request pushes the end (`false`) |
/// | `block_limit` | blocks allowed before a punishment; each block counts once (5) |
/// | `block_exceed_duration` | the punishment: a 403 ban of this length, or `"forever"` to blacklist until an operator unbans (`"1d"`) |
/// | `block_exceed_reset` | `true`: the block count returns to 0 when a punishment ends; `false`: it stays at the limit, so the next block punishes again (`true`) |
/// | `max_window_duration` | a client record idle this long is deleted; `"forever"` keeps it (`"30d"`) |
/// | `accumulate_requests`, `accumulate_cap` | unused quota of an ended window carries into the next, capped (at `amount` extra) |
/// | `request_data_check` | a path to `fn(&HttpRequest) -> bool`; true: served without being counted or checked in any rule, even while the client is blocked; bans and punishments still apply |
/// | `cooldown` | minimum interval between two requests of a client; a sooner one gets 429 and does not count as a block |
/// | `grace_extra`, `grace_interval` | a client with no block and no grace in the last `grace_interval` (`"1d"`) may exceed the allowance by `grace_extra` requests in one window without being blocked |
/// | `adaptive_factor`, `adaptive_max`, `adaptive_jitter` | the n-th punishment lasts `block_exceed_duration` × factor^n, capped at `adaptive_max` (`"30d"`), plus a random 0..=`adaptive_jitter` |
/// | `key` | a path to `fn(&HttpRequest) -> Option<K>`: this route's requests are counted under that key instead of the IP address |
/// | `policy` | the name of a policy registered with `Floodgate::policy`, shared with every route naming it |
///
/// Durations are strings: `"500ms"`, `"2s"`, `"1m"`, `"1h"`, `"7d"`, and `"forever"` where
/// the table says so. Unknown or duplicate keys, bad durations and impossible combinations
/// are compile errors.
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
/// Write it above the route attribute (`#[get(..)]`, `#[post(..)]`, `#[route(..)]`,
/// `#[routes]`). It may be stacked with `#[rate_limited]` on one handler: both apply.
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

/// Nothing applies on this handler: no rule, no counting, no ban check. Write it above the
/// route attribute; it cannot be combined with `#[specific]` or `#[rate_limited]`.
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
