// Owner-only folders and crash-safe file replacement for the runtime folder.
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from './validate';

/**
 * Creates the folder (and parents) if missing and makes it owner-only (0700). An existing one must be a real
 * folder (not a symlink, which could point the worker's sockets and records anywhere) owned by this user:
 * one another user could write into would let them plant sockets and records the worker trusts.
 */
export async function ensurePrivateDir(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await lstat(dir);
  if (st.isSymbolicLink() || !st.isDirectory()) {
    throw new ConfigError('runtimeDir', `${dir} must be a folder, not a symbolic link or a file`);
  }
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new ConfigError('runtimeDir', `${dir} belongs to uid ${st.uid}, not to this worker's user (uid ${uid})`);
  }
  if ((st.mode & 0o777) !== 0o700) await chmod(dir, 0o700);
  return dir;
}

async function fsyncPath(p: string): Promise<void> {
  const fh = await open(p, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Replaces `file` atomically: writes a temporary file (0600) in the same folder, fsyncs it, renames it over
 * the target and fsyncs the folder. A reader sees the old content or the new, never a mix.
 */
export async function writeFileAtomic(file: string, data: string | Buffer): Promise<void> {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncPath(dir);
}
