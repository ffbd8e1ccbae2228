//! `Hooks`: a sequence of hooks with bound keyword values (the reference's
//! `Hooks` class).

use std::sync::{Arc, Mutex};

use hooks_core::{Ctx, HookError, Hooks, Value};

#[test]
fn each_hook_gets_the_previous_output() {
    let mut h: Hooks<i64> = Hooks::new();
    h.append(|x: i64, _: &Ctx| x + 1)
        .append(|x: i64, _: &Ctx| x * 10)
        .append(|x: i64, _: &Ctx| x - 3);
    // ((2 + 1) * 10) - 3, not any other order.
    assert_eq!(h.call(2, &Ctx::root()), 27);
    assert_eq!(h.len(), 3);
}

#[test]
fn hooks_run_in_append_order() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let h = (0..4).fold(Hooks::<u8>::new(), |h, i| {
        let log = log.clone();
        h.with(move |x: u8, _: &Ctx| {
            log.lock().unwrap().push(i);
            x
        })
    });
    h.call(0, &Ctx::root());
    assert_eq!(*log.lock().unwrap(), [0, 1, 2, 3]);
}

#[test]
fn bound_values_are_visible_in_the_context() {
    let mut h: Hooks<f64> = Hooks::new();
    h.bind("k", 2.5).unwrap().bind("name", "resid").unwrap();
    h.append(|x: f64, ctx: &Ctx| {
        assert_eq!(ctx.get("name"), Some(&Value::from("resid")));
        assert_eq!(ctx.get("missing"), None);
        x * ctx.get("k").and_then(Value::as_float).unwrap()
    });
    assert_eq!(h.call(4.0, &Ctx::root()), 10.0);
}

#[test]
fn inner_bindings_shadow_the_callers() {
    let outer = {
        let mut b = hooks_core::Bindings::new();
        b.bind("k", 1).unwrap();
        b
    };
    let root = Ctx::root();
    let ctx = root.with_bindings(&outer);

    let mut h: Hooks<i64> = Hooks::new();
    h.append(|_: i64, ctx: &Ctx| ctx.get("k").and_then(Value::as_int).unwrap());
    // Nothing bound on the stage: the caller's value.
    assert_eq!(h.call(0, &ctx), 1);
    // Bound on the stage: the stage's value wins.
    h.bind("k", 2).unwrap();
    assert_eq!(h.call(0, &ctx), 2);
}

#[test]
fn a_bound_layer_is_the_layer() {
    // The reference passes the layer as a bound keyword; that still works.
    let mut h: Hooks<i64> = Hooks::new();
    h.bind("layer", 4).unwrap();
    h.append(|_: i64, ctx: &Ctx| ctx.layer().map_or(-1, |l| l as i64));
    assert_eq!(h.call(0, &Ctx::root()), 4);
    // A layer the model passes in the context takes precedence.
    assert_eq!(h.call(0, &Ctx::at_layer(1)), 1);
}

#[test]
fn binding_a_key_twice_is_an_error_naming_the_key() {
    let mut h: Hooks<f32> = Hooks::new();
    h.bind("layer", 3).unwrap();
    let err = h.bind("layer", 4).unwrap_err();
    assert_eq!(
        err,
        HookError::AlreadyBound {
            key: "layer".into(),
            site: None
        }
    );
    assert_eq!(err.to_string(), "key `layer` is already bound");
    // The first value stays.
    assert_eq!(h.bindings().get("layer"), Some(&Value::Int(3)));
}

#[test]
fn unbind_removes_the_value() {
    let mut h: Hooks<i64> = Hooks::new();
    h.bind("k", 1).unwrap();
    h.append(|x: i64, ctx: &Ctx| x + ctx.get("k").and_then(Value::as_int).unwrap_or(100));
    assert_eq!(h.call(0, &Ctx::root()), 1);

    h.unbind("k").unwrap();
    assert!(h.bindings().is_empty());
    assert_eq!(h.call(0, &Ctx::root()), 100);
    // And the key can be bound again.
    h.bind("k", 5).unwrap();
    assert_eq!(h.call(0, &Ctx::root()), 5);
}

#[test]
fn unbinding_a_missing_key_is_an_error() {
    let mut h: Hooks<f32> = Hooks::new();
    let err = h.unbind("k").unwrap_err();
    assert_eq!(
        err,
        HookError::NotBound {
            key: "k".into(),
            site: None
        }
    );
    assert_eq!(err.to_string(), "key `k` is not bound");
}

#[test]
fn is_empty_counts_hooks_not_bindings() {
    let mut h: Hooks<f32> = Hooks::new();
    assert!(h.is_empty());
    h.bind("k", 1).unwrap();
    assert!(h.is_empty(), "bindings alone do not make a stage non-empty");
    h.append(|x: f32, _: &Ctx| x);
    assert!(!h.is_empty());
    h.clear();
    assert!(h.is_empty());
    assert_eq!(h.bindings().get("k"), Some(&Value::Int(1)));
}

#[test]
fn an_empty_sequence_is_the_identity() {
    let h: Hooks<String> = Hooks::default();
    assert_eq!(
        h.call("unchanged".to_string(), &Ctx::at_layer(2)),
        "unchanged"
    );
}

#[test]
fn a_group_is_itself_a_hook() {
    let inner = Hooks::new()
        .with(|x: i64, _: &Ctx| x + 1)
        .with(|x: i64, _: &Ctx| x * 2);
    let mut outer = Hooks::new();
    outer.append(inner).append(|x: i64, _: &Ctx| x - 1);
    assert_eq!(outer.call(3, &Ctx::root()), 7);
}
