import { RemoraError } from '../errors/index.ts';

/**
 * Parses exporter headers written as `k=v,k2=v2` (the OTEL_EXPORTER_OTLP_HEADERS format: values
 * may be percent-encoded). Whitespace around keys and values is trimmed; an empty string gives no
 * headers. Header values are secrets: errors name the key or position, never the value.
 */
export function parseOtlpHeaders(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (s.trim() === '') return out;
  const pairs = s.split(',');
  pairs.forEach((pair, index) => {
    if (pair.trim() === '') return;
    const eq = pair.indexOf('=');
    const key = eq < 0 ? '' : pair.slice(0, eq).trim();
    if (eq < 0 || key === '' || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(key)) {
      throw new RemoraError(
        'REMORA_E_TELEMETRY_CONFIG_INVALID',
        `tracing.headers entry ${index + 1} is not a k=v pair with a valid header name${key ? ` (key "${key}")` : ''}; write it as name=value,name2=value2`,
        { key: 'tracing.headers', entry: index + 1 },
      );
    }
    const raw = pair.slice(eq + 1).trim();
    let value: string;
    try {
      value = decodeURIComponent(raw);
    } catch {
      throw new RemoraError(
        'REMORA_E_TELEMETRY_CONFIG_INVALID',
        `tracing.headers value for "${key}" has a broken percent-encoding; encode % as %25`,
        { key: 'tracing.headers', header: key },
      );
    }
    out[key] = value;
  });
  return out;
}
