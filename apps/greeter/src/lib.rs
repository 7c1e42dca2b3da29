//! The Greeter gRPC service: `greeter.Greeter/SayHello` (unary) and
//! `greeter.Greeter/SayHelloStream` (server-streaming), with gRPC health
//! checking (`grpc.health.v1.Health`), as one tower service ([`routes`])
//! for `Shard::serve_tower`.
//!
//! The messages are prost structs written here; `build.rs` generates the
//! tonic server and client from a hand-written description
//! (`tonic_build::manual`), so no `protoc` is needed. The same schema in
//! `.proto` form:
//!
//! ```text
//! package greeter;
//! service Greeter {
//!   rpc SayHello (HelloRequest) returns (HelloReply);
//!   rpc SayHelloStream (HelloRequest) returns (stream HelloReply);
//! }
//! message HelloRequest { string name = 1; uint32 count = 2; }
//! message HelloReply { string message = 1; uint32 shard = 2; }
//! ```

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

/// The tonic code `build.rs` generated: `greeter_server` and `greeter_client`.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/greeter.Greeter.rs"));
}

pub use proto::greeter_client::GreeterClient;
pub use proto::greeter_server::GreeterServer;

/// Most replies one `SayHelloStream` call streams.
pub const MAX_STREAMED: u32 = 1000;

/// Who to greet, and (for `SayHelloStream`) how many times.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

/// A greeting, from the shard that answered.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(uint32, tag = "2")]
    pub shard: u32,
}

/// The Greeter of one shard.
#[derive(Debug, Clone, Copy)]
pub struct Greeter {
    shard: u32,
}

impl Greeter {
    /// The Greeter of shard `shard` (it says so in each reply).
    pub fn new(shard: u32) -> Self {
        Self { shard }
    }

    fn reply(&self, message: String) -> HelloReply {
        HelloReply {
            message,
            shard: self.shard,
        }
    }
}

type Replies = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

#[tonic::async_trait]
impl proto::greeter_server::Greeter for Greeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        Ok(Response::new(self.reply(format!("Hello {name}!"))))
    }

    type SayHelloStreamStream = Replies;

    async fn say_hello_stream(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<Replies>, Status> {
        let HelloRequest { name, count } = request.into_inner();
        if count > MAX_STREAMED {
            return Err(Status::invalid_argument(format!(
                "count {count} is over {MAX_STREAMED}"
            )));
        }
        let greeter = *self;
        let replies = futures::stream::iter(
            (1..=count).map(move |i| Ok(greeter.reply(format!("Hello {name}! ({i}/{count})")))),
        );
        Ok(Response::new(Box::pin(replies)))
    }
}

/// Greeter and gRPC health as one tower service, for `serve_tower`; health
/// reports the Greeter (and the server as a whole) as serving.
///
/// ```no_run
/// # async fn example(shard: forkless::Shard) -> Result<(), forkless::Error> {
/// let routes = greeter::routes(u32::try_from(shard.id().get()).unwrap_or(u32::MAX)).await;
/// shard.serve_tower(routes).await
/// # }
/// ```
pub async fn routes(shard: u32) -> tonic::service::Routes {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<GreeterServer<Greeter>>().await;
    tonic::service::Routes::new(GreeterServer::new(Greeter::new(shard))).add_service(health)
}
