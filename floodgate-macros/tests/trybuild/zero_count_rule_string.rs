use actix_web::get;
use floodgate::specific;

#[specific(rate_limit_rules = ["0/1s"])]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
