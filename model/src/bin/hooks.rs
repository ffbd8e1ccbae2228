//! The `hooks` command: list hook sites, cache activations and gradients,
//! sample text. All logic lives in [`hooks_model::cli`].

fn main() -> std::process::ExitCode {
    // Reuse freed activation buffers instead of faulting fresh pages in on
    // every forward pass (see `hooks_model::alloc`).
    hooks_model::alloc::retain_freed_memory();
    hooks_model::cli::main()
}
