// The lab harness itself: hosts in network namespaces reach each other over the hub bridge, a
// host whose link is down is unreachable, and teardown leaves no namespace and no process behind.
import t from 'tap';
import type { ChildProcess } from 'node:child_process';
import { waitFor } from '../../lib/util/index.ts';
import {
  createLab,
  httpGetFrom,
  labUnsupportedReason,
  listNamespaces,
  type Lab,
} from '../helpers/netns.ts';

const reason = await labUnsupportedReason();
if (reason) {
  t.plan(0, `lab skipped: ${reason}`);
} else {
  // every step starts real processes in namespaces; on a loaded 2-core machine that is slow
  t.setTimeout(150_000);
  // A tiny HTTP server that says which host answered and which address called it.
  const serverScript = `
import { createServer } from 'node:http';
const s = createServer((req, res) => res.end(JSON.stringify({ host: process.env.LAB_HOST, peer: req.socket.remoteAddress })));
s.listen(8080, '0.0.0.0', () => process.stdout.write('listening\\n'));
`;

  function startServer(lab: Lab, name: string): ChildProcess {
    const host = lab.hosts[name]!;
    return host.spawn(process.execPath, ['--input-type=module', '-e', serverScript], {
      env: { ...process.env, LAB_HOST: name },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }

  async function ready(child: ChildProcess): Promise<void> {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor('the lab server to listen', () => out.includes('listening'), 10_000);
  }

  t.test('hosts on the lab bridge reach each other and see each other’s addresses', async (t) => {
    const lab = await createLab({
      hosts: [{ name: 'server' }, { name: 'vm1' }, { name: 'vm2' }, { name: 'ctr1' }],
    });
    t.teardown(() => lab.destroy());
    const { server, vm1, vm2, ctr1 } = lab.hosts;
    t.equal(server!.ip, '10.213.0.11');
    await ready(startServer(lab, 'server'));
    for (const client of [vm1!, vm2!, ctr1!]) {
      const r = await httpGetFrom(client, `http://${server!.ip}:8080/`);
      t.equal(r.status, 200, `${client.name} gets an answer from the server host`);
      t.same(
        JSON.parse(r.body ?? '{}'),
        { host: 'server', peer: client.ip },
        `the server sees ${client.name}'s address`,
      );
    }
    // The reverse direction works too: a server on a VM host, called from the container host.
    await ready(startServer(lab, 'vm2'));
    const back = await httpGetFrom(ctr1!, `http://${vm2!.ip}:8080/`);
    t.same(JSON.parse(back.body ?? '{}'), { host: 'vm2', peer: ctr1!.ip });
    // Loopback inside a host is private to it: the server host's port is not on vm1's loopback.
    // (a generous deadline: refusal is immediate, but starting the client is slow on a busy box)
    const local = await httpGetFrom(vm1!, 'http://127.0.0.1:8080/', { timeoutMs: 15_000 });
    t.equal(local.error, 'ECONNREFUSED', "another host's listener is not on this host's loopback");
  });

  t.test('a host whose link is down is unreachable until the link comes back', async (t) => {
    const lab = await createLab({ hosts: [{ name: 'server' }, { name: 'vm1' }, { name: 'vm2' }] });
    t.teardown(() => lab.destroy());
    const { server, vm1, vm2 } = lab.hosts;
    await ready(startServer(lab, 'server'));
    await vm1!.setLink(false);
    const cut = await httpGetFrom(vm1!, `http://${server!.ip}:8080/`, { timeoutMs: 800 });
    t.ok(cut.error, `vm1 cannot reach the server while its link is down (${cut.error})`);
    const other = await httpGetFrom(vm2!, `http://${server!.ip}:8080/`);
    t.equal(other.status, 200, 'vm2 is unaffected');
    await vm1!.setLink(true);
    const back = await waitFor(
      'vm1 to reach the server again',
      async () => {
        const r = await httpGetFrom(vm1!, `http://${server!.ip}:8080/`, { timeoutMs: 1000 });
        return r.status === 200 ? r : undefined;
      },
      10_000,
    );
    t.equal(back.status, 200);
  });

  t.test('teardown deletes every namespace and stops every process started in them', async (t) => {
    const lab = await createLab({ hosts: [{ name: 'server' }, { name: 'vm1' }] });
    const names = lab.namespaces();
    t.equal(names.length, 3, 'a hub and two hosts');
    t.ok(
      names.every((n) => listNamespaces().includes(n)),
      'all namespaces exist while the lab runs',
    );
    t.ok(
      names.every((n) => n.startsWith(lab.id)),
      'names carry the unique run id',
    );
    const child = startServer(lab, 'server');
    await ready(child);
    // A detached grandchild (like a proxy an agent spawns) must not survive teardown either.
    const spawner = lab.hosts.vm1!.spawn(process.execPath, [
      '--input-type=module',
      '-e',
      `import { spawn } from 'node:child_process';
       const c = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { detached: true, stdio: 'ignore' });
       c.unref(); process.stdout.write(String(c.pid) + '\\n'); setInterval(() => {}, 1000);`,
    ]);
    let out = '';
    spawner.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    const grandchild = Number(
      await waitFor('the detached grandchild pid', () => /\d+\n/.exec(out)?.[0], 10_000),
    );
    await lab.destroy();
    t.same(
      names.filter((n) => listNamespaces().includes(n)),
      [],
      'no namespace of the lab is left',
    );
    t.ok(child.exitCode !== null || child.signalCode !== null, 'the server process has exited');
    await waitFor(
      'the detached grandchild to be gone',
      () => {
        try {
          process.kill(grandchild, 0);
          return false;
        } catch {
          return true;
        }
      },
      5000,
    );
    t.pass('the detached grandchild is gone');
    await lab.destroy();
    t.pass('a second destroy() is harmless');
  });
}
