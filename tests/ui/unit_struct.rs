use burn_hooks::HookCollection;

#[derive(HookCollection, Clone, Default)]
struct Hooks;

fn main() {}
