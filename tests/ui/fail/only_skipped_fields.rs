use hooks_core::HookCollection;

#[derive(HookCollection, Clone, Default)]
struct Hooks {
    #[hooks(skip)]
    note: String,
}

fn main() {}
