import { randomUUID } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat, utimes, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
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
} from '../../ports/blob-store.js';

/** Size of the chunks a read streams: large enough to keep syscalls few, small enough to stay cheap per request. */
const READ_CHUNK_BYTES = 256 * 1024;

/**
 * BlobStore on a local directory. Writes go to a private temporary file and are renamed into
 * place after the body has ended cleanly, so readers (in this process or another one sharing
 * the directory) never see a partial object. Reads open the file first and stream from the
 * open descriptor, so a concurrent delete or replace cannot tear a response.
 *
 * A key is a path below root; `list` walks the tree depth first, one directory at a time,
 * visiting each directory's entries in key order (a directory sorts as its name + "/", which is
 * where its keys fall among its siblings' keys). The staging directory <root>/.tmp is never listed.
 */
export class FsBlobStore implements BlobStore {
  private readonly tmp: string;

  constructor(private readonly root: string) {
    this.tmp = join(root, '.tmp');
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
    if (range && range.length === 0) {
      await file.close();
      return { body: new ReadableStream({ start: (c) => c.close() }), size };
    }
    const stream = file.createReadStream({
      start: range?.offset ?? 0,
      end: range ? range.offset + range.length - 1 : undefined,
      highWaterMark: READ_CHUNK_BYTES,
    });
    return { body: Readable.toWeb(stream) as unknown as ByteStream, size };
  }

  async put(key: string, body: ByteStream, size?: number, options: PutOptions = {}): Promise<ObjectInfo> {
    return this.writeAtomically(key, options.scratch === true, async (file) => {
      let written = 0;
      const reader = body.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          await file.write(value);
          written += value.byteLength;
        }
      } catch (err) {
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
      const buffer = Buffer.allocUnsafe(READ_CHUNK_BYTES);
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
    try {
      const size = await write(file);
      if (!scratch) await file.sync();
      await file.close();
      await mkdir(dirname(target), { recursive: true });
      await rename(temp, target);
      return { size };
    } catch (err) {
      await file.close().catch(() => undefined);
      await rm(temp, { force: true });
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await rm(this.path(key), { force: true });
    } catch (err) {
      // A directory only holds other keys: there is no object to remove.
      if ((err as NodeJS.ErrnoException)?.code !== 'ERR_FS_EISDIR') throw err;
    }
  }

  async list(prefix: string, options: ObjectListOptions): Promise<ObjectPage> {
    const limit = Math.min(Math.max(1, Math.floor(options.limit)), MAX_LIST_KEYS);
    // The directory holding every key with this prefix, and what its entries' names must start with.
    const cut = prefix.lastIndexOf('/') + 1;
    const dir = prefix.slice(0, cut);
    if (dir !== '') this.path(dir.slice(0, -1));
    if (dir.startsWith('.tmp/')) return { keys: [] };
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

  /** Touches the source first, so the object appears at `to` with the time of the move (see the port). */
  async move(from: string, to: string): Promise<void> {
    const source = this.path(from);
    const target = this.path(to);
    const now = new Date();
    await utimes(source, now, now);
    await mkdir(dirname(target), { recursive: true });
    await rename(source, target);
  }

  private path(key: string): string {
    // Keys are chosen by core (digests, upload ids); refuse anything that could escape root.
    if (!KEY.test(key) || key.split('/').some((p) => p === '.' || p === '..')) {
      throw new Error(`invalid object key ${JSON.stringify(key)}`);
    }
    return join(this.root, key);
  }
}

/** Keys are ASCII path segments (besides "." and ".."), so no key can escape root. */
const SEGMENT = /^[A-Za-z0-9._-]+$/;
const KEY = /^[A-Za-z0-9._-]+(?:\/[A-Za-z0-9._-]+)*$/;

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException)?.code === 'ENOENT';
}
