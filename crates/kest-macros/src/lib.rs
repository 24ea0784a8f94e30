//! `#[kest::verified(...)]`: puts a function under the Kest verification
//! hook. Use it through the `kest` crate (`kest::verified`); the expansion
//! names only `::kest::__private` paths.
//!
//! Arguments (validated at compile time):
//!
//! | key | value |
//! |---|---|
//! | `policy` | `"name"` or `["a", "b"]` (required, non-empty) |
//! | `operation` | operation name (default: the function name); also the deviation scope name |
//! | `source_type` | origin string |
//! | `added_taints`, `removed_taints` | `["t", ...]` |
//! | `trust_override` | integer 0..=100 |
//! | `classification` | `"system"`, `"data"`, `"sanitizer"`, `"critic"`, `"snapshot"` |
//! | `user`, `agent`, `task`, `resource_id` | an expression (may use the arguments) or a closure whose parameters are argument names |
//! | `resource_attr`, `metadata` | an expression giving a `serde_json` map / value |
//! | `engine`, `identity`, `trust_evaluator`, `runtime` | per-call overrides (expressions) |
//! | `hash_inputs`, `hash_output` | flags |
//! | `action` | the action policies see (default: the operation name) |
//! | `subject_attributes` | an expression giving a `serde_json` map (`subject.attributes`) |
//! | `context` | `["arg", ...]`: arguments handed to policy as `attributes.<arg>` (and `input.<arg>`) — the reference's `context_map` |
//! | `persist` | `["arg", ...]`: like `context`, and also written into the entry's labels |
//!
//! A function returning `Result<T, E>` keeps its signature (`E` must
//! implement `From<kest::KestError>`); any other function returning `T`
//! returns `Result<T, kest::KestError>`. The body keeps its own control
//! flow: `return`, `?` and `.await` mean what they mean without the
//! attribute.
//!
//! Methods, generic functions and `async fn` are supported, including
//! methods of a trait impl (sync, or native `async fn` in traits) whose
//! return type is already `Result<T, E>` with `E: From<kest::KestError>`:
//! their signature is not changed. A trait-impl method returning anything
//! else is a compile error ("method has an incompatible type for trait",
//! expected `T`, found `Result<T, KestError>`), because the attribute would
//! have to change the signature the trait fixes; return a `Result` from the
//! trait method, or call the hook through `kest::hook::Verified`.
//!
//! Deviations (SPEC §5 "No self-exemption") name the scope
//! `module::path::fn` (`module_path!()` and the function name), so a
//! function elsewhere with the same bare name is not covered; with
//! `operation = "x"` the scope is `x`. Methods have no type in their scope
//! name: two methods of one name in one module share it unless given an
//! explicit `operation`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprArray, ExprLit, FnArg, ItemFn, Lit, Meta, Pat, ReturnType, Token, Type};

const KEYS: &[&str] = &[
    "policy",
    "operation",
    "source_type",
    "added_taints",
    "removed_taints",
    "trust_override",
    "classification",
    "user",
    "agent",
    "task",
    "resource_id",
    "resource_attr",
    "metadata",
    "engine",
    "identity",
    "trust_evaluator",
    "runtime",
    "hash_inputs",
    "hash_output",
    "action",
    "subject_attributes",
    "context",
    "persist",
];

const CLASSIFICATIONS: &[&str] = &["system", "data", "sanitizer", "critic", "snapshot"];

