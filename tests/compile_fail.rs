//! Compile-time errors of the hook DSL, pinned with trybuild: misuse of
//! `#[derive(HookCollection)]`, a misspelt `path!` segment, and a gradient
//! hook on a backend without autodiff. Each `tests/ui/*.rs` must fail with
//! the message in the `.stderr` next to it; `tests/ui/pass/*.rs` must build.
//!
//! After a deliberate change of message: `TRYBUILD=overwrite cargo test
//! --test compile_fail`, then review the `.stderr` diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
