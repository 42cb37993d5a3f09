/**
 * Byte comparisons shared by the gate (signatures and keys named in log entries) and auth
 * (password keys, refresh-token versions).
 */

/** Equal length and bytes, comparing every byte whatever the first difference (no early exit a timer could see). */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.byteLength ^ b.byteLength;
  const n = Math.max(a.byteLength, b.byteLength);
  for (let i = 0; i < n; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
  return diff === 0;
}
