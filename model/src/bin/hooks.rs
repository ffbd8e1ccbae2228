//! The `hooks` command: list hook sites, cache activations and gradients,
//! sample text. All logic lives in [`hooks_model::cli`].

fn main() -> std::process::ExitCode {
    hooks_model::cli::main()
}
