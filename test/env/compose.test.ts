// The compose environment: Debian's docker-compose accepts the file (no engine needed), and the
// resolved configuration has the shape docs/environments.md describes — three Consul servers,
// NATS with per-role credentials, Jaeger with OTLP, two control replicas, agents sharing their
// app's network namespace, a legacy group under a supervisor — with every Remora config, env
// variable and service definition loading through Remora's own schemas and decoders.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parse } from 'yaml';
import { loadConfig } from '../../lib/config/index.ts';
import { decodeServiceFile, repoRoot, runTool, schemaFor, toolMissing } from './tools.ts';

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile?: string; target?: string };
  command?: string[] | string;
  environment?: Record<string, string | null>;
  network_mode?: string;
  networks?: Record<string, unknown>;
  ports?: Array<string | { target: number; published: number | string; host_ip?: string }>;
  volumes?: string[];
  secrets?: Array<{ source: string }>;
  depends_on?: Record<string, { condition: string }>;
  hostname?: string;
}
interface ComposeFile {
  services: Record<string, ComposeService>;
  secrets?: Record<string, { file: string }>;
  volumes?: Record<string, unknown>;
}

const composeDir = join(repoRoot, 'compose');
const reason = await toolMissing('docker-compose', 'docker-compose');
// One run serves both the validity check and the shape checks (`config` validates as `-q` does).
const resolved = reason
  ? undefined
  : runTool('docker-compose', ['-f', 'compose/compose.yaml', 'config']);

const argv = (s: ComposeService): string[] =>
  Array.isArray(s.command) ? s.command : (s.command ?? '').split(/\s+/).filter(Boolean);

/** Host path of the bind mount that provides `containerPath`, if any. */
function hostPathFor(s: ComposeService, containerPath: string): string | undefined {
  for (const v of s.volumes ?? []) {
    const [host, target] = v.split(':');
    if (target === containerPath && host?.startsWith('/')) return host;
  }
  return undefined;
}

/** The Remora program a container runs (`remora.js <program>`), if any. */
function remoraProgram(s: ComposeService): string | undefined {
  const args = argv(s);
  const i = args.findIndex((a) => a.endsWith('/bin/remora.js'));
  return i >= 0 ? args[i + 1] : undefined;
}

t.test(
  'docker-compose config accepts compose/compose.yaml',
  { skip: reason ?? false },
  async (t) => {
    const r = await resolved!;
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stderr.trim(), '', 'no warning either');
  },
);

t.test('the compose file avoids keys that docker-compose 1.29 rejects', async (t) => {
  const raw = parse(readFileSync(join(composeDir, 'compose.yaml'), 'utf8'), {
    merge: true,
  }) as Record<string, unknown>;
  t.notOk('name' in raw, 'no top-level name:');
  for (const [name, s] of Object.entries(raw.services as Record<string, object>))
    t.notOk('develop' in s, `${name} has no develop:`);
});

