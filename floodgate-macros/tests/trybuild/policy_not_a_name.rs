use actix_web::get;
use floodgate::rate_limited;

#[rate_limited(policy = api)]
#[get("/a")]
async fn a() -> &'static str {
    "a"
}

fn main() {}
