//! Every integration test of the model, in one test binary: one link of
//! Burn instead of one per file (each file below is a module).

#[macro_use]
mod common;

mod analytic;
mod checkpoint_errors;
mod checkpoint_formats;
mod cpu_kind;
mod gradients;
mod hostile_inputs;
mod kv_cache;
mod llama_analytic;
mod llama_parity;
mod parity;
mod site_context;
mod tokenizer;
