//! The expansion of `#[shard_main]`.
//!
//! On success: the user's function, untouched, and a `fn main` that hands it
//! to `forkless::__private::run_main`. A function called `main` is nested in
//! the generated one so the two names do not clash.
//!
//! On error: the `compile_error!`s, beside the user's function as close to
//! unchanged as compiles (so IDEs keep completing inside it) and an empty
//! `fn main`. Nothing more: every other item would risk a second error that
//! buries the first.

use proc_macro2::{Literal, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ReturnType};

use crate::options::Options;
use crate::shard_fn::ShardFn;

/// Expands `#[shard_main(args)] item`.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse2::<ShardFn>(item.clone()) {
        Ok(function) => function,
        Err(error) => {
            // Not a function, or one whose signature rustc will report as
            // malformed too: keep the tokens as they are.
            let error = error.into_compile_error();
            let item = beside_stub_main(item.clone(), names_main(item));
            return quote!(#error #item);
        }
    };
    match (Options::parse(args), function.check()) {
        (Ok(options), None) => entry_point(&function, &options),
        (Ok(_), Some(error)) | (Err(error), None) => failed(error, function),
        (Err(mut error), Some(more)) => {
            error.combine(more);
            failed(error, function)
        }
    }
}

/// The user's function and the `fn main` that runs it on every shard.
fn entry_point(function: &ShardFn, options: &Options) -> TokenStream {
    let ident = &function.sig.ident;
    let nested = function.is_main().then_some(function);
    let top_level = (!function.is_main()).then_some(function);
    let cfgs = function.cfgs();
    let options = main_options(options);

    // The runtime's bounds check the argument and return types. Give each
    // piece of the call the span of the type it checks, so that a wrong type
    // is reported on the user's type, not on the attribute.
    let argument_span = match function.sig.inputs.first() {
        Some(FnArg::Typed(argument)) => argument.ty.span(),
        _ => Span::call_site(),
    };
    let output_span = match &function.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => function.sig.ident.span(),
    };
    let mut shard_fn = ident.clone();
    shard_fn.set_span(argument_span);
    let run_main = quote_spanned! {output_span=>
        ::forkless::__private::run_main(#options, #shard_fn)
    };

    quote! {
        #top_level

        #(#cfgs)*
        fn main() -> ::std::process::ExitCode {
            #nested
            #run_main
        }
    }
}

/// The `MainOptions` literal: package metadata and the attribute's defaults.
fn main_options(options: &Options) -> TokenStream {
    let default_listen = match &options.listen {
        Some(address) => quote!(::core::option::Option::Some(#address)),
        None => quote!(::core::option::Option::None),
    };
    let default_shards = match options.shards {
        Some((count, span)) => {
            let mut count = Literal::usize_suffixed(count);
            count.set_span(span);
            quote!(::core::option::Option::Some(#count))
        }
        None => quote!(::core::option::Option::None),
    };
    let args = match &options.args {
        Some(ty) => {
            quote_spanned!(ty.span()=> ::core::option::Option::Some(::forkless::__private::AppArgsSpec::of::<#ty>()))
        }
        None => quote!(::core::option::Option::None),
    };
    quote! {
        ::forkless::__private::MainOptions {
            name: ::core::env!("CARGO_PKG_NAME"),
            version: ::core::env!("CARGO_PKG_VERSION"),
            about: ::core::option_env!("CARGO_PKG_DESCRIPTION"),
            default_listen: #default_listen,
            default_shards: #default_shards,
            args: #args,
        }
    }
}

/// The errors, beside the user's function stripped of what rustc would
/// reject on its own and an empty `fn main`, so that a missing entry point
/// is not reported too.
fn failed(error: syn::Error, mut function: ShardFn) -> TokenStream {
    let error = error.into_compile_error();
    if function.has_receiver() {
        // `self` outside an `impl` is an error of its own: leave it out.
        return quote! { #error fn main() {} };
    }
    function.sig.constness = None;
    function.sig.abi = None;
    function.sig.variadic = None;
    let is_main = function.is_main();
    let function = beside_stub_main(quote!(#[allow(unused)] #function), is_main);
    quote!(#error #function)
}

/// `item` and an empty `fn main`; `item` goes inside it when it is called
/// `main` itself, where rustc does not hold it to the entry point's rules.
fn beside_stub_main(item: TokenStream, is_main: bool) -> TokenStream {
    if is_main {
        quote! { fn main() { #item } }
    } else {
        quote! { #item fn main() {} }
    }
}

/// Whether the unparsed `item` is a function called `main`.
fn names_main(item: TokenStream) -> bool {
    let mut tokens = item.into_iter();
    while let Some(token) = tokens.next() {
        if matches!(&token, TokenTree::Ident(ident) if ident == "fn") {
            return matches!(tokens.next(), Some(TokenTree::Ident(ident)) if ident == "main");
        }
    }
    false
}
