//! What researchers do with the hook tree, as library calls: cache
//! activations and gradients, ablate and patch, attribute, splice sparse
//! autoencoders. Typed paths first (a wrong rank does not compile), glob
//! strings for configs and CLIs.

mod ablate;
mod atp;
mod attribution;
mod cache;
mod export;
mod induction;
mod patching;
mod sae;
mod sae_openai;

pub use ablate::{Ablate, PatchFrom, ablate, add_at, patch_slice};
pub use atp::{AtpOptions, AtpRow, AtpTable, attribution_patching};
pub use attribution::{Attribution, act_times_grad, detach_norm_scales};
pub use cache::{ActivationCache, CacheSpec};
pub use export::{read_safetensors, write_safetensors, write_safetensors_with_metadata};
pub use induction::{duplicate_token_scores, induction_scores};
pub use patching::{
    HeadPatchRow, PatchRow, patching_table, patching_table_per_head, patching_table_per_position,
};
pub use sae::{Activation, SaeSite, SparseAutoencoder, splice_sae};
pub use sae_openai::{InputNorm, OPENAI_LN_EPS, OpenAiLocation, OpenAiSae, OpenAiSaeInfo};
