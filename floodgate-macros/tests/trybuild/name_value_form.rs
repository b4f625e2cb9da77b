use actix_web::get;
use floodgate::{rate_limited, specific};

#[rate_limited]
#[specific = "1/2s"]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
