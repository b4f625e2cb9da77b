use actix_web::post;
use floodgate::{rate_limited, specific};

#[specific(rate_limit_rules = [(5, "15m")], count = [401], cost = 2)]
#[rate_limited(amount = 5, count = "4xx", cost = 3)]
#[post("/login")]
async fn login() -> &'static str {
    "ok"
}

fn main() {}
