use actix_web::get;
use floodgate::specific;

#[specific(standalone)]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
