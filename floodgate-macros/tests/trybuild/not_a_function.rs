use floodgate::rate_limited;

#[rate_limited]
struct Index;

fn main() {}