/// Puts a function under the Kest verification hook (see the crate docs).
#[proc_macro_attribute]
pub fn verified(args: TokenStream, item: TokenStream) -> TokenStream {
    match expand(args.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[derive(Default)]
struct Args {
    policies: Vec<String>,
    policy_span: Option<Span>,
    operation: Option<String>,
    source_type: Option<String>,
    added: Vec<String>,
    removed: Vec<String>,
    trust_override: Option<i64>,
    classification: Option<String>,
    resolvers: Vec<(String, Expr)>,
    overrides: Vec<(String, Expr)>,
    resource_attr: Option<Expr>,
    metadata: Option<Expr>,
    hash_inputs: bool,
    hash_output: bool,
    action: Option<String>,
    subject_attributes: Option<Expr>,
    context: Vec<(String, Span)>,
    persist: Vec<(String, Span)>,
}

fn err(span: Span, msg: impl std::fmt::Display) -> syn::Error {
    syn::Error::new(span, msg)
}

fn string_lit(expr: &Expr, key: &str) -> syn::Result<String> {
    match expr {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Ok(s.value()),
        other => Err(err(other.span(), format!("`{key}` takes a string literal"))),
    }
}

fn string_list(expr: &Expr, key: &str) -> syn::Result<Vec<String>> {
    match expr {
        Expr::Array(ExprArray { elems, .. }) => elems.iter().map(|e| string_lit(e, key)).collect(),
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Ok(vec![s.value()]),
        other => {
            Err(err(other.span(), format!("`{key}` takes a string or a list of strings: [\"a\", \"b\"]")))
        }
    }
}

fn parse_args(tokens: TokenStream2) -> syn::Result<Args> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens)?;
    let mut args = Args::default();
    let mut seen: Vec<String> = Vec::new();
    for meta in metas {
        let path = meta.path();
        let key = path.get_ident().map(|i| i.to_string()).unwrap_or_default();
        if !KEYS.contains(&key.as_str()) {
            return Err(err(
                path.span(),
                format!("unknown kest::verified argument `{key}`; expected one of: {}", KEYS.join(", ")),
            ));
        }
        if seen.contains(&key) {
            return Err(err(path.span(), format!("`{key}` is given twice")));
        }
        seen.push(key.clone());
        match meta {
            Meta::Path(_) => match key.as_str() {
                "hash_inputs" => args.hash_inputs = true,
                "hash_output" => args.hash_output = true,
                _ => return Err(err(path.span(), format!("`{key}` needs a value: `{key} = ...`"))),
            },
            Meta::List(list) => return Err(err(list.span(), format!("write `{key} = ...`"))),
            Meta::NameValue(nv) => {
                let v = &nv.value;
                match key.as_str() {
                    "policy" => {
                        args.policies = string_list(v, "policy")?;
                        args.policy_span = Some(v.span());
                    }
                    "operation" => args.operation = Some(string_lit(v, "operation")?),
                    "source_type" => args.source_type = Some(string_lit(v, "source_type")?),
                    "added_taints" => args.added = string_list(v, "added_taints")?,
                    "removed_taints" => args.removed = string_list(v, "removed_taints")?,
                    "trust_override" => {
                        let n = match v {
                            Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => i.base10_parse::<i64>()?,
                            other => {
                                return Err(err(other.span(), "`trust_override` takes an integer 0..=100"));
                            }
                        };
                        if !(0..=100).contains(&n) {
                            return Err(err(v.span(), format!("trust_override {n} is outside 0..=100")));
                        }
                        args.trust_override = Some(n);
                    }
                    "classification" => {
                        let c = string_lit(v, "classification")?;
                        if !CLASSIFICATIONS.contains(&c.as_str()) {
                            return Err(err(
                                v.span(),
                                format!("classification `{c}` is not one of {}", CLASSIFICATIONS.join(", ")),
                            ));
                        }
                        args.classification = Some(c);
                    }
                    "user" | "agent" | "task" | "resource_id" => args.resolvers.push((key, v.clone())),
                    "engine" | "identity" | "trust_evaluator" | "runtime" => {
                        args.overrides.push((key, v.clone()))
                    }
                    "resource_attr" => args.resource_attr = Some(v.clone()),
                    "action" => {
                        let a = string_lit(v, "action")?;
                        if a.is_empty() {
                            return Err(err(v.span(), "the action must not be empty"));
                        }
                        args.action = Some(a);
                    }
                    "subject_attributes" => args.subject_attributes = Some(v.clone()),
                    "context" | "persist" => {
                        let names = string_list(v, &key)?.into_iter().map(|n| (n, v.span())).collect();
                        if key == "context" {
                            args.context = names;
                        } else {
                            args.persist = names;
                        }
                    }
                    "metadata" => args.metadata = Some(v.clone()),
                    "hash_inputs" | "hash_output" => {
                        return Err(err(v.span(), format!("`{key}` is a flag: write `{key}` alone")));
                    }
                    _ => {}
                }
            }
        }
    }
    match args.policy_span {
        None => {
            return Err(err(
                Span::call_site(),
                "kest::verified needs `policy = \"name\"` or `policy = [\"a\", \"b\"]`",
            ));
        }
        Some(span) if args.policies.is_empty() => {
            return Err(err(
                span,
                "the policy list is empty: an empty list never allows, name at least one policy",
            ));
        }
        Some(span) if args.policies.iter().any(String::is_empty) => {
            return Err(err(span, "a policy name is empty"));
        }
        _ => {}
    }
    if !args.removed.is_empty()
        && args.trust_override.is_none()
        && args.classification.as_deref() != Some("sanitizer")
    {
        return Err(err(
            Span::call_site(),
            "removed_taints needs `trust_override = N` or `classification = \"sanitizer\"`",
        ));
    }
    Ok(args)
}

