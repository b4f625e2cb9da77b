use actix_web::get;
use floodgate::rate_limited;

fn is_internal(path: &str) -> bool {
    path.starts_with("/internal")
}

#[rate_limited(amount = 5, request_data_check = is_internal)]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
