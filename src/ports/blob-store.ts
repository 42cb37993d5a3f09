/**
 * BlobStore: a flat key -> bytes store. It stores and fetches bytes and knows nothing of
 * digests, manifests or repositories; core chooses the keys (see core/registry/keys.ts) and
 * verifies content on the way in (core/streams.ts `verify`).
 */
/** Bytes as a WHATWG stream: the one stream type both Node 20 and workerd have. */
export type ByteStream = ReadableStream<Uint8Array>;

export interface ObjectInfo {
  size: number;
  /**
   * When the object was last written at its key (put, or move onto it), in epoch
   * milliseconds, when the store knows it. It is the store's clock, not the caller's (S3: the
   * server's LastModified, whole seconds from `stat`; Fs: the file's mtime), so a retention
   * window must be far longer than any clock skew. `put` need not report it.
   */
  lastModified?: number;
}

/** One object found by `list`. */
export interface ListedObject extends ObjectInfo {
  key: string;
}

export interface ObjectListOptions {
  /** Only keys strictly greater than this one (in byte order): the previous page's `next`. */
  after?: string;
  /** At most this many keys (1..MAX_LIST_KEYS; larger values are capped). */
  limit: number;
}

export interface ObjectPage {
  /** In ascending byte order of the key (UTF-8), as S3 lists. */
  keys: ListedObject[];
  /** Set when more keys may follow: pass it as `after` for the next page. */
  next?: string;
}

/** S3's ListObjectsV2 returns at most 1000 keys a request; longer listings are paged. */
export const MAX_LIST_KEYS = 1000;

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

export interface PutOptions {
  /**
   * Scratch data: the caller verifies it before any use (a fill's parts are hashed again with
   * the rest of the blob), so the store need not make it durable before `put` resolves; after
   * a crash it may be missing, short or garbled, never silently taken for something else.
   * The Fs store skips its fsync; S3 is durable anyway.
   */
  scratch?: boolean;
}

/** What one `BlobStore.reclaim` removed (core/registry/leftovers.ts reclaims upload parts, a different thing). */
export interface StoreReclaimReport {
  /** Temporaries of writes that never finished (Fs: files under <root>/.tmp; S3: incomplete multipart uploads). */
  temporary: number;
  /** Empty directories (Fs only; 0 elsewhere). */
  directories: number;
}

/**
 * The age below which `reclaim` leaves a temporary alone by default: sixty times the interval at
 * which the Fs store touches a temporary it is writing, far longer than a client may pause an
 * S3 write between parts and than any clock skew between instances and the store, and short
 * enough that a crashed write's bytes do not linger for days.
 */
export const DEFAULT_RECLAIM_AGE_MS = 60 * 60 * 1000;

export interface BlobStore {
  /** The object's size (and age, where known), or undefined when there is no object at `key`. */
  stat(key: string): Promise<ObjectInfo | undefined>;

  /** Streams the object, or one range of it. undefined when there is no object at `key`. */
  get(key: string, range?: ObjectRange): Promise<ObjectBody | undefined>;

  /**
   * Writes `body` at `key`, replacing any object there.
   * Atomic: readers see the previous object or the whole new one, never a prefix. If `body`
   * errors, nothing new becomes visible and `put` rejects (with the stream's error where the
   * store can pass it on). `size`, when given, is the exact length of `body`.
   */
  put(key: string, body: ByteStream, size?: number, options?: PutOptions): Promise<ObjectInfo>;

  /** Removes the object. Idempotent: removing an absent key succeeds. */
  delete(key: string): Promise<void>;

  /**
   * The objects whose keys start with `prefix` (a plain string prefix: "blobs/", "uploads/<id>/",
   * or "" for all), strictly after `options.after`, at most `options.limit` of them, in
   * ascending byte order. `next` is set when more may follow (it may be set on a page after
   * which nothing follows). Page through with `after = next` until `next` is undefined.
   *
   * Not a snapshot. S3's ListObjectsV2 is strongly consistent for writes that completed before
   * the call (on AWS; other S3 implementations may lag); the Fs store walks its directory tree,
   * so a write or delete that races the walk may or may not be seen, and its temporary files
   * (writes in progress) are never listed. A caller that deletes what it lists (GC) must check
   * `lastModified` against a retention window, never the mere absence of a reference.
   */
  list(prefix: string, options: ObjectListOptions): Promise<ObjectPage>;

  /**
   * Optional ability: renames `from` to `to` in one atomic step, replacing `to`. The moved object's
   * `lastModified` is the time of the move, as if it had been put there.
   * Without it core copies through a stream and deletes `from`.
   */
  move?(from: string, to: string): Promise<void>;

  /**
   * Optional ability: writes at `to` the concatenation of the objects at `parts`, in order,
   * inside the store (S3: a multipart upload of UploadPartCopy requests; Fs: the part files
   * hard-linked as the object's pieces, no byte copied), so the bytes never travel back through
   * Outpost. Atomic at
   * `to` like `put`: readers see the previous object or the whole result. The parts are left as
   * they are (the caller deletes them). Rejects, writing nothing at `to`, when a part is missing.
   * Works for any part sizes (an adapter whose server-side copy has a minimum part size falls
   * back to streaming for parts below it). Without it core streams the parts into `put`.
   */
  compose?(parts: string[], to: string): Promise<ObjectInfo>;

  /**
   * Optional ability: a URL from which a client can GET the object directly for the next
   * `expiresInSeconds` (an S3 presigned URL), so blob downloads can bypass Outpost.
   */
  presignGet?(key: string, expiresInSeconds: number): Promise<string>;

  /**
   * Optional ability: removes what writes that never finished left behind (a process killed
   * during a put, a compose or a move), storage that `list` never shows and so no caller could
   * find: temporaries untouched for longer than `olderThanMs` by the store's clock (Fs: files
   * under <root>/.tmp by mtime; S3: multipart uploads under the prefix, by their newest part or
   * their initiation), and on Fs every empty directory. Never removes an object that `list` shows.
   *
   * Safe while other processes write to the same store, provided `olderThanMs` is far longer than
   * any write stalls (DEFAULT_RECLAIM_AGE_MS; smaller values are for tests of dead writers): the
   * Fs store touches a temporary while it writes it, however slow its source, and an S3 upload
   * counts as alive while parts arrive. A write whose temporary was reclaimed (its process was
   * frozen for longer than that) fails cleanly: nothing becomes visible at its key. A put that
   * finds its directory reclaimed recreates it. Called at start-up and by the garbage collector.
   */
  reclaim?(olderThanMs: number): Promise<StoreReclaimReport>;
}
