// `fleet-upgrade probe --qmp <socket>`: what the QEMU behind a monitor socket is and can do.
import { probeVm, type VmCapabilities } from '../../activities/capabilities/probe';
import { QmpClient } from '../../activities/qmp/client';
import { QmpTimeoutError } from '../../activities/qmp/errors';

export interface ProbeOptions {
  qmp: string;
  json?: boolean;
  timeoutMs: number;
}

/** The probe's public JSON form. */
export function probeJson(c: VmCapabilities) {
  return {
    qemuVersion: c.qemuVersion,
    package: c.package,
    status: c.status,
    machine: c.machine,
    strategies: c.strategies,
    backendTransfer: c.backendTransfer,
  };
}

export function probeText(c: VmCapabilities): string {
  const transferable = c.backendTransfer.transferable;
  return [
    `QEMU        ${c.qemuVersion}${c.package ? ` (${c.package})` : ''}`,
    `status      ${c.status}`,
    `machine     ${c.machine}`,
    `memory      ${c.memory.backend ?? 'anonymous'}${c.memory.shared ? ', shared' : ''}${c.memory.auxRamShare ? ', aux-ram-share' : ''}`,
    `strategies  ${c.strategies.join(', ')}`,
    `dialect     ${c.backendTransfer.dialect}`,
    `transfer    ${transferable === null ? 'unknown (the dialect cannot tell)' : transferable.join(', ') || 'none'}`,
  ].join('\n');
}

export async function runProbe(options: ProbeOptions): Promise<string> {
  const started = Date.now();
  const qmp = await QmpClient.connect(options.qmp, { timeoutMs: options.timeoutMs });
  try {
    // One deadline for the whole probe, whatever the number of questions.
    const left = Math.max(1, options.timeoutMs - (Date.now() - started));
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new QmpTimeoutError(options.qmp, 'the probe', options.timeoutMs)), left);
    });
    const caps = await Promise.race([probeVm(qmp), deadline]).finally(() => clearTimeout(timer));
    return options.json ? JSON.stringify(probeJson(caps)) : probeText(caps);
  } finally {
    await qmp.close();
  }
}
