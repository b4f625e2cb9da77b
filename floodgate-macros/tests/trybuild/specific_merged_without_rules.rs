use actix_web::get;
use floodgate::{rate_limited, specific};

// The error is on the attribute that lacks the key, even when another one expands it.
#[rate_limited(amount = 5)]
#[specific(standalone)]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
