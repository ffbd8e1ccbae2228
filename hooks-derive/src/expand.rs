//! Emits the `HookNode` impl.

use proc_macro_crate::{FoundCrate, crate_name};
use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Ident};

use crate::ast::Input;

/// The impl, and beside it every error found. The impl is emitted even when
/// there are errors (as thiserror does): the build fails on the errors
/// anyway, and without an impl every use of the type would add an error
/// of its own ("`Hooks<B>` is not a hook site or a hook collection").
pub fn derive(input: &DeriveInput) -> TokenStream {
    let mut errors = Vec::new();
    let parsed = Input::from_syn(input, &mut errors);
    let mut out = if parsed.nodes.is_empty() {
        fallback_impl(&parsed)
    } else {
        impl_hook_node(&parsed)
    };
    for e in errors {
        out.extend(e.to_compile_error());
    }
    out
}

/// For an input with no usable field (an error already): an empty
/// collection over the backend the type is generic in, when it has one.
/// Without a type parameter bounded by `Backend` there is no backend to
/// name, and nothing is emitted.
fn fallback_impl(input: &Input) -> TokenStream {
    let Some(backend) = backend_param(&input.original.generics) else {
        return TokenStream::new();
    };
    let body = Body {
        backend: quote!(#backend),
        rank_checks: Vec::new(),
        children: Vec::new(),
        walk: Vec::new(),
        walk_mut: Vec::new(),
    };
    emit(input, &runtime_path(input), body)
}

/// The first type parameter bounded by `Backend` or `AutodiffBackend`
/// (however qualified), in the parameter list or the where clause.
fn backend_param(generics: &syn::Generics) -> Option<&Ident> {
    let is_backend_bound = |b: &syn::TypeParamBound| match b {
        syn::TypeParamBound::Trait(t) => t
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "Backend" || s.ident == "AutodiffBackend"),
        _ => false,
    };
    let in_where = |param: &Ident| {
        generics.where_clause.as_ref().is_some_and(|w| {
            w.predicates.iter().any(|p| match p {
                syn::WherePredicate::Type(t) => {
                    matches!(&t.bounded_ty, syn::Type::Path(tp) if tp.path.is_ident(param))
                        && t.bounds.iter().any(is_backend_bound)
                }
                _ => false,
            })
        })
    };
    generics
        .type_params()
        .find(|p| p.bounds.iter().any(is_backend_bound) || in_where(&p.ident))
        .map(|p| &p.ident)
}

