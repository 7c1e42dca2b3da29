//! The Greeter service's tonic code, described by hand with
//! `tonic_build::manual` (the messages are prost structs in `src/lib.rs`):
//! no `.proto` compiler needed to build.

use tonic_build::manual::{Builder, Method, Service};

fn method(name: &str, route: &str, streaming: bool) -> Method {
    let builder = Method::builder()
        .name(name)
        .route_name(route)
        .input_type("crate::HelloRequest")
        .output_type("crate::HelloReply")
        .codec_path("tonic_prost::ProstCodec");
    if streaming {
        builder.server_streaming().build()
    } else {
        builder.build()
    }
}

fn main() {
    let greeter = Service::builder()
        .name("Greeter")
        .package("greeter")
        .method(method("say_hello", "SayHello", false))
        .method(method("say_hello_stream", "SayHelloStream", true))
        .build();
    Builder::new().compile(&[greeter]);
}
