use actix_web::get;
use floodgate::rate_limited;

#[rate_limited(amount = 4294967296)]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
