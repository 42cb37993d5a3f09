/**
 * Password hashes: PBKDF2-HMAC-SHA-256 through WebCrypto, which both runtimes have (Workers
 * has no scrypt or argon2 and no node:crypto pbkdf2 outside WebCrypto). The stored form is
 *
 *   pbkdf2-sha256$<iterations>$<salt, base64>$<derived key, base64>
 *
 * with a random 16-byte salt per user and a 32-byte derived key. workerd refuses PBKDF2 above
 * 100,000 iterations (its `checkPbkdfLimits`), so that is the default and the most a Worker
 * accepts; Node accepts more (OWASP asks 600,000 for PBKDF2-SHA-256), for hashes made with
 * `outpost hash-password --iterations`.
 *
 * Verification derives the key and compares every byte whatever the first difference, and an
 * unknown user is checked against a dummy hash with the same work, so a wrong user name costs
 * what a wrong password does.
 */

import { constantTimeEqual } from '../bytes.js';

export const PASSWORD_SCHEME = 'pbkdf2-sha256';
/** workerd's ceiling, and the default. */
export const WORKERS_MAX_ITERATIONS = 100_000;
export const DEFAULT_ITERATIONS = WORKERS_MAX_ITERATIONS;
/** Below this a hash is too cheap to guess against to be worth storing. */
export const MIN_ITERATIONS = 10_000;
/** A hash read from configuration asks at most this much work per login (Node). */
export const NODE_MAX_ITERATIONS = 10_000_000;
const SALT_BYTES = 16;
const KEY_BYTES = 32;
/** Longer passwords are refused before any work: PBKDF2 hashes the whole password per iteration block. */
export const MAX_PASSWORD_BYTES = 1024;

export interface PasswordHash {
  iterations: number;
  salt: Uint8Array;
  key: Uint8Array;
}

export class PasswordHashError extends Error {}

/** Parses the stored form; throws PasswordHashError saying what is wrong (never echoing the hash). */
export function parsePasswordHash(text: string, maxIterations: number = NODE_MAX_ITERATIONS): PasswordHash {
  const parts = text.split('$');
  if (parts.length !== 4 || parts[0] !== PASSWORD_SCHEME) {
    throw new PasswordHashError(`must be ${PASSWORD_SCHEME}$<iterations>$<salt>$<key> (from outpost hash-password)`);
  }
  const iterations = /^\d{1,9}$/.test(parts[1]!) ? Number(parts[1]) : NaN;
  if (!(iterations >= MIN_ITERATIONS && iterations <= maxIterations)) {
    throw new PasswordHashError(`must have from ${MIN_ITERATIONS} to ${maxIterations} iterations`);
  }
  const salt = fromBase64(parts[2]!);
  const key = fromBase64(parts[3]!);
  if (!salt || salt.byteLength < 8 || salt.byteLength > 64) throw new PasswordHashError('has a salt that is not 8 to 64 bytes of base64');
  if (!key || key.byteLength !== KEY_BYTES) throw new PasswordHashError(`has a key that is not ${KEY_BYTES} bytes of base64`);
  return { iterations, salt, key };
}

export function formatPasswordHash(hash: PasswordHash): string {
  return `${PASSWORD_SCHEME}$${hash.iterations}$${toBase64(hash.salt)}$${toBase64(hash.key)}`;
}

/** A new hash of `password`, with a fresh random salt unless one is given. */
export async function hashPassword(password: string, iterations: number = DEFAULT_ITERATIONS, salt: Uint8Array = crypto.getRandomValues(new Uint8Array(SALT_BYTES))): Promise<PasswordHash> {
  return { iterations, salt, key: await derive(new TextEncoder().encode(password), salt, iterations) };
}

/** Whether `password` matches `hash`, in time that depends only on the hash's work factor. */
export async function verifyPassword(password: string, hash: PasswordHash): Promise<boolean> {
  const bytes = new TextEncoder().encode(password);
  // Still derive, so that an over-long password is not told apart by its speed.
  // A NUL is refused too: HMAC pads its key with zeros, so `pw` and `pw\0` derive the same key.
  const tooLong = bytes.byteLength > MAX_PASSWORD_BYTES || bytes.includes(0);
  const derived = await derive(tooLong ? new Uint8Array(0) : bytes, hash.salt, hash.iterations);
  return constantTimeEqual(derived, hash.key) && !tooLong;
}


async function derive(password: Uint8Array, salt: Uint8Array, iterations: number): Promise<Uint8Array> {
  const material = await crypto.subtle.importKey('raw', password as BufferSource, 'PBKDF2', false, ['deriveBits']);
  const bits = await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt: salt as BufferSource, iterations }, material, KEY_BYTES * 8);
  return new Uint8Array(bits);
}

function toBase64(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function fromBase64(text: string): Uint8Array | undefined {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text) || text.length > 200) return undefined;
  try {
    return Uint8Array.from(atob(text), (ch) => ch.charCodeAt(0));
  } catch {
    return undefined;
  }
}
