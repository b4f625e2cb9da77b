use actix_web::get;
use floodgate::rate_limited;

#[rate_limited(block_exceed_duration = "1h", adaptive_factor = 0.5)]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
