//! Nothing to use: this package exists for its compile-fail test
//! (`compile_fail.rs`), which checks the hook DSL's diagnostics.
