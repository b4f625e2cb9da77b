use actix_web::{post, HttpRequest};
use floodgate::specific;

fn failed(_: &HttpRequest) -> bool {
    true
}

#[specific(rate_limit_rules = [(5, "15m")], count = failed)]
#[post("/login")]
async fn login() -> &'static str {
    "ok"
}

fn main() {}
