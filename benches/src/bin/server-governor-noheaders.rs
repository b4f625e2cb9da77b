//! The `governor-noheaders` server of the HTTP benchmark (see `floodgate_bench::server`).

fn main() -> std::io::Result<()> {
    floodgate_bench::server::run(floodgate_bench::server::Config::GovernorNoHeaders)
}
