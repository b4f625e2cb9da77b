use actix_web::get;
use floodgate::{bypass, specific};

#[bypass]
#[specific(rate_limit_rules = [(1, "2s")])]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
