import type { BlobStore, ByteStream, ObjectBody, ObjectInfo, ObjectRange } from '../../ports/blob-store.js';

/**
 * In-memory BlobStore for unit tests of small content. It buffers each object whole, which
 * is exactly what production adapters must never do; it exists to exercise core quickly.
 */
export class MemoryBlobStore implements BlobStore {
  readonly objects = new Map<string, Uint8Array>();

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const o = this.objects.get(key);
    return o ? { size: o.byteLength } : undefined;
  }

  async get(key: string, range?: ObjectRange): Promise<ObjectBody | undefined> {
    const o = this.objects.get(key);
    if (!o) return undefined;
    const part = range ? o.subarray(range.offset, range.offset + range.length) : o;
    return {
      size: o.byteLength,
      body: new ReadableStream<Uint8Array>({
        start(c) {
          if (part.byteLength) c.enqueue(part.slice());
          c.close();
        },
      }),
    };
  }

  async put(key: string, body: ByteStream, size?: number): Promise<ObjectInfo> {
    const chunks: Uint8Array[] = [];
    let total = 0;
    for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
      chunks.push(chunk);
      total += chunk.byteLength;
    }
    if (size !== undefined && total !== size) throw new Error(`short write: ${total} of ${size} bytes`);
    const out = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.byteLength;
    }
    this.objects.set(key, out);
    return { size: total };
  }

  async delete(key: string): Promise<void> {
    this.objects.delete(key);
  }

  async move(from: string, to: string): Promise<void> {
    const o = this.objects.get(from);
    if (!o) throw new Error(`no object at ${from}`);
    this.objects.set(to, o);
    this.objects.delete(from);
  }
}
