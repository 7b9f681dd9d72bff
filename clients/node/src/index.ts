/**
 * Berth's TypeScript client: `connect()` to berthd, then `client.images`,
 * `client.containers`, `client.volumes`, `client.events()`, `client.version()`,
 * `client.info()`; anything else through `client.api.<service>` (the
 * generated grpc-js clients) with `client.metadata`.
 */
export {
  Client,
  connect,
  resolveTarget,
  DEFAULT_ADDRESS,
  DEFAULT_NAMESPACE,
  DEFAULT_TIMEOUT,
  NAMESPACE_HEADER,
  type Api,
  type ConnectOptions,
  type UnaryMethod,
} from "./client";
export * from "./errors";
export { EventStream, type BerthEvent } from "./events";
export {
  Image,
  ImageCollection,
  CHUNK_SIZE,
  type Auth,
  type ExportOptions,
  type LoadOptions,
  type PullOptions,
  type PushOptions,
} from "./images";
export {
  Container,
  ContainerCollection,
  splitCommand,
  type CreateOptions,
  type ExecOptions,
  type ExecResult,
  type ListOptions,
  type LogStream,
  type LogsOptions,
  type RunOptions,
  type WaitResult,
} from "./containers";
export { Volume, VolumeCollection } from "./volumes";
export { ResponseStream } from "./stream";
/** The generated messages and clients of package berth.v1 (`pb.Container`, `pb.TasksClient`, ...). */
export * as pb from "./gen/index.berth.v1";
