import { Metadata, status as Status, type ServiceError } from "@grpc/grpc-js";

/**
 * Every failure of a call to the agent. `code` is the numeric gRPC status
 * (5 for NOT_FOUND, ...), `details` the agent's message.
 */
export class BerthError extends Error {
  readonly code: number;
  readonly details: string;
  readonly metadata?: Metadata;

  constructor(code: number, details: string, metadata?: Metadata, options?: { cause?: unknown }) {
    super(details || Status[code] || `gRPC status ${code}`, options);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
    this.metadata = metadata;
  }
}

export class Cancelled extends BerthError {}
export class InvalidArgument extends BerthError {}
export class DeadlineExceeded extends BerthError {}
export class NotFound extends BerthError {}
export class AlreadyExists extends BerthError {}
export class PermissionDenied extends BerthError {}
export class ResourceExhausted extends BerthError {}
export class FailedPrecondition extends BerthError {}
export class Aborted extends BerthError {}
export class OutOfRange extends BerthError {}
export class Unimplemented extends BerthError {}
export class Internal extends BerthError {}
export class Unavailable extends BerthError {}
export class DataLoss extends BerthError {}
export class Unauthenticated extends BerthError {}

const BY_CODE: { [code: number]: typeof BerthError } = {
  [Status.CANCELLED]: Cancelled,
  [Status.INVALID_ARGUMENT]: InvalidArgument,
  [Status.DEADLINE_EXCEEDED]: DeadlineExceeded,
  [Status.NOT_FOUND]: NotFound,
  [Status.ALREADY_EXISTS]: AlreadyExists,
  [Status.PERMISSION_DENIED]: PermissionDenied,
  [Status.RESOURCE_EXHAUSTED]: ResourceExhausted,
  [Status.FAILED_PRECONDITION]: FailedPrecondition,
  [Status.ABORTED]: Aborted,
  [Status.OUT_OF_RANGE]: OutOfRange,
  [Status.UNIMPLEMENTED]: Unimplemented,
  [Status.INTERNAL]: Internal,
  [Status.UNAVAILABLE]: Unavailable,
  [Status.DATA_LOSS]: DataLoss,
  [Status.UNAUTHENTICATED]: Unauthenticated,
};

/** The class used for a gRPC status code (BerthError itself for UNKNOWN and the like). */
export function errorClassFor(code: number): typeof BerthError {
  return BY_CODE[code] ?? BerthError;
}

function isServiceError(err: unknown): err is ServiceError {
  return (
    err instanceof Error &&
    typeof (err as Partial<ServiceError>).code === "number" &&
    typeof (err as Partial<ServiceError>).details === "string"
  );
}

/**
 * Turn what grpc-js reports (a ServiceError) into the matching BerthError
 * subclass. Anything else (a BerthError already, a file system error) is
 * returned as it is.
 */
export function toBerthError(err: unknown): unknown {
  if (err instanceof BerthError || !isServiceError(err)) {
    return err;
  }
  const cls = errorClassFor(err.code);
  return new cls(err.code, err.details, err.metadata, { cause: err });
}

/**
 * A container's command exited with a non-zero code (`containers.run`
 * without `detach`). `code` is UNKNOWN (2): the call itself worked.
 */
export class ContainerError extends BerthError {
  /** The container (already removed when `remove` was asked). */
  readonly container: { id: string; name: string };
  readonly exitStatus: number;
  readonly command: string[] | undefined;
  readonly image: string;
  /** What `run` collected: stdout, and stderr with `stderr: true`. */
  readonly output: Buffer;
  /** The container's stderr, whatever was asked. */
  readonly stderr: Buffer;

  constructor(
    container: { id: string; name: string },
    exitStatus: number,
    command: string[] | undefined,
    image: string,
    output: Buffer,
    stderr: Buffer,
  ) {
    const cmd = command ? ` '${command.join(" ")}'` : "";
    const tail = stderr.length ? `: ${stderr.toString("utf8").trim()}` : "";
    super(Status.UNKNOWN, `command${cmd} in image ${image} returned non-zero exit status ${exitStatus}${tail}`);
    this.container = container;
    this.exitStatus = exitStatus;
    this.command = command;
    this.image = image;
    this.output = output;
    this.stderr = stderr;
  }
}
