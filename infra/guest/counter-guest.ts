// The guest that proves it survived (docs/DESIGN.md): a 512-byte boot sector that increments the dword at 0x7e00
// forever. Read it with `human-monitor-command {"command-line":"x /1wx 0x7e00"}`.
import { writeFileSync } from 'node:fs';

/** xor ax,ax; mov ds,ax; inc dword [0x7e00]; jmp short -7 (back to the inc). */
export const COUNTER_CODE = [0x31, 0xc0, 0x8e, 0xd8, 0x66, 0xff, 0x06, 0x00, 0x7e, 0xeb, 0xf9];
export const COUNTER_ADDRESS = 0x7e00;

export function counterBootSector(): Buffer {
  const sector = Buffer.alloc(512);
  Buffer.from(COUNTER_CODE).copy(sector, 0);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

/** Writes the boot sector as a raw disk image (mode 0600) and returns the path. */
export function writeCounterGuest(file: string): string {
  writeFileSync(file, counterBootSector(), { mode: 0o600 });
  return file;
}

/** Parses the HMP answer of `x /1wx 0x7e00` (e.g. `0000000000007e00: 0x0001a2b3\r\n`). */
export function parseCounter(hmpOutput: string): number {
  const m = /:\s*0x([0-9a-f]+)/i.exec(hmpOutput);
  if (!m) throw new Error(`unexpected HMP output for the counter: ${JSON.stringify(hmpOutput)}`);
  return parseInt(m[1]!, 16);
}
