import type { Context } from 'hono';
import { MAX_MANIFEST_BYTES } from '../../core/oci/manifest.js';
import { parseReference, type Reference } from '../../core/oci/reference.js';
import { OciError } from '../../core/errors.js';
import { tooLarge, type ManifestRecord } from '../../core/registry/manifests.js';
import type { Registry } from '../../core/registry/registry.js';
import type { GateDecision } from '../../core/gate/gate.js';
import { readCapped } from '../../core/streams.js';
import { methodNotAllowed } from '../errors.js';
import { body, contentLength } from '../request.js';

/** GET/HEAD/PUT/DELETE /v2/<name>/manifests/<reference> (spec.md#pulling-manifests, #pushing-manifests). */
export async function manifestRoute(c: Context, registry: Registry, name: string, rawReference: string): Promise<Response> {
  // A tag that breaks the grammar cannot name anything: reading or deleting it is a miss
  // (404, as the conformance suite expects); only pushing to it is a client error.
  const reference = c.req.method === 'PUT' ? parseReference(rawReference) : lookupReference(rawReference);
  switch (c.req.method) {
    case 'HEAD': {
      const record = await registry.manifests.stat(name, reference);
      await gated(c, registry.gate(name, record.digest), undefined);
      return new Response(null, { status: 200, headers: manifestHeaders(record) });
    }
    case 'GET': {
      const { record, body: bytes } = await registry.manifests.read(name, reference);
      await gated(c, registry.gate(name, record.digest), bytes);
      return new Response(bytes, { status: 200, headers: manifestHeaders(record) });
    }
    case 'PUT': {
      const declared = contentLength(c);
      // Refuse before reading when the client says up front that it is too large.
      if (declared !== undefined && declared > MAX_MANIFEST_BYTES) throw tooLarge();
      const bytes = await readCapped(body(c), MAX_MANIFEST_BYTES, tooLarge);
      const record = await registry.manifests.put(name, reference, bytes, c.req.header('content-type'));
      const headers: Record<string, string> = {
        Location: `/v2/${name}/manifests/${record.digest}`,
        'Docker-Content-Digest': record.digest,
        'Content-Length': '0',
      };
      if (record.subject) headers['OCI-Subject'] = record.subject;
      return new Response(null, { status: 201, headers });
    }
    case 'DELETE':
      await registry.manifests.delete(name, reference);
      return new Response(null, { status: 202, headers: { 'Content-Length': '0' } });
    default:
      throw methodNotAllowed(['GET', 'HEAD', 'PUT', 'DELETE']);
  }
}

export function manifestHeaders(record: ManifestRecord): Record<string, string> {
  return {
    'Content-Type': record.mediaType,
    'Content-Length': String(record.size),
    'Docker-Content-Digest': record.digest,
    ETag: `"${record.digest}"`,
  };
}

function lookupReference(raw: string): Reference {
  try {
    return parseReference(raw);
  } catch (err) {
    if (err instanceof OciError && err.kind === 'REFERENCE_INVALID') {
      throw new OciError('MANIFEST_UNKNOWN', `no manifest can have the invalid tag "${raw.slice(0, 140)}"`, { tag: raw.slice(0, 140) });
    }
    throw err;
  }
}

/** Waits for the gate's decision and notes it for the access record; a refusal cancels the body already opened. */
export async function gated(c: Context, decision: Promise<GateDecision>, body: ReadableStream | undefined | null): Promise<void> {
  try {
    const { allowed, warned } = await decision;
    const parts = [...(allowed.length ? [`allowed:${allowed.join(',')}`] : []), ...(warned.length ? [`warned:${warned.join(',')}`] : [])];
    if (parts.length) c.set('gate', parts.join(' '));
  } catch (err) {
    const policy = err instanceof OciError && err.kind === 'DENIED' ? (err.detail as { policy?: string } | undefined)?.policy : undefined;
    if (policy) c.set('gate', `denied:${policy}`);
    await body?.cancel().catch(() => undefined);
    throw err;
  }
}
