use actix_web::get;
use floodgate::rate_limited;

#[rate_limited(time_window = 60)]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
