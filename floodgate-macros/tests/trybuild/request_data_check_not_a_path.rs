use actix_web::get;
use floodgate::rate_limited;

#[rate_limited(amount = 5, request_data_check = |_req: &actix_web::HttpRequest| true)]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
