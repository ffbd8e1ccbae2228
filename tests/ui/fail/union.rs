use hooks_core::HookCollection;

#[derive(HookCollection, Clone, Copy)]
union Hooks {
    a: u32,
    b: f32,
}

fn main() {}
