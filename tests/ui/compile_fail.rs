//! Compile-time errors of the hook DSL, pinned with trybuild: misuse of
//! `#[derive(HookCollection)]`, a misspelt `path!` segment, and a gradient
//! hook on a backend without autodiff. Each `fail/*.rs` must fail with the
//! message in the `.stderr` next to it. (Code that must compile is tested as
//! ordinary tests, e.g. `hooks-core/tests/derive_generics.rs`: a trybuild
//! `pass` case would turn the cheap `cargo check` of the cases into a full
//! build of Burn.)
//!
//! After a deliberate change of message: `TRYBUILD=overwrite cargo test -p
//! hooks-ui-tests`, then review the `.stderr` diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("fail/*.rs");
}
