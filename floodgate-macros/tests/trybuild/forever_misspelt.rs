use actix_web::get;
use floodgate::rate_limited;

#[rate_limited(block_exceed_duration = "forevr")]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
