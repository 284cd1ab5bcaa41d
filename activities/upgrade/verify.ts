// Step 7 of the saga: the destination runs the guest on the build it should, with the VM's devices. Only
// reads; a failure is VerificationFailed (the workflow then migrates the VM back) or a lost process.
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { failureTypes } from '../../workflows/failures';
import { queryStatus, queryVersion } from '../capabilities/probe';
import type { HostConfig } from '../host/config';
import type { HostActivities, Verification } from './api';
import { refuseUnsafeInput, requireLiveProcess, requireRecord, withQmp } from './processes';

const qomListSchema = z.array(z.object({ name: z.string(), type: z.string() }));

export async function verify(
  config: HostConfig,
  input: Parameters<HostActivities['verify']>[0],
): Promise<Verification> {
  refuseUnsafeInput(input.vmId, input.destination);
  const record = await requireRecord(config, input.vmId);
  const p = await requireLiveProcess(config, input.vmId, input.destination, 'destination', record);
  return withQmp(config, p, async (qmp) => {
    const [state, version, children] = await Promise.all([
      queryStatus(qmp),
      queryVersion(qmp),
      qmp.execute('qom-list', { path: '/machine/peripheral' }).then((l) => qomListSchema.parse(l)),
    ]);
    const devices = children.filter((c) => c.type.startsWith('child<')).map((c) => c.name);
    const problems: string[] = [];
    if (!state.running) problems.push(`status is ${state.status}, not running`);
    if (version.version !== input.expectVersion)
      problems.push(`QEMU ${version.version}, expected ${input.expectVersion}`);
    const missing = record.spec.devices.map((d) => d.id).filter((id) => !devices.includes(id));
    if (missing.length) problems.push(`devices missing: ${missing.join(', ')}`);
    if (problems.length) {
      throw ApplicationFailure.nonRetryable(
        `destination of ${input.vmId} failed verification: ${problems.join('; ')}`,
        failureTypes.verificationFailed,
      );
    }
    return { status: state.status, qemuVersion: version.version, devices };
  });
}
