use actix_web::get;
use floodgate::rate_limited;

#[get("/")]
#[rate_limited(amount = 5)]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
