use floodgate::bypass;

#[bypass]
async fn index() -> &'static str {
    "ok"
}

fn main() {}
