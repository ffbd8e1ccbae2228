use burn_hooks::HookCollection;

#[derive(HookCollection, Clone, Default)]
struct Hooks {
    #[hooks(skip)]
    note: String,
}

fn main() {}
