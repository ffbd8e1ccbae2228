//! The `hooks` command: list hook sites, cache activations and gradients,
//! sample text. All logic lives in [`burn_hooks::cli`].

fn main() -> std::process::ExitCode {
    // Reuse freed activation buffers instead of faulting fresh pages in on
    // every forward pass (see `hooks_model::alloc`).
    burn_hooks::model::alloc::retain_freed_memory();
    burn_hooks::cli::main()
}
