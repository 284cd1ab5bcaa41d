import { chmodSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { logFile, memFile, recordFile, socketPath } from '../../activities/host/paths';
import { ConfigError } from '../../activities/host/validate';
import {
  deleteVmRecord,
  listVmRecords,
  readVmRecord,
  RecordConflictError,
  writeVmRecord,
  type VmRecord,
} from '../../activities/host/vm-record';
import { parseVmSpec } from '../../activities/host/vm-spec';
import { useTmpDir } from '../helpers/tmp';

const tmp = useTmpDir('qfr');

function record(id: string, generation = 1): VmRecord {
  return {
    id,
    pid: 4242,
    qmpSocket: `/r/run/${id}.${generation}.qmp`,
    binary: { label: '7.2', path: '/usr/bin/qemu-system-x86_64' },
    spec: parseVmSpec({ id, binary: '7.2', machine: 'pc', memoryMiB: 64 }),
    machineType: 'pc-i440fx-7.2',
    startedAt: new Date().toISOString(),
    generation,
  };
}

const mode = (p: string) => statSync(p).mode & 0o777;

describe('runtime paths', () => {
  it('builds names from validated ids only', () => {
    expect(recordFile('/r', 'vm1')).toBe('/r/vms/vm1.json');
    expect(socketPath('/r', 'vm1', 2, 'qmp')).toBe('/r/run/vm1.2.qmp');
    expect(logFile('/r', 'vm1', 2, 'destination')).toBe('/r/log/vm1.2.destination.log');
    expect(memFile('/r', 'vm1')).toBe('/r/mem/vm1.ram');
    for (const bad of ['../x', 'a/b', '', '.hidden', 'UPPER', 'x'.repeat(64)]) {
      expect(() => recordFile('/r', bad)).toThrow(ConfigError);
      expect(() => socketPath('/r', bad, 1, 'qmp')).toThrow(/^id: invalid id/);
    }
    expect(() => socketPath('/r', 'vm1', 0, 'qmp')).toThrow(/generation/);
    expect(() => recordFile('relative', 'vm1')).toThrow(/runtimeDir: must be an absolute path/);
  });

  it('fails clearly when a socket path would not fit in sun_path', () => {
    const longDir = `/${'d'.repeat(93)}`;
    expect(() => socketPath(longDir, 'vm1', 1, 'qmp')).toThrow(
      /runtimeDir: socket path .* is 108 bytes, over the 107-byte limit of UNIX sockets/,
    );
    expect(socketPath(`/${'d'.repeat(92)}`, 'vm1', 1, 'qmp')).toHaveLength(107);
  });
});

describe('VM records', () => {
  it('writes atomically with owner-only permissions and reads back', async () => {
    const rt = path.join(tmp(), 'rt1');
    const rec = record('vm1');
    await writeVmRecord(rt, rec);
    const file = recordFile(rt, 'vm1');
    expect(mode(file)).toBe(0o600);
    expect(mode(path.dirname(file))).toBe(0o700);
    expect(readdirSync(path.dirname(file))).toEqual(['vm1.json']); // no temp file left behind
    expect(await readVmRecord(rt, 'vm1')).toEqual(rec);
    expect(await readVmRecord(rt, 'vm2')).toBeUndefined();
  });

  it('tightens a pre-existing loose folder to 0700', async () => {
    const rt = path.join(tmp(), 'rt2');
    mkdirSync(path.join(rt, 'vms'), { recursive: true });
    chmodSync(path.join(rt, 'vms'), 0o755);
    await writeVmRecord(rt, record('vm1'));
    expect(mode(path.join(rt, 'vms'))).toBe(0o700);
  });

  it('replaces with an optimistic generation check', async () => {
    const rt = path.join(tmp(), 'rt3');
    await writeVmRecord(rt, record('vm1'), { expectGeneration: 'absent' });
    await expect(writeVmRecord(rt, record('vm1'), { expectGeneration: 'absent' })).rejects.toThrow(RecordConflictError);
    await writeVmRecord(rt, record('vm1', 2), { expectGeneration: 1 });
    await expect(writeVmRecord(rt, record('vm1', 3), { expectGeneration: 1 })).rejects.toThrow(
      /expected generation 1, found 2/,
    );
    expect((await readVmRecord(rt, 'vm1'))?.generation).toBe(2);
  });

  it('lists records sorted, ignoring stray files, and deletes', async () => {
    const rt = path.join(tmp(), 'rt4');
    await writeVmRecord(rt, record('vm-b'));
    await writeVmRecord(rt, record('vm-a'));
    writeFileSync(path.join(rt, 'vms', '.vm-c.json.1.tmp'), '{');
    writeFileSync(path.join(rt, 'vms', 'vm-a.json.lock'), '1');
    writeFileSync(path.join(rt, 'vms', 'NOT SAFE.json'), '{}');
    expect((await listVmRecords(rt)).map((r) => r.id)).toEqual(['vm-a', 'vm-b']);
    await deleteVmRecord(rt, 'vm-a');
    expect((await listVmRecords(rt)).map((r) => r.id)).toEqual(['vm-b']);
    expect(await listVmRecords(path.join(tmp(), 'none'))).toEqual([]);
  });

  it('refuses invalid records and names the file of a corrupt one', async () => {
    const rt = path.join(tmp(), 'rt5');
    await expect(writeVmRecord(rt, { ...record('vm1'), pid: -1 })).rejects.toThrow(/^VM record vm1: pid: /);
    await expect(writeVmRecord(rt, { ...record('vm1'), id: '../../etc/passwd' })).rejects.toThrow(/id: must match/);
    await expect(writeVmRecord(rt, { ...record('vm1'), spec: { ...record('vm1').spec, id: 'other' } })).rejects.toThrow(
      /spec\.id: must equal id/,
    );
    await writeVmRecord(rt, record('vm1'));
    writeFileSync(recordFile(rt, 'vm1'), '{"id": "vm1"');
    await expect(readVmRecord(rt, 'vm1')).rejects.toThrow(new RegExp(`^${recordFile(rt, 'vm1')}: corrupt VM record`));
    await expect(listVmRecords(rt)).rejects.toThrow(/corrupt VM record/);
    writeFileSync(recordFile(rt, 'vm1'), JSON.stringify(record('vm2')));
    await expect(readVmRecord(rt, 'vm1')).rejects.toThrow(/record names VM vm2, expected vm1/);
  });
});
