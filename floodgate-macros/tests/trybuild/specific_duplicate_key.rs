use actix_web::get;
use floodgate::specific;

#[specific(rate_limit_rules = [(1, "2s")], rate_limit_rules = ["5/1m"])]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
