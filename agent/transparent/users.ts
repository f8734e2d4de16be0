// The numeric uid of a user name, from /etc/passwd: `proxy.config.app_user` names the user an
// app runs as, and the owner match of the interception rules needs the number.
import { readFileSync } from 'node:fs';

/** The uid of `name` in the passwd file, or null when no line names it (or it is unreadable). */
export function uidOfUser(name: string, passwdPath = '/etc/passwd'): number | null {
  let text: string;
  try {
    text = readFileSync(passwdPath, 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f.length >= 3 && /^\d+$/.test(f[2]!)) return Number(f[2]);
  }
  return null;
}
