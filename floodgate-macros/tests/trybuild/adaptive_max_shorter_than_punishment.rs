use actix_web::get;
use floodgate::rate_limited;

#[rate_limited(block_exceed_duration = "1d", adaptive_max = "1h")]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
