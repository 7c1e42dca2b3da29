//! The options of `#[shard_main(...)]`: `listen = "ADDR"`, `shards = N`
//! and `args = Type` (the app's own `clap::Args`).
//!
//! Both are defaults the command line can override; both are checked here, at
//! compile time, so that a typo fails the build instead of the first start.
//! Every error points at the token to fix and says what to write instead.

use std::net::SocketAddr;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ExprUnary, Lit, LitInt, LitStr, Meta, Token, UnOp};

/// The options an attribute may carry, as they appear in error messages.
const KNOWN: &str = "`listen = \"127.0.0.1:8080\"`, `shards = 4`, `args = AppArgs`";

/// The parsed options of one `#[shard_main(...)]`.
#[derive(Default)]
pub(crate) struct Options {
    /// `listen = "..."`: the literal, already checked to be a `SocketAddr`.
    pub(crate) listen: Option<LitStr>,
    /// `shards = N`: the value (> 0) and the span of its literal.
    pub(crate) shards: Option<(usize, Span)>,
    /// `args = Type`: the app's own arguments, a `clap::Args` type.
    pub(crate) args: Option<syn::TypePath>,
}

impl Options {
    /// Parses the tokens between the attribute's parentheses.
    ///
    /// Stops at the first mistake: one error, on the token to fix.
    pub(crate) fn parse(args: TokenStream) -> syn::Result<Self> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated
            .parse2(args)
            .map_err(|error| {
                let message = format!(
                    "{error}: `#[shard_main]` options are comma separated `key = value` pairs: {KNOWN}"
                );
                syn::Error::new(error.span(), message)
            })?;
        let mut options = Self::default();
        for meta in metas {
            options.set(meta)?;
        }
        Ok(options)
    }

    fn set(&mut self, meta: Meta) -> syn::Result<()> {
        let key = meta.path();
        let Some(name) = key.get_ident().map(ToString::to_string) else {
            return Err(unknown(key));
        };
        let example = match name.as_str() {
            "listen" => "listen = \"127.0.0.1:8080\"",
            "shards" => "shards = 4",
            "args" => "args = AppArgs",
            _ => return Err(unknown(key)),
        };
        let Meta::NameValue(pair) = meta else {
            let message = format!("`{name}` needs a value: write `{example}`");
            return Err(syn::Error::new_spanned(meta, message));
        };
        let duplicate = match name.as_str() {
            "listen" => self.listen.replace(listen(&pair.value)?).is_some(),
            "args" => self.args.replace(args(&pair.value)?).is_some(),
            _ => self.shards.replace(shards(&pair.value)?).is_some(),
        };
        if duplicate {
            let message = format!("`{name}` is given twice: keep one `{example}`");
            return Err(syn::Error::new_spanned(&pair.path, message));
        }
        Ok(())
    }
}

fn unknown(key: &syn::Path) -> syn::Error {
    let shown = key.to_token_stream().to_string().replace(' ', "");
    let message = format!("unknown `#[shard_main]` option `{shown}`: the options are {KNOWN}");
    syn::Error::new_spanned(key, message)
}

/// `listen = "ADDR"`: a string literal that parses as a `SocketAddr`.
fn listen(value: &Expr) -> syn::Result<LitStr> {
    const HINT: &str = "write an IP address and a port, e.g. `listen = \"127.0.0.1:8080\"` \
                        or `listen = \"[::]:8080\"` (host names are not resolved)";
    let Expr::Lit(ExprLit {
        lit: Lit::Str(literal),
        ..
    }) = value
    else {
        let message = format!("`listen` takes a string literal: {HINT}");
        return Err(syn::Error::new_spanned(value, message));
    };
    match literal.value().parse::<SocketAddr>() {
        Ok(_) => Ok(literal.clone()),
        Err(_) => {
            let message = format!(
                "`{}` is not a socket address: {HINT}",
                literal.value().escape_default()
            );
            Err(syn::Error::new(literal.span(), message))
        }
    }
}

/// `args = Type`: a path to a type (the compiler checks it is `clap::Args`).
fn args(value: &Expr) -> syn::Result<syn::TypePath> {
    match value {
        Expr::Path(path) if path.attrs.is_empty() => Ok(syn::TypePath {
            qself: path.qself.clone(),
            path: path.path.clone(),
        }),
        _ => {
            let message = "`args` takes the type of the app's arguments, a struct deriving \
                           `clap::Args`: write `args = AppArgs`";
            Err(syn::Error::new_spanned(value, message))
        }
    }
}

