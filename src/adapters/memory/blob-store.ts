import { systemClock, type Clock } from '../../ports/clock.js';
import {
  MAX_LIST_KEYS,
  type BlobStore,
  type ByteStream,
  type ObjectBody,
  type ObjectInfo,
  type ObjectListOptions,
  type ObjectPage,
  type ObjectRange,
} from '../../ports/blob-store.js';
import { compareBytes } from './meta-index.js';

interface Stored {
  bytes: Uint8Array;
  /** clock.now() when the object was put or moved here. */
  lastModified: number;
}

/**
 * In-memory BlobStore for unit tests of small content. It buffers each object whole, which
 * is exactly what production adapters must never do; it exists to exercise core quickly.
 * Write times come from the injected clock, so retention can be tested without sleeping.
 */
export class MemoryBlobStore implements BlobStore {
  readonly objects = new Map<string, Stored>();

  constructor(private readonly clock: Clock = systemClock) {}

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const o = this.objects.get(key);
    return o ? { size: o.bytes.byteLength, lastModified: o.lastModified } : undefined;
  }

  async get(key: string, range?: ObjectRange): Promise<ObjectBody | undefined> {
    const o = this.objects.get(key)?.bytes;
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
    this.objects.set(key, { bytes: out, lastModified: this.clock.now() });
    return { size: total };
  }

  async delete(key: string): Promise<void> {
    this.objects.delete(key);
  }

  async list(prefix: string, options: ObjectListOptions): Promise<ObjectPage> {
    const limit = Math.min(Math.max(1, Math.floor(options.limit)), MAX_LIST_KEYS);
    const { after } = options;
    const found = [...this.objects.keys()]
      .filter((key) => key.startsWith(prefix) && (after === undefined || compareBytes(key, after) > 0))
      .sort(compareBytes);
    const keys = found.slice(0, limit).map((key) => {
      const o = this.objects.get(key)!;
      return { key, size: o.bytes.byteLength, lastModified: o.lastModified };
    });
    return found.length > limit ? { keys, next: keys[keys.length - 1]!.key } : { keys };
  }

  async move(from: string, to: string): Promise<void> {
    const o = this.objects.get(from);
    if (!o) throw new Error(`no object at ${from}`);
    this.objects.set(to, { bytes: o.bytes, lastModified: this.clock.now() });
    this.objects.delete(from);
  }

  /** Concatenates the parts; a missing part rejects before anything is written. */
  async compose(parts: string[], to: string): Promise<ObjectInfo> {
    const sources = parts.map((key) => {
      const o = this.objects.get(key);
      if (!o) throw new Error(`no object at ${key}`);
      return o.bytes;
    });
    const out = new Uint8Array(sources.reduce((n, b) => n + b.byteLength, 0));
    let at = 0;
    for (const b of sources) {
      out.set(b, at);
      at += b.byteLength;
    }
    this.objects.set(to, { bytes: out, lastModified: this.clock.now() });
    return { size: out.byteLength };
  }
}
