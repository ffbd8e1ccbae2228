//! The `#[hooks(...)]` attributes.

use syn::{Attribute, LitStr, Path};

pub const HOOKS: &str = "hooks";
pub const RENAME: &str = "rename";
pub const SKIP: &str = "skip";
pub const CRATE: &str = "crate";
pub const SHAPE: &str = "shape";
pub const PER_LAYER: &str = "per_layer";

/// The letters a site's shape may be written in (`#[hooks(shape = "B,S,H,d")]`).
pub const DIMENSIONS: [&str; 10] = ["B", "S", "K", "D", "H", "Hkv", "d", "F", "V", "1"];

/// A checked `shape = "..."`: the literal (for spans) and its letters.
pub struct Shape {
    pub lit: LitStr,
    pub dims: Vec<String>,
}

impl Shape {
    /// The letters joined by commas, without spaces: what the schema holds.
    pub fn normalized(&self) -> String {
        self.dims.join(",")
    }
}

/// Attributes of one field.
#[derive(Default)]
pub struct FieldAttrs {
    pub rename: Option<LitStr>,
    pub skip: bool,
    pub shape: Option<Shape>,
    /// The `per_layer` path, for spans.
    pub per_layer: Option<Path>,
}

/// Attributes of the struct.
#[derive(Default)]
pub struct ContainerAttrs {
    pub krate: Option<Path>,
}

pub fn field_attrs(attrs: &[Attribute], errors: &mut Vec<syn::Error>) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident(HOOKS)) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(RENAME) {
                let name: LitStr = meta.value()?.parse()?;
                let value = name.value();
                if value.is_empty() || value.contains('.') || value.contains('*') {
                    return Err(syn::Error::new_spanned(
                        &name,
                        "a hook name must be non-empty and contain no `.` or `*`",
                    ));
                }
                if out.rename.replace(name).is_some() {
                    return Err(meta.error("duplicate `rename`"));
                }
                Ok(())
            } else if meta.path.is_ident(SKIP) {
                out.skip = true;
                Ok(())
            } else if meta.path.is_ident(SHAPE) {
                let value = meta.value()?;
                let lit: LitStr = value.parse().map_err(|e| {
                    syn::Error::new(
                        e.span(),
                        "a shape is a string of comma-separated dimension letters: \
                         `shape = \"B,S,D\"`",
                    )
                })?;
                let shape = parse_shape(lit)?;
                if out.shape.replace(shape).is_some() {
                    return Err(meta.error("duplicate `shape`"));
                }
                Ok(())
            } else if meta.path.is_ident(PER_LAYER) {
                if meta.input.peek(syn::Token![=]) {
                    return Err(
                        meta.error("`per_layer` takes no value: write `#[hooks(per_layer)]`")
                    );
                }
                if out.per_layer.replace(meta.path.clone()).is_some() {
                    return Err(meta.error("duplicate `per_layer`"));
                }
                Ok(())
            } else {
                Err(meta.error(format!(
                    "unknown hooks attribute `{}`; expected `rename = \"...\"`, `skip`, \
                     `shape = \"...\"` or `per_layer`",
                    path_to_string(&meta.path)
                )))
            }
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    out
}

/// Checks `shape = "B,S,H,d"`: comma-separated letters from [`DIMENSIONS`]
/// (spaces around them allowed).
fn parse_shape(lit: LitStr) -> syn::Result<Shape> {
    let value = lit.value();
    let mut dims = Vec::new();
    for dim in value.split(',').map(str::trim) {
        if dim.is_empty() {
            return Err(syn::Error::new_spanned(
                &lit,
                format!(
                    "a shape is comma-separated dimension letters such as \"B,S,D\", \
                     with none empty (in \"{value}\")"
                ),
            ));
        }
        if !DIMENSIONS.contains(&dim) {
            return Err(syn::Error::new_spanned(
                &lit,
                format!(
                    "unknown dimension `{dim}` in shape \"{value}\"; expected one of {}",
                    DIMENSIONS.join(", ")
                ),
            ));
        }
        dims.push(dim.to_string());
    }
    Ok(Shape { lit, dims })
}

pub fn container_attrs(attrs: &[Attribute], errors: &mut Vec<syn::Error>) -> ContainerAttrs {
    let mut out = ContainerAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident(HOOKS)) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(CRATE) {
                let lit: LitStr = meta.value()?.parse()?;
                out.krate = Some(lit.parse()?);
                Ok(())
            } else {
                Err(meta.error(format!(
                    "unknown hooks attribute `{}` on a struct; expected `crate = \"...\"`",
                    path_to_string(&meta.path)
                )))
            }
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    out
}

fn path_to_string(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}
