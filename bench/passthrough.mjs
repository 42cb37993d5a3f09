// The floor for a cold fill on Node, for bench:fill: a node:http pass-through that does the
// per-byte work a fill cannot skip (receive from the upstream, SHA-256, write to a file, send
// to the client) and nothing else: no lease, no parts, no verification before the client gets
// the bytes, no index. Started as
//   node bench/passthrough.mjs UPSTREAM_URL DIR PORT
// it serves GET <path> on 127.0.0.1:PORT as the upstream's GET <path>. The file is written
// without backpressure (the floor gets every benefit of the doubt).
import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { createServer, get } from 'node:http';
import { join } from 'node:path';

const [upstream, dir, port] = process.argv.slice(2);
const server = createServer((req, res) => {
  get(`${upstream}${req.url}`, (up) => {
    res.writeHead(up.statusCode ?? 502, { 'content-length': up.headers['content-length'] });
    const hash = createHash('sha256');
    const file = createWriteStream(join(dir, randomUUID()));
    up.on('data', (chunk) => {
      hash.update(chunk);
      file.write(chunk);
      if (!res.write(chunk)) {
        up.pause();
        res.once('drain', () => up.resume());
      }
    });
    up.on('end', () => {
      hash.digest();
      file.end();
      res.end();
    });
  }).on('error', () => res.destroy());
});
server.listen(Number(port), '127.0.0.1');
