use actix_web::{get, post};
use floodgate::{rate_limited, specific};

#[specific(rate_limit_rules = [(5, "15m")], count = "42x")]
#[post("/login")]
async fn login() -> &'static str {
    "ok"
}

#[rate_limited(amount = 5, count = [401, 1000])]
#[get("/a")]
async fn a() -> &'static str {
    "ok"
}

#[rate_limited(amount = 5, count = [])]
#[get("/b")]
async fn b() -> &'static str {
    "ok"
}

fn main() {}
