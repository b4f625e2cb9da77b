use actix_web::get;
use floodgate::rate_limited;

#[rate_limited(amount = 5, accumulate_requests = false, accumulate_cap = 10)]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