t.test(
  'the resolved environment has the documented shape',
  { skip: reason ?? false },
  async (t) => {
    const r = await resolved!;
    t.equal(r.code, 0, r.stderr);
    const c = parse(r.stdout) as ComposeFile;
    const services = c.services;

    t.test(
      'three Consul servers that expect each other, and a Consul client in every pod',
      async (t) => {
        const servers = Object.entries(services).filter(([, s]) => argv(s).includes('-server'));
        t.equal(servers.length, 3);
        for (const [name, s] of servers) {
          t.match(s.image, /^hashicorp\/consul:1\.20/, `${name} runs the official Consul image`);
          t.match(argv(s).join(' '), /-bootstrap-expect=3/);
        }
      },
    );

    t.test('NATS and Jaeger are the real engines, with OTLP on and the UI published', async (t) => {
      t.match(services.nats?.image, /^nats:2\.10/);
      t.match(argv(services.nats!).join(' '), /--config \/etc\/nats\/nats\.conf/);
      const jaeger = services.jaeger!;
      t.match(jaeger.image, /^jaegertracing\/all-in-one:/);
      t.equal(jaeger.environment?.COLLECTOR_OTLP_ENABLED, 'true');
      const published = (jaeger.ports ?? []).map((p) =>
        (typeof p === 'string' ? p : `${p.published}:${p.target}`).replace(/\/tcp$/, ''),
      );
      t.ok(
        published.some((p) => p.endsWith('16686:16686')),
        'UI on 16686',
      );
      t.ok(
        published.some((p) => p.endsWith('4318:4318')),
        'OTLP/HTTP on 4318',
      );
    });

    t.test('two control replicas', async (t) => {
      const controls = Object.keys(services).filter(
        (n) => remoraProgram(services[n]!) === 'control',
      );
      t.ok(controls.length >= 2, `control replicas: ${controls.join(', ')}`);
    });

    t.test(
      "every containerised agent shares its app's network namespace with a Consul client",
      async (t) => {
        const agents = Object.entries(services).filter(([, s]) => remoraProgram(s) === 'agent');
        t.ok(agents.length >= 3, `agents: ${agents.map(([n]) => n).join(', ')}`);
        for (const [name, s] of agents) {
          const m = /^service:(.+)$/.exec(s.network_mode ?? '');
          t.ok(m, `${name} joins another container's network namespace`);
          const app = m?.[1] ?? '';
          t.ok(services[app], `${name}'s pod owner ${app} exists`);
          t.match(argv(services[app]!).join(' '), /demo-http\.js/, `${app} runs the demo app`);
          const consul = Object.entries(services).find(
            ([, x]) =>
              x.network_mode === `service:${app}` && /^hashicorp\/consul/.test(x.image ?? ''),
          );
          t.ok(consul, `a Consul client agent runs in ${app}'s pod`);
          t.ok(
            s.secrets?.some((x) => x.source === 'agent_creds'),
            `${name} gets the agent NATS credentials`,
          );
          t.equal(
            s.depends_on?.bootstrap?.condition,
            'service_completed_successfully',
            `${name} waits for its node token`,
          );
        }
      },
    );

    t.test(
      'the legacy group runs Consul, the app and the agent under one supervisor',
      async (t) => {
        const legacy = services.legacy!;
        t.equal(legacy.build?.target, 'legacy');
        t.notOk(legacy.network_mode, 'it has its own network namespace, like a VM');
        const supervise = readFileSync(join(composeDir, 'legacy/supervise.sh'), 'utf8');
        t.match(supervise, /exec consul agent/);
        t.match(supervise, /demo-http\.js/);
        t.match(supervise, /remora\.js" agent/);
      },
    );

    t.test('secrets come from the git-ignored folder that setup.sh fills', async (t) => {
      const files = [
        ...Object.values(c.secrets ?? {}).map((s) => s.file),
        ...Object.values(services).flatMap((s) =>
          (s.volumes ?? []).map((v) => v.split(':')[0]!).filter((h) => h.includes('/secrets/')),
        ),
      ];
      t.ok(files.length > 0);
      for (const f of files)
        t.ok(
          f.startsWith(join(composeDir, 'secrets') + '/'),
          `${relative(repoRoot, f)} is under compose/secrets`,
        );
      const ignored = await runTool('git', [
        'check-ignore',
        '-q',
        'compose/secrets/operator-token',
      ]);
      t.equal(ignored.code, 0, 'compose/secrets is git-ignored');
    });

    t.test('every bind-mounted repository file exists', async (t) => {
      for (const [name, s] of Object.entries(services)) {
        for (const v of s.volumes ?? []) {
          const host = v.split(':')[0]!;
          if (!host.startsWith('/') || host.includes('/secrets/')) continue;
          t.ok(existsSync(host), `${name}: ${relative(repoRoot, host)} exists`);
        }
      }
    });

    t.test(
      'every Remora container’s config file and environment load through its schema',
      async (t) => {
        let checked = 0;
        for (const [name, s] of Object.entries(services)) {
          const program = remoraProgram(s);
          const args = argv(s);
          const env = Object.fromEntries(
            Object.entries(s.environment ?? {}).filter(([k]) => k.startsWith('REMORA_')),
          ) as Record<string, string>;
          // variables set from secret files by remora-env.sh: a placeholder value stands in
          for (const a of args) {
            const m = /^(REMORA_[A-Z_]+)=\//.exec(a);
            if (m) env[m[1]!] = 'placeholder-from-secret-file';
          }
          const schemaName =
            program ??
            (Object.keys(env).some((k) => k.startsWith('REMORA_CLI_')) ? 'cli' : undefined);
          if (!schemaName) continue;
          const schema = schemaFor(schemaName);
          t.ok(schema, `${name}: schema for ${schemaName}`);
          const cfgIndex = args.indexOf('--config');
          const file = cfgIndex >= 0 ? hostPathFor(s, args[cfgIndex + 1]!) : undefined;
          if (cfgIndex >= 0)
            t.ok(file, `${name}: the --config file is bind-mounted from the repository`);
          t.doesNotThrow(
            () => loadConfig(schema!, { env, ...(file ? { file } : {}) }),
            `${name}: ${schemaName} config ${file ? relative(repoRoot, file) : '(env only)'} + environment loads`,
          );
          checked++;
        }
        t.ok(checked >= 6, `${checked} Remora containers checked`);
      },
    );

    t.test('every mounted service definition decodes without a problem', async (t) => {
      let checked = 0;
      for (const [name, s] of Object.entries(services)) {
        for (const v of s.volumes ?? []) {
          const [host, target] = v.split(':');
          if (!target?.startsWith('/etc/remora/services.d/')) continue;
          const result = await decodeServiceFile(host!);
          t.same(result.problems, [], `${name}: ${relative(repoRoot, host!)} decodes cleanly`);
          t.ok(result.services.length > 0);
          checked++;
        }
      }
      t.ok(checked >= 4);
    });
  },
);

t.test('the Dockerfile builds Remora on Node 24 from files that exist', async (t) => {
  const text = readFileSync(join(composeDir, 'Dockerfile'), 'utf8');
  t.match(text, /^FROM node:24-bookworm-slim AS remora$/m);
  t.match(text, /npm ci --omit=dev/);
  for (const m of text.matchAll(/^COPY (?!--from)(\S+) /gm)) {
    t.ok(existsSync(join(repoRoot, m[1]!)), `COPY source ${m[1]} exists`);
  }
  t.match(text, /^USER node$/m, 'runs unprivileged');
});
