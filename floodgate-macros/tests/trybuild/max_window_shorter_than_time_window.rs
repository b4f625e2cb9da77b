use actix_web::get;
use floodgate::rate_limited;

#[rate_limited(time_window = "1h", max_window_duration = "10m")]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
