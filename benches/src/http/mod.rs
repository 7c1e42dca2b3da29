//! The HTTP bench (`http-bench` binary): forkless `hello` against peers with
//! the same routes (tokio+hyper, actix-web, may-minihttp, Node cluster) and
//! the floor (no framework: raw io_uring, raw epoll), built in this
//! workspace and run in one interleaved run.
//!
//! - [`server`] starts and kills the servers;
//! - [`wrk`] and [`loadgen`] put load on them (wrk one request at a time,
//!   the built-in generator also pipelined); [`h2load`] reads the HTTP/2
//!   load generator's report (the TLS bench, `benches/benches/tls.rs`);
//! - [`proc`] reads their CPU time and memory from `/proc`;
//! - [`syscalls`] counts syscalls and io_uring submissions per request;
//! - [`mixed`] is the mixed load (one request in ten burns ~5 ms of CPU);
//! - [`measure`] is one measurement of one server, [`results`] the tables
//!   and goals over all rounds, [`chart`] the SVG.

pub mod chart;
pub mod h2load;
pub mod loadgen;
pub mod measure;
pub mod mixed;
pub mod proc;
pub mod results;
pub mod server;
pub mod stats;
pub mod syscalls;
pub mod wrk;
