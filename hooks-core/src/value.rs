//! Values that can be bound to hooks and read back from a [`Ctx`](crate::Ctx).
//!
//! The reference passes hooks arbitrary Python keyword arguments. Here a bound
//! value is a small closed enum (so it can be printed in the tree rendering and
//! compared in tests) with one escape hatch, [`Value::Any`], for values such as
//! the MLP's output projection that the model hands to `mlp.post_act` hooks.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::HookError;

/// One bound keyword value.
#[derive(Clone)]
pub enum Value {
    /// `true` / `false`.
    Bool(bool),
    /// An integer, e.g. a layer index.
    Int(i64),
    /// A float, e.g. a scale factor.
    Float(f64),
    /// A string.
    Str(Arc<str>),
    /// A list of integers, e.g. a set of heads.
    Ints(Arc<[i64]>),
    /// Anything else, shared. `name` is what the tree rendering prints.
    Any {
        /// Printed in renderings in place of the value.
        name: Arc<str>,
        /// The value; read it back with [`Value::downcast_ref`].
        value: Arc<dyn Any + Send + Sync>,
    },
}

impl Value {
    /// Wraps any shareable value; `name` is shown in tree renderings.
    pub fn any<T: Any + Send + Sync>(name: &str, value: T) -> Self {
        Value::Any {
            name: name.into(),
            value: Arc::new(value),
        }
    }

    /// The integer, if this is an [`Value::Int`].
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The float, if this is a [`Value::Float`] or an [`Value::Int`].
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The string, if this is a [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value behind [`Value::Any`], if it has type `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        match self {
            Value::Any { value, .. } => value.downcast_ref::<T>(),
            _ => None,
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Ints(v) => write!(f, "{v:?}"),
            Value::Any { name, .. } => write!(f, "<{name}>"),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Ints(a), Value::Ints(b)) => a == b,
            (Value::Any { value: a, .. }, Value::Any { value: b, .. }) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident($conv:expr)),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant($conv(v))
            }
        })*
    };
}

value_from! {
    bool => Bool(|v| v),
    i64 => Int(|v| v),
    i32 => Int(i64::from),
    usize => Int(|v: usize| v as i64),
    f64 => Float(|v| v),
    f32 => Float(f64::from),
    &str => Str(Arc::from),
    String => Str(Arc::from),
    Vec<i64> => Ints(Arc::from),
}

/// Keyword values bound to one [`Hooks`](crate::Hooks) stage, in binding order.
///
/// A handful of entries at most, so a vector beats a map and keeps the order
/// the reference prints them in.
#[derive(Clone, Default, Debug, PartialEq)]
pub struct Bindings {
    entries: Vec<(Arc<str>, Value)>,
}

impl Bindings {
    /// No bindings.
    pub const fn new() -> Self {
        Bindings {
            entries: Vec::new(),
        }
    }

    /// The value bound to `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| v)
    }

    /// Whether `key` is bound.
    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Binds `key`; binding a key twice is an error, as in the reference.
    pub fn bind(&mut self, key: &str, value: impl Into<Value>) -> Result<(), HookError> {
        if self.contains(key) {
            return Err(HookError::AlreadyBound {
                key: key.to_string(),
                site: None,
            });
        }
        self.entries.push((key.into(), value.into()));
        Ok(())
    }

    /// Removes `key`; removing a key that is not bound is an error.
    pub fn unbind(&mut self, key: &str) -> Result<Value, HookError> {
        match self.entries.iter().position(|(k, _)| &**k == key) {
            Some(i) => Ok(self.entries.remove(i).1),
            None => Err(HookError::NotBound {
                key: key.to_string(),
                site: None,
            }),
        }
    }

    /// Whether nothing is bound.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bound entries in binding order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }
}

impl fmt::Display for Bindings {
    /// Prints `{layer: 3, name: "x"}`, the shape of the reference's dict repr.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}: {v}")?;
        }
        f.write_str("}")
    }
}