/// The function's arguments (patterns that are plain idents) and types.
fn arg_idents(func: &ItemFn) -> syn::Result<(Vec<(syn::Ident, Type)>, bool)> {
    let mut names = Vec::new();
    let mut has_self = false;
    for input in &func.sig.inputs {
        match input {
            FnArg::Receiver(_) => has_self = true,
            FnArg::Typed(pt) => match &*pt.pat {
                Pat::Ident(pi) => names.push((pi.ident.clone(), (*pt.ty).clone())),
                other => {
                    return Err(err(other.span(), "kest::verified needs plain argument names (no patterns)"));
                }
            },
        }
    }
    Ok((names, has_self))
}

/// A resolver: a closure is called with references to the arguments its
/// parameters name (untyped parameters get the argument's type); any other
/// expression is used as it is.
fn resolver(expr: &Expr, args: &[(syn::Ident, Type)]) -> syn::Result<TokenStream2> {
    if let Expr::Closure(closure) = expr {
        let mut closure = closure.clone();
        let mut call_args = Vec::new();
        for input in closure.inputs.iter_mut() {
            let (ident, typed) = match input {
                Pat::Ident(pi) => (pi.ident.clone(), false),
                Pat::Type(pt) => match &*pt.pat {
                    Pat::Ident(pi) => (pi.ident.clone(), true),
                    other => return Err(err(other.span(), "resolver parameters must be argument names")),
                },
                other => return Err(err(other.span(), "resolver parameters must be argument names")),
            };
            let Some((_, ty)) = args.iter().find(|(name, _)| *name == ident) else {
                return Err(err(
                    ident.span(),
                    format!("resolver parameter `{ident}` is not an argument of the function"),
                ));
            };
            if !typed {
                let pat = std::mem::replace(input, Pat::Verbatim(TokenStream2::new()));
                *input = Pat::Type(syn::PatType {
                    attrs: Vec::new(),
                    pat: Box::new(pat),
                    colon_token: Default::default(),
                    ty: Box::new(syn::parse_quote! { &#ty }),
                });
            }
            call_args.push(quote! { &#ident });
        }
        return Ok(quote! { (#closure)(#(#call_args),*) });
    }
    Ok(quote! { #expr })
}

fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        _ => false,
    }
}

fn expand(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let args = parse_args(attr)?;
    let mut func: ItemFn = syn::parse2(item)?;
    let (names, _has_self) = arg_idents(&func)?;
    let arg_names: Vec<&syn::Ident> = names.iter().map(|(n, _)| n).collect();
    let operation = args.operation.clone().unwrap_or_else(|| func.sig.ident.to_string());
    let p = quote! { ::kest::__private };

    // The deviation scope (SPEC §5 "No self-exemption"): the qualified path
    // of the function, or the operation name given explicitly.
    let scope_name = match &args.operation {
        Some(op) => quote! { #op },
        None => {
            let name = func.sig.ident.to_string();
            quote! { ::core::concat!(::core::module_path!(), "::", #name) }
        }
    };
    let mut spec = quote! { #p::Verified::builder(#operation).scope_name(#scope_name) };
    for policy in &args.policies {
        spec.extend(quote! { .policy(#policy) });
    }
    if let Some(s) = &args.source_type {
        spec.extend(quote! { .source_type(#s) });
    }
    for t in &args.added {
        spec.extend(quote! { .added_taint(#t) });
    }
    for t in &args.removed {
        spec.extend(quote! { .removed_taint(#t) });
    }
    if let Some(n) = args.trust_override {
        spec.extend(quote! { .trust_override(#n) });
    }
    if let Some(c) = &args.classification {
        spec.extend(quote! { .classification(#p::classification(#c)) });
    }
    if let Some(a) = &args.action {
        spec.extend(quote! { .action(#a) });
    }
    let (hi, ho) = (args.hash_inputs, args.hash_output);
    spec.extend(quote! { .hash_inputs(#hi).hash_output(#ho).build() });

    let mut call = quote! { #p::CallContext::new() };
    for (key, expr) in &args.resolvers {
        let value = resolver(expr, &names)?;
        let method = syn::Ident::new(&format!("set_{key}"), expr.span());
        call.extend(quote_spanned! { expr.span()=> .#method(#p::ResolverValue::into_resolved(#value)) });
    }
    for (key, expr) in &args.overrides {
        let method = syn::Ident::new(key, expr.span());
        call = match key.as_str() {
            "runtime" => quote! { #call.runtime(&(#expr)) },
            _ => quote! { #call.#method(#expr) },
        };
    }
    if let Some(expr) = &args.resource_attr {
        call.extend(quote! { .resource_attr(#expr) });
    }
    if let Some(expr) = &args.metadata {
        call.extend(quote! { .metadata(#expr) });
    }
    if let Some(expr) = &args.subject_attributes {
        call.extend(quote! { .subject_attributes(#expr) });
    }
    let mut attributes = Vec::new();
    for (list, persist) in [(&args.context, false), (&args.persist, true)] {
        for (name, span) in list {
            let Some((ident, _)) = names.iter().find(|(n, _)| n == name.as_str()) else {
                return Err(err(*span, format!("`{name}` is not an argument of the function")));
            };
            let method = if persist {
                quote! { persisted_attribute }
            } else {
                quote! { attribute }
            };
            attributes.push(quote! {
                let __kest_call = match #p::attribute_value(&#ident, #name) {
                    ::core::result::Result::Ok(v) => __kest_call.#method(#name, v),
                    ::core::result::Result::Err(e) => return ::core::result::Result::Err(__KEST_TO_ERR(e)),
                };
            });
        }
    }

    let output_ty: Type = match &func.sig.output {
        ReturnType::Default => syn::parse_quote! { () },
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    let fallible = is_result(&output_ty);
    let asyncness = func.sig.asyncness.is_some();
    let body = &func.block;
    let call_fn = match (asyncness, args.hash_output) {
        (false, false) => quote! { call },
        (false, true) => quote! { call_hashed },
        (true, false) => quote! { call_async },
        (true, true) => quote! { call_async_hashed },
    };
    let kest_err = |fallible: bool| {
        if fallible {
            quote! { ::core::convert::From::from }
        } else {
            quote! { ::core::convert::identity }
        }
    };
    let to_err = kest_err(fallible);
    let inputs = if args.hash_inputs {
        quote! {
            let __kest_call = match __kest_call.inputs(&(#(&#arg_names,)*)) {
                ::core::result::Result::Ok(c) => c,
                ::core::result::Result::Err(e) => return ::core::result::Result::Err(#to_err(e)),
            };
        }
    } else {
        quote! {}
    };
    let attribute_prologue = if attributes.is_empty() {
        quote! {}
    } else {
        quote! {
            #[allow(non_snake_case)]
            let __KEST_TO_ERR = |e: #p::KestError| #to_err(e);
            #(#attributes)*
        }
    };
    let prologue = quote! {
        static __KEST_HOOK: ::std::sync::OnceLock<::core::result::Result<#p::Verified, #p::ConfigError>> =
            ::std::sync::OnceLock::new();
        let __kest_hook = match __KEST_HOOK.get_or_init(|| #spec) {
            ::core::result::Result::Ok(h) => h,
            ::core::result::Result::Err(e) => {
                return ::core::result::Result::Err(#to_err(#p::KestError::Config(e.clone())));
            }
        };
        let __kest_call = #call;
        #attribute_prologue
        #inputs
    };

    let new_block: TokenStream2 = if fallible {
        if asyncness {
            quote! {{
                #prologue
                __kest_hook.#call_fn(__kest_call, async move { let __kest_out: #output_ty = #body; __kest_out })
                    .await
                    .map_err(#p::HookError::into_inner)
            }}
        } else {
            quote! {{
                #prologue
                __kest_hook.#call_fn(__kest_call, move || -> #output_ty { #body })
                    .map_err(#p::HookError::into_inner)
            }}
        }
    } else if asyncness {
        quote! {{
            #prologue
            __kest_hook.#call_fn(__kest_call, async move {
                // The body runs in its own async block so that an early
                // `return x;` leaves with `x`, not with the wrapped result.
                let __kest_out: #output_ty = async move #body.await;
                ::core::result::Result::<#output_ty, ::core::convert::Infallible>::Ok(__kest_out)
            })
            .await
            .map_err(#p::infallible_hook_error)
        }}
    } else {
        quote! {{
            #prologue
            __kest_hook.#call_fn(__kest_call, move || {
                let __kest_out: #output_ty = (move || -> #output_ty { #body })();
                ::core::result::Result::<#output_ty, ::core::convert::Infallible>::Ok(__kest_out)
            })
            .map_err(#p::infallible_hook_error)
        }}
    };
    if !fallible {
        // Spanned at the written return type: on a trait-impl method the
        // compiler's "incompatible type for trait" error then points at it
        // and shows `Result<T, KestError>`, the reason for the mismatch.
        let span = match &func.sig.output {
            ReturnType::Default => func.sig.ident.span(),
            ReturnType::Type(_, ty) => ty.span(),
        };
        func.sig.output = syn::parse2(quote_spanned! {span=>
            -> ::core::result::Result<#output_ty, #p::KestError>
        })?;
    }
    *func.block = syn::parse2(new_block)?;
    Ok(quote! { #func })
}
