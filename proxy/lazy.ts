// node:http2 is loaded on first use, through require rather than an ESM import: it costs about
// 10 MB of resident memory, and most proxies never speak HTTP/2. (The proxy does not load
// node:http at all: its admin API is served by proxy/http/h1-server.ts.)
import { createRequire } from 'node:module';
import type * as Http2 from 'node:http2';

const require = createRequire(import.meta.url);
let http2Module: typeof Http2 | null = null;

export function loadHttp2(): typeof Http2 {
  return (http2Module ??= require('node:http2') as typeof Http2);
}

/** HTTP/2 codes and flags (RFC 9113 §7 and §6.1), without loading node:http2. */
export const H2 = {
  NO_ERROR: 0,
  INTERNAL_ERROR: 2,
  REFUSED_STREAM: 7,
  CANCEL: 8,
  FLAG_END_STREAM: 1,
} as const;
