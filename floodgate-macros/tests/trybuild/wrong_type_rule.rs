use actix_web::get;
use floodgate::specific;

#[specific(rate_limit_rules = [(1, 2)])]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
