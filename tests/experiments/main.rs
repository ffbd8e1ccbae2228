//! The integration tests of the experiments and the `hooks` tool, in one
//! test binary (each file below is a module). The helpers are the model
//! crate's (one copy of the fixtures' rules).

#[macro_use]
#[path = "../../model/tests/common/mod.rs"]
mod common;

mod bundled_model;
mod cli;
mod cli_atp;
mod cli_families;
mod cli_store;
mod experiments_atp;
mod experiments_attribution;
mod experiments_cache;
mod experiments_patch;
mod experiments_sae;
mod sae_openai;
mod sae_train;
mod store;
mod training;
mod training_parity;
