// Short temporary folders for tests. UNIX socket paths must stay under 108 bytes, so these live directly
// under /tmp with short names rather than under os.tmpdir() (which may be long) or the repository.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';

export interface TmpDir {
  path: string;
  cleanup(): void;
}

/** Creates `<base>/<prefix>-XXXXXX` (mode 0700 by mkdtemp); base /tmp, or e.g. /dev/shm for tmpfs when it exists. */
export function makeTmpDir(prefix = 'qf', base = '/tmp'): TmpDir {
  const dir = mkdtempSync(`${existsSync(base) ? base : '/tmp'}/${prefix}-`);
  return { path: dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Jest helper: a fresh folder per test file, removed in afterAll. Returns a getter because the folder is
 * created in beforeAll.
 */
export function useTmpDir(prefix = 'qf'): () => string {
  let dir: TmpDir | undefined;
  beforeAll(() => {
    dir = makeTmpDir(prefix);
  });
  afterAll(() => dir?.cleanup());
  return () => {
    if (!dir) throw new Error('useTmpDir: folder requested outside a test');
    return dir.path;
  };
}
