// Typed failures of a QMP conversation. Each names the peer (its socket path) so an operator can tell which
// QEMU said what.

export class QmpError extends Error {
  /** A QMP error reply: the command reached QEMU and QEMU refused it. */
  constructor(
    readonly peer: string,
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`${peer}: ${command} failed: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

export class QmpTimeoutError extends Error {
  constructor(
    readonly peer: string,
    readonly waitingFor: string,
    readonly timeoutMs: number,
  ) {
    super(`${peer}: no answer to ${waitingFor} within ${timeoutMs} ms`);
    this.name = 'QmpTimeoutError';
  }
}

export class QmpDisconnectedError extends Error {
  constructor(
    readonly peer: string,
    readonly detail: string,
  ) {
    super(`${peer}: connection lost: ${detail}`);
    this.name = 'QmpDisconnectedError';
  }
}

/** The peer broke the protocol: not JSON, an oversized line, a message of no known shape. */
export class QmpProtocolError extends Error {
  constructor(
    readonly peer: string,
    readonly detail: string,
  ) {
    super(`${peer}: protocol error: ${detail}`);
    this.name = 'QmpProtocolError';
  }
}

export class QmpConnectError extends Error {
  constructor(
    readonly peer: string,
    readonly detail: string,
  ) {
    super(`${peer}: cannot connect: ${detail}`);
    this.name = 'QmpConnectError';
  }
}

export type QmpFailure = QmpError | QmpTimeoutError | QmpDisconnectedError | QmpProtocolError | QmpConnectError;

export function isQmpFailure(e: unknown): e is QmpFailure {
  return (
    e instanceof QmpError ||
    e instanceof QmpTimeoutError ||
    e instanceof QmpDisconnectedError ||
    e instanceof QmpProtocolError ||
    e instanceof QmpConnectError
  );
}
