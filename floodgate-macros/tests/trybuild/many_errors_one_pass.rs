use actix_web::get;
use floodgate::rate_limited;

// Every problem of the attribute is reported in one compilation, not one per fix.
#[rate_limited(
    amount = 0,
    time_window = "2 fortnights",
    windw = "1m",
    block_limit = 3,
    block_limit = 4,
    relative_block = "yes",
    max_window_duration = 30
)]
#[get("/")]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
