import { randomUUID } from 'node:crypto';
import { lstat, mkdir, open, readdir, rename, rm, rmdir, stat, utimes, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import {
  MAX_LIST_KEYS,
  type BlobStore,
  type ByteStream,
  type ListedObject,
  type ObjectBody,
  type ObjectInfo,
  type ObjectListOptions,
  type ObjectPage,
  type ObjectRange,
  type PutOptions,
  type StoreReclaimReport,
} from '../../ports/blob-store.js';
import { fileBody } from './file-body.js';

/** Bytes a write gathers from its source's chunks before handing them to the file in one writev. */
const WRITE_BATCH_BYTES = 1024 * 1024;
/** And at most this many chunks (a client may send tiny ones): well under any system's IOV_MAX. */
const WRITE_BATCH_CHUNKS = 256;
/** Bytes compose copies at a time: large enough to keep syscalls few, small enough to stay cheap per request. */
const COPY_CHUNK_BYTES = 1024 * 1024;
/**
 * How often a write touches its temporary file while it is open, so that the file's mtime says
 * the writer is alive even while its source stalls: `reclaim` removes only temporaries untouched
 * for far longer (DEFAULT_RECLAIM_AGE_MS is sixty of these).
 */
const TEMP_HEARTBEAT_MS = 60_000;

export interface FsBlobStoreOptions {
  /** Interval of the temporary-file heartbeat (default one minute; tests shorten it). */
  heartbeatMs?: number;
}

/**
 * BlobStore on a local directory. Writes go to a private temporary file and are renamed into
 * place after the body has ended cleanly, so readers (in this process or another one sharing
 * the directory) never see a partial object. Reads open the file first and stream from the
 * open descriptor, so a concurrent delete or replace cannot tear a response.
 *
 * A key is a path below root; `list` walks the tree depth first, one directory at a time,
 * visiting each directory's entries in key order (a directory sorts as its name + "/", which is
 * where its keys fall among its siblings' keys). The staging directory <root>/.tmp is never
 * listed, and no key may lie in it.
 *
 * Leftovers, for processes that share the directory and may die at any instant:
 *   write:   open .tmp/<uuid> -> write (touching it every TEMP_HEARTBEAT_MS) -> fsync -> close
 *            -> mkdir -p dirname(key) -> rename onto key; a rename that finds the directory
 *            gone (a concurrent delete pruned it) makes it again and retries
 *   delete:  unlink key -> rmdir each parent up to root, stopping at the first that is not
 *            empty (rmdir refuses a non-empty directory, so it never removes another's object)
 *   reclaim: unlink .tmp files untouched for longer than the grace (their writer is dead: a
 *            live one touches its file); rmdir every empty directory, deepest first
 * A killed process leaves at most its open temporaries and the empty directories it was
 * pruning; `reclaim` removes both.
 */
export class FsBlobStore implements BlobStore {
  /** Absolute, so that pruning can tell where root is. */
  private readonly root: string;
  private readonly tmp: string;
  private readonly heartbeatMs: number;

  constructor(root: string, options: FsBlobStoreOptions = {}) {
    this.root = resolve(root);
    this.tmp = join(this.root, '.tmp');
    this.heartbeatMs = options.heartbeatMs ?? TEMP_HEARTBEAT_MS;
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const s = await stat(this.path(key));
      // A directory here only holds other keys (keys are flat): no object at this key.
      return s.isFile() ? { size: s.size, lastModified: Math.trunc(s.mtimeMs) } : undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async get(key: string, range?: ObjectRange): Promise<ObjectBody | undefined> {
    let file;
    try {
      file = await open(this.path(key), 'r');
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    const info = await file.stat();
    if (!info.isFile()) {
      await file.close();
      return undefined;
    }
    const size = info.size;
    // Clamped to the open file's size, as every adapter's get is (a key's object is only ever
    // replaced whole, by rename, so the open file keeps its size; if it shrank all the same, the
    // read finds it ending early and the body errors: never a clean short one).
    const start = Math.min(range?.offset ?? 0, size);
    return { body: fileBody(file, start, range ? Math.min(size, start + range.length) : size), size };
  }

  async put(key: string, body: ByteStream, size?: number, options: PutOptions = {}): Promise<ObjectInfo> {
    return this.writeAtomically(key, options.scratch === true, async (file) => {
      let written = 0;
      const reader = body.getReader();
      // Chunks are gathered into one writev of WRITE_BATCH_BYTES while the previous one is on
      // the thread pool: a write per 64 KiB chunk, each awaited, held a push to a few hundred
      // MiB/s in thread-pool round trips alone.
      let batch: Uint8Array[] = [];
      let batched = 0;
      let writing: Promise<void> = Promise.resolve();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          batch.push(value);
          batched += value.byteLength;
          written += value.byteLength;
          if (batched >= WRITE_BATCH_BYTES || batch.length >= WRITE_BATCH_CHUNKS) {
            await writing;
            writing = writeAll(file, batch);
            // Awaited before the next batch or at the end; until then not unhandled.
            writing.catch(() => undefined);
            batch = [];
            batched = 0;
          }
        }
        await writing;
        if (batch.length > 0) await writeAll(file, batch);
      } catch (err) {
        await writing.catch(() => undefined);
        await reader.cancel(err).catch(() => undefined);
        throw err;
      }
      if (size !== undefined && written !== size) throw new Error(`short write: ${written} of ${size} bytes`);
      return written;
    });
  }

  /**
   * Concatenates the part files into a temporary file and renames it onto `to`, like put. Each
   * part is opened before it is read, so a part deleted meanwhile fails the whole compose
   * (ENOENT) and nothing appears at `to`.
   */
  async compose(parts: string[], to: string): Promise<ObjectInfo> {
    const paths = parts.map((key) => ({ key, path: this.path(key) }));
    return this.writeAtomically(to, false, async (file) => {
      const buffer = Buffer.allocUnsafeSlow(COPY_CHUNK_BYTES);
      let written = 0;
      for (const { key, path } of paths) {
        const part = await open(path, 'r');
        try {
          // A directory only holds other keys (keys are flat): no object there.
          if (!(await part.stat()).isFile()) throw new Error(`no object at ${key}`);
          for (;;) {
            const { bytesRead } = await part.read(buffer, 0, buffer.byteLength, null);
            if (bytesRead === 0) break;
            await file.write(buffer, 0, bytesRead);
            written += bytesRead;
          }
        } finally {
          await part.close();
        }
      }
      return written;
    });
  }

  /**
   * Runs `write` on a new private temporary file, then flushes it to disk (unless `scratch`)
   * and renames it onto `key`, so readers see the previous object or the whole new one. If
   * `write` throws, the temporary file is removed and nothing changes at `key`.
   */
  private async writeAtomically(key: string, scratch: boolean, write: (file: FileHandle) => Promise<number>): Promise<ObjectInfo> {
    const target = this.path(key);
    await mkdir(this.tmp, { recursive: true });
    const temp = join(this.tmp, randomUUID());
    const file = await open(temp, 'wx');
    // The mtime says "alive" to reclaim in every process, however long the source stalls.
    const heartbeat = setInterval(() => {
      const now = new Date();
      file.utimes(now, now).catch(() => undefined);
    }, this.heartbeatMs);
    heartbeat.unref?.();
    try {
      const size = await write(file);
      if (!scratch) await file.sync();
      clearInterval(heartbeat);
      await file.close();
      await this.place(temp, target);
      return { size };
    } catch (err) {
      clearInterval(heartbeat);
      await file.close().catch(() => undefined);
      await rm(temp, { force: true });
      throw err;
    }
  }

  /**
   * Renames `from` onto `target`, making its directory first. A delete in another request or
   * process may prune that directory between the mkdir and the rename (it was empty): then the
   * rename fails with ENOENT and is tried again. ENOENT while `from` itself is gone is real (a
   * move of a missing key, or a temporary reclaimed from under a writer frozen for an hour).
   */
  private async place(from: string, target: string): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await mkdir(dirname(target), { recursive: true });
        await rename(from, target);
        return;
      } catch (err) {
        if (!isNotFound(err) || attempt >= MAX_PLACE_ATTEMPTS || !(await exists(from))) throw err;
      }
    }
  }

  async delete(key: string): Promise<void> {
    const path = this.path(key);
    try {
      await rm(path, { force: true });
    } catch (err) {
      // A directory only holds other keys: there is no object to remove.
      if ((err as NodeJS.ErrnoException)?.code !== 'ERR_FS_EISDIR') throw err;
      return;
    }
    await this.prune(dirname(path));
  }

  /**
   * Removes `dir` and its parents below root while they are empty. rmdir refuses a directory
   * that holds anything, so an object another writer renamed in meanwhile stays, and that
   * writer's rename retries if it came a moment later (see place).
   */
  private async prune(dir: string): Promise<void> {
    while (dir.length > this.root.length && dir.startsWith(this.root + sep)) {
      try {
        await rmdir(dir);
      } catch {
        // Not empty (ENOTEMPTY, EEXIST), already gone, or not ours to remove: stop here.
        return;
      }
      dir = dirname(dir);
    }
  }

  /**
   * Removes temporaries of writes that died (untouched for longer than `olderThanMs`; a live
   * write touches its file every heartbeat) and every empty directory (see the port).
   */
  async reclaim(olderThanMs: number): Promise<StoreReclaimReport> {
    const temporary = await this.sweepTemporary(olderThanMs);
    const directories = await this.sweepDirectories(this.root);
    return { temporary, directories: directories.removed };
  }

  private async sweepTemporary(olderThanMs: number): Promise<number> {
    const cutoff = Date.now() - olderThanMs;
    let names: string[];
    try {
      names = await readdir(this.tmp);
    } catch (err) {
      if (isNotFound(err)) return 0;
      throw err;
    }
    let removed = 0;
    for (const name of names) {
      const path = join(this.tmp, name);
      // Gone meanwhile: renamed into place, or removed by its writer or another sweep.
      const info = await lstat(path).catch(() => undefined);
      if (!info || info.mtimeMs >= cutoff) continue;
      // Everything in .tmp is this store's own staging (no key lies there).
      await rm(path, { force: true, recursive: info.isDirectory() });
      removed++;
    }
    return removed;
  }

  /**
   * Removes the empty directories below `dir`, deepest first, and `dir` itself when it ends up
   * empty (never root or .tmp). Symbolic links are not followed.
   */
  private async sweepDirectories(dir: string): Promise<{ removed: number; empty: boolean }> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (isNotFound(err) || (err as NodeJS.ErrnoException)?.code === 'ENOTDIR') return { removed: 0, empty: false };
      throw err;
    }
    let removed = 0;
    let left = entries.length;
    for (const entry of entries) {
      if (!entry.isDirectory() || (dir === this.root && entry.name === '.tmp')) continue;
      const below = await this.sweepDirectories(join(dir, entry.name));
      removed += below.removed;
      if (below.empty) left--;
    }
    if (left > 0 || dir === this.root) return { removed, empty: false };
    try {
      await rmdir(dir);
    } catch {
      // A put renamed an object in meanwhile (ENOTEMPTY), or another sweep was first.
      return { removed, empty: false };
    }
    return { removed: removed + 1, empty: true };
  }

  async list(prefix: string, options: ObjectListOptions): Promise<ObjectPage> {
    const limit = Math.min(Math.max(1, Math.floor(options.limit)), MAX_LIST_KEYS);
    // The directory holding every key with this prefix, and what its entries' names must start with.
    const cut = prefix.lastIndexOf('/') + 1;
    const dir = prefix.slice(0, cut);
    if (dir.startsWith('.tmp/')) return { keys: [] };
    if (dir !== '') this.path(dir.slice(0, -1));
    // One more than asked for tells whether anything follows.
    const found: ListedObject[] = [];
    await this.walk(dir, prefix.slice(cut), options.after, limit + 1, found);
    if (found.length <= limit) return { keys: found };
    found.length = limit;
    return { keys: found, next: found[limit - 1]!.key };
  }

  /**
   * Appends to `found`, in key order, the objects below the directory `dir` (a key prefix ending
   * in "/", or "" for root) whose next path segment starts with `name` and whose key is after
   * `after`, until `found` holds `want`. Returns false once it does.
   */
  private async walk(dir: string, name: string, after: string | undefined, want: number, found: ListedObject[]): Promise<boolean> {
    for (const entry of await this.entries(dir)) {
      if (!entry.name.startsWith(name)) continue;
      const key = dir + entry.name;
      if (entry.directory) {
        // Every key below lies after key + "/" and starts with it: skip subtrees wholly at or before `after`.
        const below = key + '/';
        if (after !== undefined && !after.startsWith(below) && below < after) continue;
        if (!(await this.walk(below, '', after, want, found))) return false;
        continue;
      }
      if (after !== undefined && key <= after) continue;
      const info = await this.stat(key);
      // Deleted or replaced by a directory since readdir: not there any more.
      if (!info) continue;
      found.push({ key, ...info });
      if (found.length >= want) return false;
    }
    return true;
  }

  /**
   * The entries of the directory `dir` that can be keys, in key order: a directory sorts as its
   * name + "/". Names outside the key grammar (nothing this store wrote) and .tmp are left out.
   * Keys are ASCII (see path), so comparing strings compares their bytes.
   */
  private async entries(dir: string): Promise<Array<{ name: string; directory: boolean }>> {
    let dirents;
    try {
      dirents = await readdir(join(this.root, dir), { withFileTypes: true });
    } catch (err) {
      if (isNotFound(err) || (err as NodeJS.ErrnoException)?.code === 'ENOTDIR') return [];
      throw err;
    }
    const out: Array<{ name: string; directory: boolean; order: string }> = [];
    for (const d of dirents) {
      if ((dir === '' && d.name === '.tmp') || !SEGMENT.test(d.name)) continue;
      let directory = d.isDirectory();
      if (d.isSymbolicLink()) {
        // stat and get follow links, so list does too (a loop ends in ELOOP, thrown).
        const s = await stat(join(this.root, dir, d.name)).catch(() => undefined);
        if (!s) continue;
        directory = s.isDirectory();
      } else if (!directory && !d.isFile()) continue;
      out.push({ name: d.name, directory, order: directory ? `${d.name}/` : d.name });
    }
    return out.sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));
  }

  /**
   * Touches the source first, so the object appears at `to` with the time of the move (see the
   * port); then prunes the source's directory, which the move may have emptied.
   */
  async move(from: string, to: string): Promise<void> {
    const source = this.path(from);
    const target = this.path(to);
    const now = new Date();
    await utimes(source, now, now);
    await this.place(source, target);
    await this.prune(dirname(source));
  }

  private path(key: string): string {
    // Keys are chosen by core (digests, upload ids); refuse anything that could escape root,
    // and the staging directory, which reclaim owns.
    if (!KEY.test(key) || key.split('/').some((p) => p === '.' || p === '..') || key === '.tmp' || key.startsWith('.tmp/')) {
      throw new Error(`invalid object key ${JSON.stringify(key)}`);
    }
    return join(this.root, key);
  }
}

/**
 * Tries of one rename into a directory that concurrent deletes keep pruning. Each lost race
 * needs a delete to empty and remove the directory inside the gap between our mkdir and
 * rename, so this many in a row only happens when something is badly wrong.
 */
const MAX_PLACE_ATTEMPTS = 100;

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** Keys are ASCII path segments (besides "." and ".."), so no key can escape root. */
const SEGMENT = /^[A-Za-z0-9._-]+$/;
const KEY = /^[A-Za-z0-9._-]+(?:\/[A-Za-z0-9._-]+)*$/;

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOENT';
}

/** Appends `chunks` to `file` at its position, however few bytes each writev takes. */
async function writeAll(file: FileHandle, chunks: Uint8Array[]): Promise<void> {
  let left = chunks;
  while (left.length > 0) {
    const { bytesWritten } = await file.writev(left);
    let n = bytesWritten;
    let i = 0;
    while (i < left.length && n >= left[i]!.byteLength) n -= left[i++]!.byteLength;
    left = left.slice(i);
    if (n > 0) left[0] = left[0]!.subarray(n);
  }
}
