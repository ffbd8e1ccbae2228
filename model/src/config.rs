//! What every family's `config.json` reading shares: checked arithmetic on
//! sizes and JSON values shown in error messages.

use crate::ModelError;

/// A JSON value for a message, cut short when long.
pub fn shown_json(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 60 {
        return text;
    }
    let cut: String = text.chars().take(60).collect();
    format!("{cut}…")
}

/// What kind of JSON value `v` is, for a message ("a string").
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `field` must be positive: a [`ModelError::BadConfig`] naming it otherwise.
pub fn require_positive(field: &str, value: usize) -> Result<(), ModelError> {
    if value == 0 {
        return Err(ModelError::BadConfig(format!(
            "{field} must be positive, not {value}"
        )));
    }
    Ok(())
}

/// `field` must be a finite number above 0 (a norm's epsilon).
pub fn require_positive_finite(field: &str, value: f64) -> Result<(), ModelError> {
    if !(value.is_finite() && value > 0.0) {
        return Err(ModelError::BadConfig(format!(
            "{field} must be a finite number > 0, not {value:e}"
        )));
    }
    Ok(())
}

/// The product of `factors` (`(name, value)` pairs), or a
/// [`ModelError::BadConfig`] naming `what` and every factor when it
/// overflows `usize`.
pub fn checked_product(what: &str, factors: &[(&str, usize)]) -> Result<usize, ModelError> {
    factors
        .iter()
        .try_fold(1usize, |n, &(_, v)| n.checked_mul(v))
        .ok_or_else(|| {
            let named: Vec<String> = factors
                .iter()
                .map(|(name, v)| {
                    if name.parse::<usize>().is_ok() {
                        name.to_string()
                    } else {
                        format!("{name} ({v})")
                    }
                })
                .collect();
            ModelError::BadConfig(format!(
                "{what} = {} overflows: the config's sizes are too large",
                named.join(" · ")
            ))
        })
}

/// The sum of `terms`, or a [`ModelError::BadConfig`] naming `what` when it
/// does not fit `usize`.
pub fn checked_sum(what: &str, terms: &[u128]) -> Result<usize, ModelError> {
    let total = terms
        .iter()
        .try_fold(0u128, |n, &t| n.checked_add(t))
        .and_then(|t| usize::try_from(t).ok());
    total.ok_or_else(|| {
        ModelError::BadConfig(format!("{what} overflow: the config's sizes are too large"))
    })
}
