//! The input, parsed and checked: a struct with named fields.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{Data, DeriveInput, Expr, Fields, GenericArgument, Ident, PathArguments, Type};

use crate::attr::{self, ContainerAttrs, Shape};

/// A field that is part of the tree.
pub struct Node<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
    /// The name in string paths.
    pub name: String,
    /// `#[hooks(shape = "...")]`, normalized (`B,S,D`).
    pub shape: Option<String>,
    /// A rank check the compiler does, for a shape on a site whose rank is
    /// a const expression rather than a literal: the expression and the
    /// number of letters.
    pub rank_check: Option<(TokenStream, usize)>,
    /// `#[hooks(per_layer)]`.
    pub per_layer: bool,
    /// The field's doc comment, first paragraph, lines joined by spaces.
    pub doc: String,
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
                if let Some(shape) = &fa.shape {
                    errors.push(syn::Error::new_spanned(
                        &shape.lit,
                        "`shape` has no effect on a skipped field",
                    ));
                }
                if let Some(per_layer) = &fa.per_layer {
                    errors.push(syn::Error::new_spanned(
                        per_layer,
                        "`per_layer` has no effect on a skipped field",
                    ));
                }
                continue;
            }
            let rank_check = match &fa.shape {
                Some(shape) => check_rank(shape, &field.ty, errors),
                None => None,
            };
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
                shape: fa.shape.as_ref().map(Shape::normalized),
                rank_check,
                per_layer: fa.per_layer.is_some(),
                doc: doc_summary(&field.attrs),
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

/// The rank of the sites a field holds, as written: `Site<B, 3>`, or a
/// `Vec`, array, `Option` or `Box` of one.
enum SiteRank {
    /// A literal rank.
    Literal(usize),
    /// A const expression (a const parameter, say), as tokens.
    Expr(TokenStream),
}

/// Checks a shape against the rank of the site it is on: here when the rank
/// is a literal, else through the returned check, emitted as a const
/// assertion. A shape on a field that is not plainly a site is an error.
fn check_rank(
    shape: &Shape,
    ty: &Type,
    errors: &mut Vec<syn::Error>,
) -> Option<(TokenStream, usize)> {
    let n = shape.dims.len();
    match site_rank(ty) {
        Some(SiteRank::Literal(rank)) if rank == n => None,
        Some(SiteRank::Literal(rank)) => {
            errors.push(syn::Error::new_spanned(
                &shape.lit,
                format!(
                    "shape \"{}\" has {n} dimension{} but the site has rank {rank}",
                    shape.lit.value(),
                    if n == 1 { "" } else { "s" }
                ),
            ));
            None
        }
        Some(SiteRank::Expr(expr)) => Some((expr, n)),
        None => {
            errors.push(syn::Error::new_spanned(
                &shape.lit,
                "`shape` goes on a site: a field of type `Site<B, D>`, or a `Vec`, array, \
                 `Option` or `Box` of sites",
            ));
            None
        }
    }
}

fn site_rank(ty: &Type) -> Option<SiteRank> {
    match ty {
        Type::Array(a) => site_rank(&a.elem),
        Type::Paren(p) => site_rank(&p.elem),
        Type::Group(g) => site_rank(&g.elem),
        Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last()?;
            let PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            let args: Vec<&GenericArgument> = args.args.iter().collect();
            if last.ident == "Site" {
                return match args.as_slice() {
                    [
                        _,
                        GenericArgument::Const(Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Int(int),
                            ..
                        })),
                    ] => int.base10_parse().ok().map(SiteRank::Literal),
                    [_, GenericArgument::Const(expr)] => {
                        Some(SiteRank::Expr(expr.to_token_stream()))
                    }
                    // `Site<B, R>` parses a const parameter as a type.
                    [_, GenericArgument::Type(Type::Path(rank))] => {
                        Some(SiteRank::Expr(rank.to_token_stream()))
                    }
                    _ => None,
                };
            }
            if ["Vec", "Option", "Box"].iter().any(|w| last.ident == w)
                && let [GenericArgument::Type(inner)] = args.as_slice()
            {
                return site_rank(inner);
            }
            None
        }
        _ => None,
    }
}

/// The first paragraph of `///` comments, lines trimmed and joined.
fn doc_summary(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        let syn::Meta::NameValue(nv) = &attr.meta else {
            continue;
        };
        let Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) = &nv.value
        else {
            continue;
        };
        let value = s.value();
        // A `///` line is an attribute of its own: a blank one is "".
        for line in value.lines().chain(value.trim().is_empty().then_some("")) {
            let line = line.trim();
            if line.is_empty() {
                if !lines.is_empty() {
                    return lines.join(" ");
                }
            } else {
                lines.push(line.to_string());
            }
        }
    }
    lines.join(" ")
}
