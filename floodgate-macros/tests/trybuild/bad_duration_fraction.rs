use actix_web::get;
use floodgate::rate_limited;

#[rate_limited(block_duration = "1.5s")]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
