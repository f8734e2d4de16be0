/**
 * Harness of the Consul conformance suite: every case talks raw HTTP to a Consul API — the
 * embedded catalog by default, or a real Consul agent when REMORA_CONFORMANCE_CONSUL_ADDR is
 * set (e.g. http://127.0.0.1:8500 of `consul agent -dev`).
 */
import { randomBytes } from 'node:crypto';
import { startDevConsul, type DevConsul } from '../../../lib/devconsul/index.ts';

export const REAL_CONSUL_ADDR = process.env.REMORA_CONFORMANCE_CONSUL_ADDR ?? '';
export const AGAINST_REAL_CONSUL = REAL_CONSUL_ADDR !== '';

export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json<T = unknown>(): T;
}

export interface Target {
  url: string;
  /** Unique per run, so cases never collide with each other or with a real Consul's data. */
  prefix: string;
  call: (method: string, path: string, body?: unknown) => Promise<Reply>;
  close(): Promise<void>;
}

export async function openTarget(): Promise<Target> {
  let dc: DevConsul | undefined;
  let url = REAL_CONSUL_ADDR.replace(/\/+$/, '');
  if (!url) {
    // Short reaper settings let deregister_critical_service_after be observed within a test.
    dc = await startDevConsul({ port: 0, reapIntervalMs: 100, deregisterMinMs: 0 });
    url = dc.url;
  }
  return {
    url,
    prefix: `conf-${randomBytes(3).toString('hex')}`,
    call: async (method, path, body) => {
      const res = await fetch(`${url}${path}`, {
        method,
        ...(body === undefined
          ? {}
          : {
              body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
            }),
      });
      const text = await res.text();
      return {
        status: res.status,
        headers: res.headers,
        text,
        json<T>() {
          return JSON.parse(text) as T;
        },
      };
    },
    close: async () => {
      await dc?.close();
    },
  };
}

/** The documentation page a case derives from, shown in its title. */
export function doc(page: string): string {
  return `[hashicorp/consul website/content/${page}]`;
}
