/**
 * A JSON response with its exact Content-Length; for HEAD the same headers and no body
 * (RFC 9110: a HEAD answer carries the headers a GET would).
 */
export function jsonResponse(
  status: number,
  value: unknown,
  options: { contentType?: string; headers?: Record<string, string>; head?: boolean } = {},
): Response {
  const text = JSON.stringify(value);
  return new Response(options.head ? null : text, {
    status,
    headers: {
      'Content-Type': options.contentType ?? 'application/json; charset=utf-8',
      'Content-Length': String(new TextEncoder().encode(text).byteLength),
      ...options.headers,
    },
  });
}
