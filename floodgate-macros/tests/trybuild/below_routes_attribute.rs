use actix_web::routes;
use floodgate::specific;

#[routes]
#[specific(rate_limit_rules = [(1, "2s")])]
#[get("/a")]
#[post("/b")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
