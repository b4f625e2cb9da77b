use actix_web::get;
use floodgate::rate_limited;

#[rate_limited(amount = 5, windw = "1m")]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
