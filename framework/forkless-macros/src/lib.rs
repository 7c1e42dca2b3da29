//! The `#[shard_main]` attribute of [forkless](https://docs.rs/forkless).
//!
//! Use it through the re-export, `forkless::shard_main`, where the full
//! documentation lives; this crate is an implementation detail and its
//! expansion names paths under `forkless::__private`.
//!
//! `#[shard_main]` turns an `async fn` that takes the shard context into the
//! program's entry point. The generated `fn main` parses the command line
//! (`--listen`, `--shards`, ...), starts one shard per core and runs the
//! function once on every shard:
//!
//! ```no_run
//! #[forkless::shard_main(listen = "127.0.0.1:8080", shards = 4)]
//! async fn main(shard: forkless::Shard) -> std::io::Result<()> {
//!     // Runs on every shard, each with its own listener on the shared port.
//!     Ok(())
//! }
//! ```
//!
//! Options, each a default the command line overrides, both checked at
//! compile time:
//!
//! - `listen = "IP:PORT"`: the address to serve on, a `std::net::SocketAddr`;
//! - `shards = N`: how many shards to run (N > 0); without it, one per CPU
//!   the process may use;
//! - `args = AppArgs`: the app's own arguments, a type deriving
//!   `clap::Args`, merged into the command line and read on every shard
//!   with `shard.args::<AppArgs>()`.
//!
//! Mistakes are reported on the token to fix, with what to write instead.

mod options;
mod shard_fn;
mod shard_main;

use proc_macro::TokenStream;

/// Makes an `async fn` taking a `forkless::Shard` the program's entry point,
/// run once on every shard.
///
/// Put it in the binary's crate root (`main.rs`), where `fn main` belongs.
/// The function may have any name: one called `main` is kept inside the
/// generated `fn main`, any other stays where it is. It returns `()` or a
/// `Result<(), E>` with `E: Display` (the runtime reports an `Err` and exits
/// non-zero).
///
/// Options: `listen = "127.0.0.1:8080"` (the default listen address),
/// `shards = 4` (the default shard count) and `args = AppArgs` (the app's
/// own `clap::Args`), comma separated.
///
/// ```no_run
/// #[forkless::shard_main(listen = "0.0.0.0:8080")]
/// async fn main(shard: forkless::Shard) {
///     let _ = shard;
/// }
/// ```
///
/// See `forkless::shard_main` for the full documentation.
#[proc_macro_attribute]
pub fn shard_main(args: TokenStream, item: TokenStream) -> TokenStream {
    shard_main::expand(args.into(), item.into()).into()
}
