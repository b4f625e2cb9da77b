use actix_web::get;
use floodgate::specific;

#[specific(rate_limit_rule = [(1, "2s")])]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
