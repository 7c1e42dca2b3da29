//! The function under `#[shard_main]`, and the checks on its signature.
//!
//! The body is kept as raw tokens, never parsed: a half-typed body (what an
//! IDE sends while the user types) must not stop the expansion, and rustc
//! reports the body's own mistakes better than a macro could.

use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, FnArg, Signature, Token, Visibility};

/// What the attribute expects, as shown in error messages.
const EXPECTED: &str = "`async fn main(shard: forkless::Shard)`";

/// An `fn` item with its body left unparsed.
pub(crate) struct ShardFn {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    pub(crate) body: Group,
}

impl Parse for ShardFn {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let lookahead = [
            input.peek(Token![fn]),
            input.peek(Token![async]),
            input.peek(Token![const]) && !input.peek2(syn::Ident),
            input.peek(Token![unsafe]),
            input.peek(Token![extern]),
        ];
        if !lookahead.contains(&true) {
            let message =
                format!("`#[shard_main]` goes on the `async fn` every shard runs: {EXPECTED}");
            return Err(input.error(message));
        }
        let sig = input.parse()?;
        let body = match input.parse::<Group>() {
            Ok(group) if group.delimiter() == Delimiter::Brace => group,
            _ => return Err(input.error("expected the function's body `{ ... }`")),
        };
        Ok(Self {
            attrs,
            vis,
            sig,
            body,
        })
    }
}

impl ToTokens for ShardFn {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        let Self {
            attrs,
            vis,
            sig,
            body,
        } = self;
        tokens.extend(quote!(#(#attrs)* #vis #sig #body));
    }
}

impl ShardFn {
    /// Whether the function is called `main`, the name the generated entry
    /// point takes too.
    pub(crate) fn is_main(&self) -> bool {
        self.sig.ident == "main"
    }

    /// The function's `#[cfg(...)]` attributes: the generated `fn main`
    /// exists exactly when the function does.
    pub(crate) fn cfgs(&self) -> impl Iterator<Item = &Attribute> {
        self.attrs.iter().filter(|attr| attr.path().is_ident("cfg"))
    }

    /// Whether the function has a `self` argument: emitted alone, outside an
    /// `impl`, it would add rustc's own error to ours.
    pub(crate) fn has_receiver(&self) -> bool {
        self.sig.receiver().is_some()
    }

    /// All that is wrong with the signature, one error per offending token,
    /// in source order; `None` when it has the shape of a shard function.
    ///
    /// Argument and return *types* are left to the compiler: the runtime's
    /// bounds check them, at the spans the expansion gives them.
    pub(crate) fn check(&self) -> Option<syn::Error> {
        let sig = &self.sig;
        let expected = format!("`async fn {}(shard: forkless::Shard)`", sig.ident);
        let mut errors = Vec::new();
        let mut fail = |tokens: TokenStream, message: &str| {
            errors.push(syn::Error::new_spanned(tokens, message));
        };
        if let Some(token) = sig.constness {
            fail(
                quote!(#token),
                "a shard function cannot be `const`: remove `const`",
            );
        }
        if let Some(token) = sig.unsafety {
            let message = "a shard function cannot be `unsafe`: remove `unsafe` \
                           and use an `unsafe` block inside the body";
            fail(quote!(#token), message);
        }
        if let Some(abi) = &sig.abi {
            fail(
                quote!(#abi),
                "a shard function cannot have an ABI: remove `extern`",
            );
        }
        if sig.asyncness.is_none() {
            let fn_token = sig.fn_token;
            let message = format!("a shard function must be `async`: write {expected}");
            fail(quote!(#fn_token), &message);
        }
        if !sig.generics.params.is_empty() {
            let message = "a shard function cannot be generic: remove the generic parameters; \
                           the runtime calls it with a `forkless::Shard`";
            fail(sig.generics.to_token_stream(), message);
        }
        let mut inputs = sig.inputs.iter();
        match inputs.next() {
            None => {
                // The parentheses, `()`: where the argument goes.
                let parens = Group::new(Delimiter::Parenthesis, TokenStream::new());
                let mut parens = TokenTree::Group(parens);
                parens.set_span(sig.paren_token.span.join());
                let message = format!(
                    "a shard function takes the shard context as its one argument: \
                     write {expected}"
                );
                fail(parens.into(), &message);
            }
            Some(FnArg::Receiver(receiver)) => {
                let message = format!(
                    "`#[shard_main]` cannot be used on a method: \
                     take the shard context instead, {expected}"
                );
                fail(quote!(#receiver), &message);
            }
            Some(FnArg::Typed(_)) => {
                let extra: Vec<&FnArg> = inputs.collect();
                if !extra.is_empty() {
                    let message = "a shard function takes exactly one argument, \
                                   the shard context: remove the others and build what they \
                                   carried inside the function, once per shard";
                    fail(quote!(#(#extra),*), message);
                }
            }
        }
        if let Some(variadic) = &sig.variadic {
            fail(
                quote!(#variadic),
                "a shard function cannot be variadic: remove `...`",
            );
        }
        if let Some(clause) = &sig.generics.where_clause {
            let (keyword, predicates) = (clause.where_token, &clause.predicates);
            let message = "a shard function cannot have a `where` clause: remove it";
            fail(quote!(#keyword #predicates), message);
        }
        errors.into_iter().reduce(|mut all, error| {
            all.combine(error);
            all
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ShardFn;
    use quote::quote;

    fn errors(item: proc_macro2::TokenStream) -> Vec<String> {
        let function: ShardFn = syn::parse2(item).expect("a function");
        function
            .check()
            .map(|error| error.into_iter().map(|e| e.to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_shard_function_passes() {
        assert!(
            errors(quote!(
                async fn main(shard: forkless::Shard) {}
            ))
            .is_empty()
        );
        assert!(
            errors(quote!(
                pub async fn serve(_: Shard) -> Result<(), E> {
                    x
                }
            ))
            .is_empty()
        );
    }

    #[test]
    fn the_body_is_not_parsed() {
        assert!(errors(quote!(async fn main(shard: Shard) { let x = ; })).is_empty());
    }

    #[test]
    fn errors_come_in_source_order() {
        let found = errors(quote!(
            const unsafe fn app<T>(a: T, b: T)
            where
                T: Copy,
            {
            }
        ));
        let starts: Vec<&str> = found.iter().map(|m| &m[..m.len().min(30)]).collect();
        assert_eq!(
            starts,
            [
                "a shard function cannot be `co",
                "a shard function cannot be `un",
                "a shard function must be `asyn",
                "a shard function cannot be gen",
                "a shard function takes exactly",
                "a shard function cannot have a",
            ]
        );
    }

    #[test]
    fn a_method_is_one_error_not_two() {
        let found = errors(quote!(
            async fn serve(&self, shard: Shard) {}
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("`async fn serve(shard: forkless::Shard)`"));
    }

    #[test]
    fn not_a_function() {
        let error = syn::parse2::<ShardFn>(quote!(
            struct App;
        ))
        .err()
        .expect("an error");
        assert!(
            error
                .to_string()
                .starts_with("`#[shard_main]` goes on the `async fn`")
        );
    }
}
