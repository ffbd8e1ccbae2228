//! Every integration test of the model, in one test binary: one link of
//! Burn instead of one per file (each file below is a module).

#[macro_use]
mod common;

mod analytic;
mod checkpoint_errors;
mod checkpoint_formats;
mod cli;
mod cpu_kind;
mod experiments_attribution;
mod experiments_cache;
mod experiments_patch;
mod experiments_sae;
mod gradients;
mod hostile_inputs;
mod kv_cache;
mod parity;
mod training;
