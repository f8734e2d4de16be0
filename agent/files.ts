// Files the agent keeps in its data directory. Secrets (keys) are written 0600 through a
// temporary file and a rename, so a reader never sees half a key and the mode is right from
// the first byte.
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { RemoraError } from '../lib/errors/index.ts';

export interface DataPaths {
  root: string;
  socket: string;
  agentPid: string;
  instanceDir(id: string): string;
  key(id: string): string;
  cert(id: string): string;
  proxyPid(id: string): string;
  proxyLog(id: string): string;
  cache(name: string): string;
}

export function dataPaths(root: string): DataPaths {
  const inst = (id: string) => join(root, 'instances', id);
  return {
    root,
    socket: join(root, 'agent.sock'),
    agentPid: join(root, 'agent.pid'),
    instanceDir: inst,
    key: (id) => join(inst(id), 'key.pem'),
    cert: (id) => join(inst(id), 'cert.pem'),
    proxyPid: (id) => join(inst(id), 'proxy.pid'),
    proxyLog: (id) => join(inst(id), 'proxy.log'),
    cache: (name) => join(root, 'cache', `${name}.json`),
  };
}

export async function ensureDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new RemoraError(
      'REMORA_E_AGENT_DATA_DIR',
      `cannot create directory ${dir} (${(err as Error).message}); create it for the agent user with mode 0700 or set dataDir`,
      { path: dir },
      { cause: err },
    );
  }
}

/** Writes in flight per path: a write starts after the one before it, so the last call wins. */
const writing = new Map<string, Promise<void>>();

/**
 * Writes a file atomically with the given mode (0600 for secrets). Writes to one path land in
 * the order they were asked for, so a cache never ends with an older value.
 */
export function writeFileAtomic(path: string, data: string, mode = 0o600): Promise<void> {
  const next = (writing.get(path) ?? Promise.resolve())
    .catch(() => undefined)
    .then(() => writeOnce(path, data, mode));
  writing.set(path, next);
  const forget = (): void => {
    if (writing.get(path) === next) writing.delete(path);
  };
  next.then(forget, forget);
  return next;
}

/** Resolves once every write asked for so far has landed (or failed). */
export async function writesSettled(): Promise<void> {
  while (writing.size > 0) await Promise.allSettled([...writing.values()]);
}

async function writeOnce(path: string, data: string, mode: number): Promise<void> {
  await ensureDir(dirname(path));
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.chmod(mode);
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new RemoraError(
      'REMORA_E_AGENT_DATA_DIR',
      `cannot write ${path} (${(err as Error).message}); check the data directory's owner and free space`,
      { path },
      { cause: err },
    );
  }
}

export async function readFileOrNull(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return null;
  }
}

export async function readJsonOrNull<T>(path: string): Promise<T | null> {
  const text = await readFileOrNull(path);
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}
