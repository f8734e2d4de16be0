// `remora dev` started as a user starts it: the printed URL works, the demo balances across both
// api instances, an intention deny turns the call into a 403 naming the intention, killing an api
// instance keeps web answering, and Ctrl-C leaves nothing running.
import t from 'tap';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { REMORA_BIN, runRemora } from '../../helpers/cli.ts';
import { waitFor } from '../../../lib/util/index.ts';

interface WebAnswer {
  apiStatus: number;
  apiError: string | null;
  api: { instance?: string; peer?: string | null } | string | null;
  peer: string | null;
}

async function call(url: string): Promise<{ status: number; body: WebAnswer }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(8000) });
  return { status: res.status, body: (await res.json()) as WebAnswer };
}

/** The parent PID of a live process (undefined once it has exited). */
function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

/** PIDs of live processes whose command line mentions `needle`. */
function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmd.includes(needle)) pids.push(Number(entry));
    } catch {
      /* exited meanwhile */
    }
  }
  return pids;
}

// a whole mesh of real processes starts here; on a loaded 2-core box that takes a while
t.setTimeout(240_000);

t.test('remora dev brings up the demo mesh and stops cleanly', async (t) => {
  const dev = spawn(
    process.execPath,
    [REMORA_BIN, 'dev', '--otlp-endpoint', '', '--keep-work-dir'],
    {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  let err = '';
  dev.stdout.on('data', (d: Buffer) => (out += d.toString()));
  dev.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => dev.on('exit', (code) => resolve(code)));
  t.teardown(async () => {
    // SIGINT lets remora dev stop its parts in order; SIGKILL only if it hangs
    if (dev.exitCode !== null) return;
    dev.kill('SIGINT');
    const timer = setTimeout(() => dev.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  });

  const ready = await waitFor(
    'the remora dev ready line',
    () => /^remora dev ready: call (\S+)/m.exec(out),
    120_000,
  ).catch((e: Error) => {
    throw new Error(`${e.message}\nstdout:\n${out}\nstderr:\n${err.slice(-3000)}`);
  });
  const url = ready[1]!;
  const workDir = /^Logs: (\S+)\/logs$/m.exec(out)?.[1];
  t.ok(workDir, 'the ready output says where the logs are');
  const natsEnv =
    /^\s+(REMORA_CLI_NATS_SERVERS=\S+) (REMORA_CLI_OPERATOR_TOKEN=\S+) npx remora intention create --deny/m.exec(
      out,
    );
  t.ok(natsEnv, 'the ready output shows how to deny a call');
  const cliEnv = Object.fromEntries(
    [natsEnv![1]!, natsEnv![2]!].map((kv) => kv.split(/=(.*)/s).slice(0, 2)),
  );

  t.test(
    'the printed URL answers through both proxies, balanced across both api instances',
    async (t) => {
      const seen = new Set<string>();
      for (let i = 0; i < 8; i++) {
        const { status, body } = await call(url);
        t.equal(status, 200);
        t.equal(body.apiStatus, 200);
        if (typeof body.api === 'object' && body.api?.instance) seen.add(body.api.instance);
      }
      t.same([...seen].sort(), ['api-1', 'api-2']);
      const echo = await fetch(`${url}echo?msg=hello`).then((r) => r.json());
      t.match(echo, { echo: { echoed: 'hello' } }, 'the tcp upstream echoes');
    },
  );

  t.test('denying web → api turns the call into a 403 naming the intention', async (t) => {
    const r = await runRemora(['intention', 'create', '--deny', 'web', 'api'], { env: cliEnv });
    t.equal(r.code, 0, r.stderr);
    const denied = await waitFor(
      'the deny to be enforced',
      async () => {
        const c = await call(url);
        return c.body.apiStatus === 403 ? c : undefined;
      },
      30_000,
    );
    t.equal(denied.status, 403, 'web passes the refusal on');
    t.match(denied.body.apiError, /^REMORA_E_/);
    t.match(
      JSON.stringify(denied.body),
      /web.*api.*deny|deny.*web.*api/i,
      'the reason names the intention',
    );
    const explainEnv =
      /^\s+(REMORA_CLI_NATS_SERVERS=\S+) (REMORA_CLI_CONSUL_ADDRESS=\S+) npx remora explain web api/m.exec(
        out,
      );
    t.ok(explainEnv, 'the ready output shows how to explain a call');
    const explained = await runRemora(['explain', 'web', 'api'], {
      env: Object.fromEntries(
        [explainEnv![1]!, explainEnv![2]!].map((kv) => kv.split(/=(.*)/s).slice(0, 2)),
      ),
    });
    t.equal(explained.code, 2, 'explain exits 2 for a refused call');
    t.match(explained.stdout, 'web → api: DENIED');
    t.match(explained.stdout, 'api serves: http (registered with its sidecar)');
    const back = await runRemora(['intention', 'create', 'web', 'api'], { env: cliEnv });
    t.equal(back.code, 0, back.stderr);
    await waitFor(
      'the allow to be enforced again',
      async () => (await call(url)).body.apiStatus === 200,
      30_000,
    );
  });

  t.test('the printed resolver makes api-1 (version v1) answer alone', async (t) => {
    const line = /^\s+curl -s -X PUT (\S+\/v1\/config) -d '(\{.*\})'/m.exec(out);
    t.ok(line, 'the ready output shows the canary resolver');
    const [, configUrl, body] = line!;
    const put = await fetch(configUrl!, { method: 'PUT', body });
    t.equal(await put.text(), 'true');
    const alone = await waitFor(
      'only api-1 to answer',
      async () => {
        const seen = new Set<string>();
        for (let i = 0; i < 6; i++) {
          const { body } = await call(url);
          seen.add(typeof body.api === 'object' && body.api?.instance ? body.api.instance : '?');
        }
        return seen.size === 1 && seen.has('api-1') ? [...seen] : undefined;
      },
      30_000,
    );
    t.same(alone, ['api-1']);

    // the printed maintenance line takes api-1 out: v1's calls fail over to v2, api-2
    const maint =
      /^\s+curl -s -X PUT '(\S+\/maintenance\/api-1-sidecar-proxy\?enable=true\S*)'/m.exec(out);
    t.ok(maint, 'the ready output shows the maintenance line');
    const only = (instance: string) => async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 6; i++) {
        const { body } = await call(url);
        seen.add(typeof body.api === 'object' && body.api?.instance ? body.api.instance : '?');
      }
      return seen.size === 1 && seen.has(instance) ? true : undefined;
    };
    t.equal((await fetch(maint![1]!, { method: 'PUT' })).status, 200);
    t.ok(await waitFor('the failover to api-2', only('api-2'), 30_000), 'api-2 answers alone');
    await fetch(maint![1]!.replace('enable=true', 'enable=false'), { method: 'PUT' });
    t.ok(await waitFor('api-1 back', only('api-1'), 30_000), 'api-1 answers again');
    // back to both instances for the next test
    await fetch(`${configUrl}/service-resolver/api`, { method: 'DELETE' });
    await waitFor(
      'api-2 to answer again',
      async () => {
        for (let i = 0; i < 6; i++) {
          const { body } = await call(url);
          if (typeof body.api === 'object' && body.api?.instance === 'api-2') return true;
        }
        return undefined;
      },
      30_000,
    );
  });

  t.test('the printed restart-proxies replaces every proxy; web answers throughout', async (t) => {
    const admin = /^\s+REMORA_CLI_AGENT_ADMIN=(\S+) npx remora restart-proxies/m.exec(out);
    t.ok(admin, 'the ready output shows how to restart the proxies');
    let stop = false;
    const answers: number[] = [];
    const calls = (async () => {
      for (let i = 0; i < 2000 && !stop; i++) answers.push((await call(url)).status);
    })();
    const r = await runRemora(['restart-proxies'], {
      env: { REMORA_CLI_AGENT_ADMIN: admin![1]! },
      timeoutMs: 120_000,
    });
    stop = true;
    await calls;
    t.equal(r.code, 0, r.stdout + r.stderr);
    t.equal(r.stdout.match(/: restarted — pid \d+ took over from pid \d+/g)?.length, 4, r.stdout);
    t.ok(answers.length > 0, `${answers.length} calls during the restart`);
    t.same(
      answers.filter((s) => s !== 200),
      [],
      'every call during the restart was answered 200',
    );
  });

  t.test('killing an api instance keeps web answering', async (t) => {
    // other tests may run demo apps at the same time: only this mesh's children count
    const api1 = processesMentioning('examples/apps/api.js').filter((pid) => {
      if (parentOf(pid) !== dev.pid) return false;
      try {
        return readFileSync(`/proc/${pid}/environ`, 'utf8').includes('INSTANCE_ID=api-1');
      } catch {
        return false;
      }
    });
    t.equal(api1.length, 1, 'found the api-1 app');
    process.kill(api1[0]!, 'SIGKILL');
    for (let i = 0; i < 10; i++) {
      const { status, body } = await call(url);
      t.equal(status, 200, `call ${i} still answered`);
      t.match(body.api, { instance: 'api-2' });
    }
  });

  t.test('Ctrl-C stops everything it started', async (t) => {
    dev.kill('SIGINT');
    t.equal(await exited, 0, 'remora dev exits 0');
    t.match(out, /remora dev stopped/);
    t.same(processesMentioning(workDir!), [], 'no process of this dev mesh is left');
  });

  // --keep-work-dir keeps the logs for a failure to be read; a passing run leaves nothing behind
  t.teardown(() => {
    if (t.passing() && workDir) rmSync(workDir, { recursive: true, force: true });
    else if (workDir) t.comment(`remora dev logs kept in ${workDir}/logs`);
  });
});
