// human-monitor-command: the few HMP commands a manager or a test uses, with QEMU's output format.
// Guest memory is all zero except the counter dword at 0x7e00 (little-endian), which the guest's loop
// increments while it runs.
import { COUNTER_ADDR, type Machine } from './machine';

function readByte(vm: Machine, addr: number, counter: number): number {
  const off = addr - COUNTER_ADDR;
  return off >= 0 && off < 4 ? (counter >>> (off * 8)) & 0xff : 0;
}

/** `x /FMT ADDR` (and `xp`): FMT is [count][format x|d|u|o][size b|h|w|g], as memory_dump() prints it. */
function memoryDump(vm: Machine, fmtArg: string | undefined, addrArg: string | undefined): string {
  let count = 1;
  let format = 'x';
  let size = 4;
  let spec = '';
  let addrText = addrArg;
  if (fmtArg?.startsWith('/')) spec = fmtArg.slice(1);
  else addrText = fmtArg;
  const m = /^(\d*)([xduoc]?)([bhwg]?)([xduoc]?)$/.exec(spec);
  if (!m) return `invalid char in format: '${spec}'\r\n`;
  if (m[1]) count = Number(m[1]);
  format = m[2] || m[4] || 'x';
  if (m[3]) size = { b: 1, h: 2, w: 4, g: 8 }[m[3]] as number;
  if (addrText === undefined) return "Parameter 'addr' is missing\r\n";
  const addr = Number(addrText);
  if (!Number.isFinite(addr)) return `invalid char in expression\r\n`;
  const counter = vm.counter();
  const perLine = Math.max(1, Math.floor(16 / size));
  const maxDigits =
    format === 'x' ? size * 2 : format === 'o' ? Math.ceil((size * 8) / 3) : Math.ceil((size * 8 * 10 + 32) / 33);
  let out = '';
  for (let i = 0; i < count; i++) {
    const a = addr + i * size;
    if (i % perLine === 0) out += `${i ? '\r\n' : ''}${a.toString(16).padStart(16, '0')}:`;
    let v = 0n;
    for (let b = size - 1; b >= 0; b--) v = (v << 8n) | BigInt(readByte(vm, a + b, counter));
    if (format === 'x') out += ` 0x${v.toString(16).padStart(maxDigits, '0')}`;
    else if (format === 'o') out += ` 0${v.toString(8).padStart(maxDigits, '0')}`;
    else if (format === 'c') out += ` '${String.fromCharCode(Number(v & 0xffn))}'`;
    else out += ` ${v.toString(10).padStart(maxDigits, ' ')}`;
  }
  return `${out}\r\n`;
}

function infoStatus(vm: Machine): string {
  const s = vm.runState;
  if (s === 'running') return 'VM status: running\r\n';
  if (s === 'paused') return 'VM status: paused\r\n';
  return `VM status: paused (${s})\r\n`;
}

export function humanMonitorCommand(vm: Machine, line: string): string {
  const words = line.trim().split(/\s+/);
  const [cmd, ...rest] = words;
  switch (cmd) {
    case 'x':
    case 'xp':
      return memoryDump(vm, rest[0], rest[1]);
    case 'info':
      switch (rest[0]) {
        case 'status':
          return infoStatus(vm);
        case 'name':
          return vm.cfg.name !== undefined ? `${vm.cfg.name}\r\n` : '';
        case 'version':
          return `${vm.sim.version} (${vm.packageString()})\r\n`;
        case undefined:
          return 'info status -- show the current VM status (running|paused)\r\n';
        default:
          return `unknown info command: '${rest[0]}'\r\n`;
      }
    case undefined:
    case '':
      return '';
    default:
      return `unknown command: '${cmd}'\r\n`;
  }
}
