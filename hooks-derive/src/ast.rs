//! The input, parsed and checked: a struct with named fields.

use syn::{Data, DeriveInput, Fields, Ident, Type};

use crate::attr::{self, ContainerAttrs};

/// A field that is part of the tree.
pub struct Node<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
    /// The name in string paths.
    pub name: String,
}

pub struct Input<'a> {
    pub original: &'a DeriveInput,
    pub attrs: ContainerAttrs,
    /// The tree's fields; empty when the input has none that can be used
    /// (an enum, a tuple struct, only skipped fields), which is an error.
    pub nodes: Vec<Node<'a>>,
}

impl<'a> Input<'a> {
    /// Parses and validates; every problem found is collected in `errors`.
    ///
    /// What can still be understood is kept (a field with a bad attribute
    /// stays in the tree, a duplicate name too), so that the impl emitted
    /// beside the errors matches what the user wrote and no follow-on error
    /// hides the first one.
    pub fn from_syn(input: &'a DeriveInput, errors: &mut Vec<syn::Error>) -> Self {
        let attrs = attr::container_attrs(&input.attrs, errors);
        let unusable = |attrs| Input {
            original: input,
            attrs,
            nodes: Vec::new(),
        };
        let fields = match &input.data {
            Data::Struct(s) => match &s.fields {
                Fields::Named(named) => &named.named,
                Fields::Unnamed(_) => {
                    errors.push(syn::Error::new_spanned(
                        &input.ident,
                        "HookCollection needs named fields: the field names are the hook paths \
                         (write `struct Name { site: Site<B, 3> }`)",
                    ));
                    return unusable(attrs);
                }
                Fields::Unit => {
                    errors.push(syn::Error::new_spanned(
                        &input.ident,
                        "HookCollection needs at least one hook field: add a field such as \
                         `site: Site<B, 3>`",
                    ));
                    return unusable(attrs);
                }
            },
            Data::Enum(e) => {
                errors.push(syn::Error::new_spanned(
                    e.enum_token,
                    "HookCollection cannot be derived for an enum: a hook tree has every \
                     site at once; use a struct with one field per site",
                ));
                return unusable(attrs);
            }
            Data::Union(u) => {
                errors.push(syn::Error::new_spanned(
                    u.union_token,
                    "HookCollection cannot be derived for a union; use a struct with one \
                     field per site",
                ));
                return unusable(attrs);
            }
        };

        let mut nodes: Vec<Node<'a>> = Vec::new();
        for field in fields {
            let ident = field.ident.as_ref().expect("named fields have names");
            let fa = attr::field_attrs(&field.attrs, errors);
            if fa.skip {
                if let Some(rename) = &fa.rename {
                    errors.push(syn::Error::new_spanned(
                        rename,
                        "`rename` has no effect on a skipped field",
                    ));
                }
                continue;
            }
            let (name, span_of_name) = match &fa.rename {
                Some(lit) => (lit.value(), lit.span()),
                None => (unraw(ident), ident.span()),
            };
            if let Some(prev) = nodes.iter().find(|n| n.name == name) {
                errors.push(syn::Error::new(
                    span_of_name,
                    format!(
                        "two hook fields are named `{name}` (the other is field `{}`); \
                         rename one with #[hooks(rename = \"...\")]",
                        prev.ident
                    ),
                ));
            }
            nodes.push(Node {
                ident,
                ty: &field.ty,
                name,
            });
        }
        if nodes.is_empty() {
            errors.push(syn::Error::new_spanned(
                &input.ident,
                "HookCollection needs at least one hook field that is not skipped",
            ));
        }
        Input {
            original: input,
            attrs,
            nodes,
        }
    }
}

/// `r#type` is the path segment `type`.
fn unraw(ident: &Ident) -> String {
    let s = ident.to_string();
    s.strip_prefix("r#").map(str::to_string).unwrap_or(s)
}
