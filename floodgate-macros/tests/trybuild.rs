//! Compile-time behaviour of the attribute macros.
//!
//! `tests/trybuild/*.rs` must fail to compile with the checked-in `.stderr`;
//! `tests/trybuild/pass/*.rs` must compile and run. The `.stderr` files depend on the
//! compiler version (CI uses the same rustc as development); regenerate them with
//! `TRYBUILD=overwrite cargo test -p floodgate-macros --test trybuild` and read the diff.

#[test]
fn trybuild() {
    // One `TestCases` so that trybuild builds the dependencies once for both batches.
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/trybuild/*.rs");
    t.pass("tests/trybuild/pass/*.rs");
}
