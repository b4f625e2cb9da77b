use actix_web::get;
use floodgate::rate_limited;

#[rate_limited(amount = 5, request_data_check = has_api_key)]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