/// `shards = N`: an integer literal greater than zero.
fn shards(value: &Expr) -> syn::Result<(usize, Span)> {
    const HINT: &str = "write a number of shards greater than zero, e.g. `shards = 4`, \
                        or leave `shards` out to run one shard per available CPU";
    let fail = |tokens: &dyn ToTokens, what: &str| {
        Err(syn::Error::new_spanned(tokens, format!("{what}: {HINT}")))
    };
    let literal: &LitInt = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(literal),
            ..
        }) => literal,
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        }) => return fail(value, "`shards` cannot be negative"),
        _ => return fail(value, "`shards` takes an integer literal"),
    };
    if literal.base10_digits().starts_with('-') {
        return fail(literal, "`shards` cannot be negative");
    }
    if !matches!(literal.suffix(), "" | "usize") {
        let message = format!("`shards` is a `usize`, not `{}`", literal.suffix());
        return fail(literal, &message);
    }
    match literal.base10_parse::<usize>() {
        Ok(0) => fail(literal, "`shards` cannot be 0"),
        Ok(count) => Ok((count, literal.span())),
        Err(_) => fail(literal, "`shards` is too large"),
    }
}

#[cfg(test)]
mod tests {
    use super::Options;
    use quote::quote;

    fn error(args: proc_macro2::TokenStream) -> String {
        match Options::parse(args.clone()) {
            Ok(_) => panic!("expected an error for `{args}`"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn no_options() {
        let options = Options::parse(quote!()).expect("empty options parse");
        assert!(options.listen.is_none());
        assert!(options.shards.is_none());
    }

    #[test]
    fn both_options_in_any_order_with_trailing_comma() {
        let options = Options::parse(quote!(shards = 4, listen = "[::1]:0",)).expect("valid");
        assert_eq!(
            options.listen.map(|l| l.value()).as_deref(),
            Some("[::1]:0")
        );
        assert_eq!(options.shards.map(|(n, _)| n), Some(4));
    }

    #[test]
    fn shards_accepts_a_usize_suffix() {
        let options = Options::parse(quote!(shards = 2usize)).expect("valid");
        assert_eq!(options.shards.map(|(n, _)| n), Some(2));
    }

    #[test]
    fn unknown_option_lists_the_known_ones() {
        let message = error(quote!(threads = 4));
        assert!(
            message.contains("unknown `#[shard_main]` option `threads`"),
            "{message}"
        );
        assert!(
            message.contains("`listen = \"127.0.0.1:8080\"`, `shards = 4`, `args = AppArgs`"),
            "{message}"
        );
    }

    #[test]
    fn unknown_path_option_is_shown_without_spaces() {
        let message = error(quote!(forkless::listen = "127.0.0.1:1"));
        assert!(message.contains("option `forkless::listen`"), "{message}");
    }

    #[test]
    fn args_takes_a_type() {
        let options = Options::parse(quote!(args = app::AppArgs)).expect("valid");
        assert!(options.args.is_some());
        let message = error(quote!(args = "AppArgs"));
        assert!(message.starts_with("`args` takes the type"), "{message}");
        let message = error(quote!(args = A, args = B));
        assert!(message.starts_with("`args` is given twice"), "{message}");
    }

    #[test]
    fn duplicate_option() {
        let message = error(quote!(shards = 1, shards = 2));
        assert!(message.starts_with("`shards` is given twice"), "{message}");
    }

    #[test]
    fn option_without_value() {
        let message = error(quote!(listen));
        assert!(message.starts_with("`listen` needs a value"), "{message}");
        let message = error(quote!(shards(4)));
        assert!(message.contains("write `shards = 4`"), "{message}");
    }

    #[test]
    fn listen_must_be_a_socket_address() {
        for bad in ["localhost:8080", "127.0.0.1", ":8080", "127.0.0.1:99999"] {
            let message = error(quote!(listen = #bad));
            assert!(
                message.contains("is not a socket address"),
                "{bad}: {message}"
            );
        }
        let message = error(quote!(listen = 8080));
        assert!(
            message.starts_with("`listen` takes a string literal"),
            "{message}"
        );
    }

    #[test]
    fn shards_must_be_a_positive_integer() {
        let cases = [
            (quote!(shards = 0), "`shards` cannot be 0"),
            (quote!(shards = -2), "`shards` cannot be negative"),
            (quote!(shards = "4"), "`shards` takes an integer literal"),
            (quote!(shards = max), "`shards` takes an integer literal"),
            (quote!(shards = 4u8), "`shards` is a `usize`, not `u8`"),
            (
                quote!(shards = 1_000_000_000_000_000_000_000),
                "`shards` is too large",
            ),
        ];
        for (args, expected) in cases {
            let message = error(args);
            assert!(message.starts_with(expected), "{expected}: {message}");
        }
    }

    #[test]
    fn malformed_options() {
        let message = error(quote!(listen = "127.0.0.1:80" shards = 4));
        assert!(
            message.contains("comma separated `key = value` pairs"),
            "{message}"
        );
    }
}
