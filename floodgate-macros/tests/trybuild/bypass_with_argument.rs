use actix_web::get;
use floodgate::bypass;

#[bypass(arg)]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