/// Where the runtime lives: `#[hooks(crate = ...)]`, else `hooks-core` or the
/// `burn-hooks` facade, whichever the user's Cargo.toml names.
fn runtime_path(input: &Input) -> TokenStream {
    if let Some(path) = &input.attrs.krate {
        return quote!(#path);
    }
    for package in ["hooks-core", "burn-hooks"] {
        match crate_name(package) {
            Ok(FoundCrate::Itself) => {
                let ident = Ident::new(&package.replace('-', "_"), Span::call_site());
                return quote!(::#ident);
            }
            Ok(FoundCrate::Name(name)) => {
                let ident = Ident::new(&name, Span::call_site());
                return quote!(::#ident);
            }
            Err(_) => continue,
        }
    }
    quote!(::hooks_core)
}

fn impl_hook_node(input: &Input) -> TokenStream {
    let krate = runtime_path(input);

    // The backend: the type parameter bounded by `Backend` where there is
    // one (what user trees have), else read off one field; every field must
    // agree with it anyway. Prefer a field that is plainly a site, so that a
    // first field which is not a hook node yields one error at its type
    // instead of a cascade through `Self::Backend`.
    let backend = match backend_param(&input.original.generics) {
        Some(param) => quote!(#param),
        None => {
            let backend_ty = input
                .nodes
                .iter()
                .find(|n| is_plainly_a_site(n.ty))
                .unwrap_or(&input.nodes[0])
                .ty;
            quote_spanned!(backend_ty.span()=> <#backend_ty as #krate::HookNode>::Backend)
        }
    };

    let children = input.nodes.iter().map(|node| {
        let name = &node.name;
        let field = node.ident.to_string();
        let ty = node.ty;
        let schema = quote_spanned!(ty.span()=> <#ty as #krate::HookField<Self::Backend>>::schema);
        let shape = match &node.shape {
            Some(shape) => quote!(::core::option::Option::Some(#shape)),
            None => quote!(::core::option::Option::None),
        };
        let per_layer = node.per_layer;
        let doc = &node.doc;
        quote! {
            #krate::SchemaChild {
                name: #name,
                field: #field,
                schema: #schema,
                shape: #shape,
                per_layer: #per_layer,
                doc: #doc,
            }
        }
    });
    // A shape on a site whose rank is not a literal: checked by the compiler
    // when the schema is built.
    let rank_checks = input.nodes.iter().filter_map(|node| {
        let (rank, n) = node.rank_check.as_ref()?;
        let message = format!(
            "the shape of hook field `{}` has {n} dimensions, not the site's rank",
            node.ident
        );
        Some(quote! {
            const { ::core::assert!((#rank) == #n, #message) };
        })
    });
    let walk = input.nodes.iter().map(|node| {
        let name = &node.name;
        let field = node.ident;
        let ty = node.ty;
        // The whole call is spanned on the type: a field that is not a hook
        // node then fails here with the same message at the same place as the
        // schema entry, and rustc reports it once.
        let call =
            quote_spanned!(ty.span()=> <#ty as #krate::HookField<Self::Backend>>::walk(&self.#field, __visitor));
        quote! {
            if __visitor.enter(#krate::Segment::Name(#name)) {
                #call;
                __visitor.exit(#krate::Segment::Name(#name));
            }
        }
    });
    let walk_mut = input.nodes.iter().map(|node| {
        let name = &node.name;
        let field = node.ident;
        let ty = node.ty;
        let call =
            quote_spanned!(ty.span()=> <#ty as #krate::HookField<Self::Backend>>::walk_mut(&mut self.#field, __visitor));
        quote! {
            if __visitor.enter(#krate::Segment::Name(#name)) {
                #call;
                __visitor.exit(#krate::Segment::Name(#name));
            }
        }
    });

    let body = Body {
        backend,
        rank_checks: rank_checks.collect(),
        children: children.collect(),
        walk: walk.collect(),
        walk_mut: walk_mut.collect(),
    };
    emit(input, &krate, body)
}

/// What differs between the impls the derive emits.
struct Body {
    backend: TokenStream,
    rank_checks: Vec<TokenStream>,
    children: Vec<TokenStream>,
    walk: Vec<TokenStream>,
    walk_mut: Vec<TokenStream>,
}

/// The `HookNode` impl: the schema and the one traversal.
fn emit(input: &Input, krate: &TokenStream, body: Body) -> TokenStream {
    let ident = &input.original.ident;
    let type_name = ident.to_string();
    let (impl_generics, ty_generics, where_clause) = input.original.generics.split_for_impl();
    // No per-field where-clauses: bounds on concrete field types would stop
    // rustc from normalising the field's backend through the impl. A field
    // that is not a hook node fails at the uses in the body, which are all
    // spanned on its type and so report one deduplicated error there.
    let predicates: Vec<TokenStream> = where_clause
        .map(|w| w.predicates.iter().map(|p| quote!(#p)).collect())
        .unwrap_or_default();
    let Body {
        backend,
        rank_checks,
        children,
        walk,
        walk_mut,
    } = body;
    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::HookNode for #ident #ty_generics
        where
            #(#predicates,)*
            Self: ::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static,
        {
            type Backend = #backend;

            fn schema() -> #krate::Schema {
                #(#rank_checks)*
                #krate::Schema::Collection {
                    type_name: #type_name,
                    children: ::std::vec![#(#children),*],
                }
            }

            #[allow(unused_variables)]
            fn walk<__V: #krate::Visitor<Self::Backend>>(&self, __visitor: &mut __V) {
                #(#walk)*
            }

            #[allow(unused_variables)]
            fn walk_mut<__V: #krate::VisitorMut<Self::Backend>>(&mut self, __visitor: &mut __V) {
                #(#walk_mut)*
            }
        }
    }
}

/// `Site<..>` or `AutoencoderHooks<..>`, however qualified.
fn is_plainly_a_site(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "Site" || s.ident == "AutoencoderHooks"),
        _ => false,
    }
}
