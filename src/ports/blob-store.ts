/**
 * BlobStore: a flat key -> bytes store. It stores and fetches bytes and knows nothing of
 * digests, manifests or repositories; core chooses the keys (see core/registry/keys.ts) and
 * verifies content on the way in (core/streams.ts `verify`).
 */
/** Bytes as a WHATWG stream: the one stream type both Node 20 and workerd have. */
export type ByteStream = ReadableStream<Uint8Array>;

export interface ObjectInfo {
  size: number;
}

/** A byte range within an object; the caller guarantees offset + length <= size. */
export interface ObjectRange {
  offset: number;
  length: number;
}

export interface ObjectBody {
  body: ByteStream;
  /** Size of the whole object (not of the range). */
  size: number;
}

export interface BlobStore {
  /** The object's size, or undefined when there is no object at `key`. */
  stat(key: string): Promise<ObjectInfo | undefined>;

  /** Streams the object, or one range of it. undefined when there is no object at `key`. */
  get(key: string, range?: ObjectRange): Promise<ObjectBody | undefined>;

  /**
   * Writes `body` at `key`, replacing any object there.
   * Atomic: readers see the previous object or the whole new one, never a prefix. If `body`
   * errors, nothing new becomes visible and `put` rejects (with the stream's error where the
   * store can pass it on). `size`, when given, is the exact length of `body`.
   */
  put(key: string, body: ByteStream, size?: number): Promise<ObjectInfo>;

  /** Removes the object. Idempotent: removing an absent key succeeds. */
  delete(key: string): Promise<void>;

  /**
   * Optional ability: renames `from` to `to` in one atomic step, replacing `to`.
   * Without it core copies through a stream and deletes `from`.
   */
  move?(from: string, to: string): Promise<void>;

  /**
   * Optional ability: a URL from which a client can GET the object directly for the next
   * `expiresInSeconds` (an S3 presigned URL), so blob downloads can bypass Outpost.
   */
  presignGet?(key: string, expiresInSeconds: number): Promise<string>;
}
