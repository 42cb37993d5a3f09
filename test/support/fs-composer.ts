/**
 * A process that composes objects from parts in an FsBlobStore as fast as it can, for the crash
 * test (test/contract/fs-blob-store-crash.test.ts), started as
 *   node --import ./test/support/register-ts.mjs test/support/fs-composer.ts ROOT PARTS PART_BYTES
 * It puts PARTS scratch parts of PART_BYTES bytes under fills/c/ (part i filled with the byte
 * i + 1), prints "parts", then composes them onto blobs/c0, blobs/c1, ... in turn, deleting
 * each object's predecessor, printing "composed <i>" after each. The test SIGKILLs it anywhere.
 */
import { FsBlobStore } from '../../src/adapters/local/fs-blob-store.js';

const [root, count, bytes] = process.argv.slice(2);
if (!root || !count || !bytes) throw new Error('usage: fs-composer.ts ROOT PARTS PART_BYTES');
const store = new FsBlobStore(root);
const keys: string[] = [];
for (let i = 0; i < Number(count); i++) {
  const key = `fills/c/${String(i).padStart(4, '0')}`;
  const part = new Uint8Array(Number(bytes)).fill(i + 1);
  await store.put(key, new Response(part).body!, part.byteLength, { scratch: true });
  keys.push(key);
}
process.stdout.write('parts\n');
for (let i = 0; ; i++) {
  await store.compose(keys, `blobs/c${i}`);
  if (i > 0) await store.delete(`blobs/c${i - 1}`);
  process.stdout.write(`composed ${i}\n`);
}
