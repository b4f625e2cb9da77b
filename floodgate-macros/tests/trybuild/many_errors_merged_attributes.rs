use actix_web::get;
use floodgate::{rate_limited, specific};

// Errors in several floodgate attributes of one handler are reported once each, together.
#[specific(rate_limit_rules = [(0, "1s"), "5/1 eon"])]
#[rate_limited(amount = 0)]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
