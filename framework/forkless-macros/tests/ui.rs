//! The expansion, compiled for real: what must build (and run: each pass
//! case listens on port 0 and returns at once, so the process exits 0) and
//! what must fail, with the error on the right token (`ui/*.stderr`).
//!
//! Regenerate the `.stderr` files after a deliberate change with
//! `TRYBUILD=overwrite cargo test -p forkless-macros --test ui`, then read
//! every diff: each error must point at the token the user has to fix.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/ui-pass/*.rs");
}
