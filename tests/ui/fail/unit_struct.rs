use hooks_core::HookCollection;

#[derive(HookCollection, Clone, Default)]
struct Hooks;

fn main() {}
