/**
 * A process that writes one large object slowly to an FsBlobStore, for the crash test
 * (test/contract/fs-blob-store-crash.test.ts), started as
 *   node --import ./test/support/register-ts.mjs test/support/fs-blob-writer.ts ROOT KEY BYTES CHUNK PAUSE_MS
 * It puts BYTES bytes at KEY in chunks of CHUNK bytes, pausing PAUSE_MS before each, and
 * prints "sent <n>" each time the store has pulled another chunk, then "done" once the put
 * resolved. The test SIGKILLs it in the middle.
 */
import { FsBlobStore } from '../../src/adapters/local/fs-blob-store.js';

const [root, key, total, chunk, pause] = process.argv.slice(2);
if (!root || !key || !total || !chunk || !pause) throw new Error('usage: fs-blob-writer.ts ROOT KEY BYTES CHUNK PAUSE_MS');
const size = Number(total);
const piece = Number(chunk);

let sent = 0;
const body = new ReadableStream<Uint8Array>(
  {
    async pull(controller) {
      await new Promise((r) => setTimeout(r, Number(pause)));
      if (sent >= size) return controller.close();
      const n = Math.min(piece, size - sent);
      controller.enqueue(new Uint8Array(n).fill(sent % 251));
      sent += n;
      process.stdout.write(`sent ${sent}\n`);
    },
  },
  { highWaterMark: 0 },
);

await new FsBlobStore(root).put(key, body, size);
process.stdout.write('done\n');
