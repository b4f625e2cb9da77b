use actix_web::get;
use floodgate::{bypass, specific};

#[specific(rate_limit_rules = [(1, "2s")])]
#[bypass]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
