use actix_web::get;
use floodgate::rate_limited;

#[rate_limited(policy = "api", amount = 5, block_limit = 2)]
#[get("/a")]
async fn a() -> &'static str {
    "a"
}

fn main() {}
