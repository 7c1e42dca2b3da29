// Node cluster peer of the HTTP bench: the `hello` routes (GET / -> 200
// "Hello World\n", other paths 404) on N worker processes sharing one port,
// the primary handing out connections round-robin (Node's default on Linux).
//
// Run with: node benches/peers/node/cluster.js --threads 2 --listen 127.0.0.1:0
// Prints `listening on http://IP:PORT` once every worker listens (port 0:
// every worker gets the same port in cluster mode).
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');

function parseArgs(argv) {
  const args = { threads: os.availableParallelism(), host: '127.0.0.1', port: 8080 };
  for (let i = 0; i < argv.length; i += 2) {
    const value = argv[i + 1];
    if (argv[i] === '--threads' && /^[1-9][0-9]*$/.test(value || '')) {
      args.threads = Number(value);
    } else if (argv[i] === '--listen' && /^[0-9.]+:[0-9]+$/.test(value || '')) {
      const at = value.lastIndexOf(':');
      args.host = value.slice(0, at);
      args.port = Number(value.slice(at + 1));
    } else {
      console.error(`error: bad argument ${argv[i]} ${value ?? ''}`);
      console.error('usage: [--threads N] [--listen IP:PORT]');
      process.exit(2);
    }
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));

if (cluster.isPrimary) {
  let listening = 0;
  for (let i = 0; i < args.threads; i++) cluster.fork();
  cluster.on('listening', (_worker, address) => {
    listening += 1;
    if (listening === args.threads) {
      console.log(`listening on http://${args.host}:${address.port}`);
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    console.error(`worker ${worker.process.pid} exited (${signal || code})`);
    process.exit(1);
  });
} else {
  const hello = Buffer.from('Hello World\n');
  const notFound = Buffer.from('not found\n');
  const text = 'text/plain; charset=utf-8';
  http
    .createServer((req, res) => {
      // Content-Length, not chunked: the same framing as the other peers.
      if (req.url === '/' && req.method === 'GET') {
        res.writeHead(200, { 'content-type': text, 'content-length': hello.length });
        res.end(hello);
      } else if (req.url === '/') {
        res.writeHead(405, { 'content-length': 0 });
        res.end();
      } else {
        res.writeHead(404, { 'content-type': text, 'content-length': notFound.length });
        res.end(notFound);
      }
    })
    .listen(args.port, args.host);
}
