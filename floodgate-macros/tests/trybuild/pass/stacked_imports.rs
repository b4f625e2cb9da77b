#![deny(unused_imports)]
//! Stacked attributes: the lower one is merged into the upper one, and its import still
//! counts as used (no "unused import" warning for a form the docs allow).

use actix_web::{get, App};
use floodgate::{bypass, rate_limited, specific, Floodgate};

#[rate_limited(amount = 5, time_window = "1m")]
#[specific(rate_limit_rules = [(1, "1s")])]
#[get("/stacked")]
async fn stacked() -> &'static str {
    "ok"
}

#[bypass]
#[get("/health")]
async fn health() -> &'static str {
    "ok"
}

fn main() {
    let _ = App::new()
        .wrap(Floodgate::new())
        .service(stacked)
        .service(health);
}
