//! Every integration test of the hook runtime, in one test binary: one link of
//! Burn instead of one per file (each file below is a module).

mod common;

mod autoencoder;
mod clone_semantics;
mod collection_append;
mod collection_bind;
mod derive_generics;
mod grad_hooks;
mod hook_faults;
mod hook_groups;
mod hooks_fired;
mod hooks_sequence;
mod lists_and_options;
mod path_fuzz;
mod ready_hooks_on_a_stage;
mod recorder;
mod render;
mod site_in_context;
mod site_metadata;
mod site_stages;
mod string_paths;
mod tree_navigation;
mod zero_alloc;
