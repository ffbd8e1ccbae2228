//! The `#[hooks(...)]` attributes.

use syn::{Attribute, LitStr, Path};

pub const HOOKS: &str = "hooks";
pub const RENAME: &str = "rename";
pub const SKIP: &str = "skip";
pub const CRATE: &str = "crate";

/// Attributes of one field.
#[derive(Default)]
pub struct FieldAttrs {
    pub rename: Option<LitStr>,
    pub skip: bool,
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
            } else {
                Err(meta.error(format!(
                    "unknown hooks attribute `{}`; expected `rename = \"...\"` or `skip`",
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
