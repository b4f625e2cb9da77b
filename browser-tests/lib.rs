//! The admin dashboard driven in a real headless browser: see `tests/dashboard.rs`. The tests
//! skip with a notice when `chromedriver` is not installed, unless
//! `FLOODGATE_REQUIRE_BROWSER=1` (set by CI, which installs Debian's `chromium` and
//! `chromium-driver`) makes that a failure.
