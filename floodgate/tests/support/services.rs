//! Suites that need a service installed (a `redis-server` they start themselves), on machines
//! without it.
//!
//! Each test of such a suite asks [`available`] first. When the programs are on `PATH` the
//! test runs. When one is missing, the test returns early after a one-line notice on stderr
//! (once per test binary, written past the test harness's output capture so that it shows in
//! `cargo test`'s output), so the README's `cargo test --workspace --all-features` passes on a
//! machine with nothing but a Rust toolchain. With `FLOODGATE_REQUIRE_REDIS=1` in the
//! environment (`.ci/run` sets it) a missing program fails the test instead: CI never skips a
//! service suite.
//!
//! Shared by `floodgate/tests/redis_store.rs` and `tests/examples_e2e.rs` through `#[path]`.

use std::io::Write;
use std::path::Path;
use std::sync::Once;

/// The environment variable that turns a skipped service suite into a failure.
pub(crate) const REQUIRE_REDIS: &str = "FLOODGATE_REQUIRE_REDIS";

/// Whether every program of `programs` is on `PATH`, so that `suite` can run. When one is
/// not: panics if `FLOODGATE_REQUIRE_REDIS=1`, otherwise prints the notice (once) and returns
/// false, and the caller returns early.
pub(crate) fn available(suite: &str, programs: &[&str]) -> bool {
    let Some(missing) = programs.iter().find(|p| !on_path(p)) else {
        return true;
    };
    if std::env::var(REQUIRE_REDIS).is_ok_and(|v| v == "1") {
        panic!(
            "{REQUIRE_REDIS}=1 but `{missing}` is not on PATH, so {suite} cannot run: \
             install it (apt-get install redis-server)"
        );
    }
    static NOTICE: Once = Once::new();
    NOTICE.call_once(|| {
        // Straight to the stderr handle: libtest captures `eprintln!`, not this.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {suite}: `{missing}` is not on PATH (apt-get install redis-server; \
             {REQUIRE_REDIS}=1 makes this a failure)"
        );
    });
    false
}

/// Whether an executable file named `program` is in a directory of `PATH`.
fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
}

#[cfg(unix)]
fn is_executable(file: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    file.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(file: &Path) -> bool {
    file.with_extension("exe").is_file() || file.is_file()
}
