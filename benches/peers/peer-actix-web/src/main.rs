//! peer-actix-web: the `hello` routes on actix-web (one accept thread
//! handing connections to N single-threaded workers), a peer of forkless in
//! the HTTP bench.
//!
//! Run with: `cargo run --release -p peer-actix-web -- --threads 2 --listen 127.0.0.1:0`

#[path = "../../args.rs"]
mod args;

use std::process::ExitCode;

use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, HttpServer, web};

fn main() -> ExitCode {
    let args = args::parse();
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot serve {}: {e}", args.listen);
            ExitCode::FAILURE
        }
    }
}

fn serve(args: args::Args) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(args.listen)?;
    let addr = listener.local_addr()?;
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(|| {
            App::new()
                .route("/", web::get().to(hello))
                .route("/", web::route().to(method_not_allowed))
                .default_service(web::to(not_found))
        })
        .workers(args.threads)
        .listen(listener)?
        .run();
        println!("listening on http://{addr}");
        server.await
    })
}

async fn hello() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("Hello World\n")
}

async fn method_not_allowed() -> HttpResponse {
    HttpResponse::new(StatusCode::METHOD_NOT_ALLOWED)
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("not found\n")
}
