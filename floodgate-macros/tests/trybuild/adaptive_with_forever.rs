use actix_web::get;
use floodgate::rate_limited;

#[rate_limited(block_exceed_duration = "forever", adaptive_factor = 2.0)]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
