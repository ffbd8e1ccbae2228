//! A hook that cannot do its job reports through `Ctx::fail`: into the
//! caller's `HookFaults` when there is one, as a panic otherwise.

use hooks_core::{Ctx, HookFault, HookFaults, Hooks, named};

/// Halves even numbers; an odd one is bad input it reports and passes on.
fn halve_evens() -> Hooks<i64> {
    let mut hooks = Hooks::new();
    hooks.append(named("HalveEvens", |x: i64, ctx: &Ctx<'_>| {
        if x % 2 != 0 {
            ctx.fail(format!("{x} is odd"));
            return x;
        }
        x / 2
    }));
    hooks
}

#[test]
fn faults_go_to_the_sink_with_where_they_happened() {
    let hooks = halve_evens();
    let mut faults = HookFaults::new();
    let layer = Ctx::at_layer(3);
    let ctx = layer.with_faults(&faults);
    let site = ctx.with_site("mlp.post_act");

    assert_eq!(hooks.call(8, &site), 4);
    assert!(faults.is_empty());
    // The failing hook passes its input on; only the first fault is kept.
    assert_eq!(hooks.call(7, &site), 7);
    assert_eq!(hooks.call(9, &ctx), 9);

    let fault = faults.take().expect("a fault was reported");
    assert_eq!(
        fault,
        HookFault {
            site: Some("mlp.post_act".into()),
            layer: Some(3),
            message: "7 is odd".into(),
        }
    );
    assert_eq!(
        fault.to_string(),
        "hook failed at `mlp.post_act` (layer 3): 7 is odd"
    );
    assert!(faults.take().is_none(), "take empties the sink");
}

#[test]
fn bindings_and_sites_keep_the_sink() {
    let faults = HookFaults::new();
    let root = Ctx::root().with_faults(&faults);
    let mut bound = hooks_core::Bindings::new();
    bound.bind("scale", 2i64).unwrap();
    let inner = root.with_bindings(&bound);
    halve_evens().call(1, &inner.with_site("logits"));
    assert!(!faults.is_empty());
}

#[test]
#[should_panic(expected = "hook failed at layer 0: 5 is odd")]
fn without_a_sink_a_fault_panics_with_its_message() {
    halve_evens().call(5, &Ctx::at_layer(0));
}
