use actix_web::get;
use floodgate::{rate_limited, specific};

// Each misplaced attribute is reported.
#[get("/")]
#[rate_limited(amount = 5)]
#[specific(rate_limit_rules = [(1, "2s")])]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
