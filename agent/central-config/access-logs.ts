// proxy-defaults `AccessLogs`: whether and where every proxy writes access logs, and in which
// format (`TextFormat` or `JSONFormat`, checked as the proxies compile them).
import { compileAccessFormat } from '../../lib/access-log/format.ts';
import { ACCESS_LOG_TYPES, type AccessLogConfig } from '../../lib/proxy-api/index.ts';
import { isLayer } from './entry.ts';

/**
 * proxy-defaults `AccessLogs` as the proxies take it: null unless `Enabled`; what Remora cannot
 * apply is reported in `found` under `logs…` (a bad type or path turns the logs off, a custom
 * format is not applied).
 */
export function accessLogsOf(v: unknown, found: Map<string, string>): AccessLogConfig | null {
  const where = 'proxy-defaults global: AccessLogs';
  if (v === undefined || v === null) return null;
  if (!isLayer(v)) {
    found.set('logs', `${where} must be an object; access logs stay off`);
    return null;
  }
  if (v.Enabled !== true) return null;
  const type = v.Type === undefined || v.Type === '' ? 'stdout' : v.Type;
  if (!(ACCESS_LOG_TYPES as readonly unknown[]).includes(type)) {
    found.set(
      'logs/type',
      `${where}.Type ${JSON.stringify(type)} is not one of stdout, stderr, file; access logs stay off`,
    );
    return null;
  }
  const format = accessFormatOf(v, where, found);
  if (type !== 'file') return { type: type as AccessLogConfig['type'], ...format };
  const path = v.Path;
  if (typeof path !== 'string' || !path.startsWith('/') || path.includes('\0')) {
    found.set(
      'logs/path',
      `${where}.Path must be an absolute file path for Type file, got ${JSON.stringify(path ?? null)}; access logs stay off`,
    );
    return null;
  }
  return { type, path, ...format };
}

/**
 * `TextFormat` or `JSONFormat`, checked the way the proxies compile it. A format they cannot
 * apply is reported and left out: the logs stay on in the proxies' own JSON lines.
 */
function accessFormatOf(
  v: Record<string, unknown>,
  where: string,
  found: Map<string, string>,
): { textFormat?: string; jsonFormat?: string } {
  const given = (k: string) => (v[k] === undefined || v[k] === '' ? undefined : v[k]);
  const text = given('TextFormat');
  const json = given('JSONFormat');
  if (text === undefined && json === undefined) return {};
  const key = json === undefined ? 'TextFormat' : 'JSONFormat';
  const keep = '; the proxies write their own JSON lines instead (docs/proxy.md, "Access logs")';
  if (
    (text !== undefined && typeof text !== 'string') ||
    (json !== undefined && typeof json !== 'string')
  ) {
    found.set('logs/format', `${where}.${key} must be a string${keep}`);
    return {};
  }
  const spec = {
    ...(text === undefined ? {} : { textFormat: text }),
    ...(json === undefined ? {} : { jsonFormat: json }),
  };
  try {
    compileAccessFormat(spec);
  } catch (err) {
    found.set('logs/format', `${where}: ${(err as Error).message}${keep}`);
    return {};
  }
  return spec;
}

/** A cached AccessLogs setting, checked again as Consul's answer would be. */
export function checkedAccessLogs(v: unknown): AccessLogConfig | null {
  if (!isLayer(v)) return null;
  return accessLogsOf(
    {
      Enabled: true,
      Type: v.type,
      Path: v.path,
      TextFormat: v.textFormat,
      JSONFormat: v.jsonFormat,
    },
    new Map(),
  );
}
