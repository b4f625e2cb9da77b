use actix_web::get;
use floodgate::specific;

#[specific(rate_limit_rules = ["twenty a second"])]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
