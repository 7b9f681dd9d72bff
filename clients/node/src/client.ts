import * as path from "node:path";
import {
  Channel,
  credentials,
  Metadata,
  type CallOptions,
  type ClientOptions,
  type ClientUnaryCall,
  type ServiceError,
} from "@grpc/grpc-js";
import { BuilderClient } from "./gen/berth/v1/build";
import { ContainersClient } from "./gen/berth/v1/containers";
import { ContentClient } from "./gen/berth/v1/content";
import { EventsClient } from "./gen/berth/v1/events";
import { ImagesClient } from "./gen/berth/v1/images";
import { NetworksClient } from "./gen/berth/v1/networks";
import { VolumesClient } from "./gen/berth/v1/volumes";
import { RegistryClient } from "./gen/berth/v1/registry";
import { SnapshotsClient } from "./gen/berth/v1/snapshots";
import { TasksClient } from "./gen/berth/v1/tasks";
import { InfoRequest, InfoResponse, VersionClient, VersionRequest } from "./gen/berth/v1/version";
import type { VersionInfo } from "./gen/berth/v1/types";
import { toBerthError } from "./errors";
import { ContainerCollection } from "./containers";
import { EventStream } from "./events";
import { ImageCollection } from "./images";
import { VolumeCollection } from "./volumes";

/** Where berthd listens unless BERTH_ADDRESS or `address` says otherwise (as berthctl). */
export const DEFAULT_ADDRESS = "/run/berth/berthd.sock";
/** The namespace used unless BERTH_NAMESPACE or `namespace` says otherwise. */
export const DEFAULT_NAMESPACE = "default";
/** The metadata header that carries the namespace on every call. */
export const NAMESPACE_HEADER = "berth-namespace";
/** Deadline of a unary call unless `timeout` says otherwise, in seconds. */
export const DEFAULT_TIMEOUT = 60;

export interface ConnectOptions {
  /** Socket path or `unix:///path`; default: env BERTH_ADDRESS, else /run/berth/berthd.sock. */
  address?: string;
  /** Default: env BERTH_NAMESPACE, else "default". */
  namespace?: string;
  /** Deadline of each unary call, in seconds (default 60). */
  timeout?: number;
  /** Extra grpc-js channel options. */
  channelOptions?: Partial<ClientOptions>;
}

/** The generated grpc-js clients, one per service; pass `client.metadata` to each call. */
export interface Api {
  images: ImagesClient;
  registry: RegistryClient;
  containers: ContainersClient;
  tasks: TasksClient;
  events: EventsClient;
  version: VersionClient;
  content: ContentClient;
  snapshots: SnapshotsClient;
  networks: NetworksClient;
  volumes: VolumesClient;
  builder: BuilderClient;
}

/** A unary method of a generated client, in its (request, metadata, options, callback) form. */
export type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/** Turn an address (a path, `unix:///path` or `unix:path`) into a grpc-js target `unix:///abs/path`. */
export function resolveTarget(address: string): string {
  let p = address;
  if (p.startsWith("unix://")) {
    p = p.slice("unix://".length);
  } else if (p.startsWith("unix:")) {
    p = p.slice("unix:".length);
  }
  if (p === "") {
    throw new Error(`no socket path in address ${JSON.stringify(address)}`);
  }
  return `unix://${path.resolve(p)}`;
}

/** A connection to berthd. Make one with {@link connect}; `close()` it when done. */
export class Client {
  /** The grpc-js target, `unix:///path`. */
  readonly target: string;
  readonly namespace: string;
  /** Default deadline of unary calls, seconds. */
  readonly timeout: number;
  /** Carries `berth-namespace`; pass it to every call made through `api`. */
  readonly metadata: Metadata;
  /** The generated clients, sharing one channel. */
  readonly api: Api;
  readonly images: ImageCollection;
  readonly containers: ContainerCollection;
  readonly volumes: VolumeCollection;

  private readonly channel: Channel;

  constructor(options: ConnectOptions = {}) {
    const address = options.address ?? (process.env.BERTH_ADDRESS || DEFAULT_ADDRESS);
    this.target = resolveTarget(address);
    this.namespace = options.namespace ?? (process.env.BERTH_NAMESPACE || DEFAULT_NAMESPACE);
    this.timeout = options.timeout ?? DEFAULT_TIMEOUT;
    this.metadata = new Metadata();
    this.metadata.set(NAMESPACE_HEADER, this.namespace);
    this.channel = new Channel(this.target, credentials.createInsecure(), {
      // Image configs, specs and archive chunks (1 MiB) stay far below this.
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      ...options.channelOptions,
    });
    const opts: Partial<ClientOptions> = { channelOverride: this.channel };
    const creds = credentials.createInsecure();
    this.api = {
      images: new ImagesClient(this.target, creds, opts),
      registry: new RegistryClient(this.target, creds, opts),
      containers: new ContainersClient(this.target, creds, opts),
      tasks: new TasksClient(this.target, creds, opts),
      events: new EventsClient(this.target, creds, opts),
      version: new VersionClient(this.target, creds, opts),
      content: new ContentClient(this.target, creds, opts),
      snapshots: new SnapshotsClient(this.target, creds, opts),
      networks: new NetworksClient(this.target, creds, opts),
      volumes: new VolumesClient(this.target, creds, opts),
      builder: new BuilderClient(this.target, creds, opts),
    };
    this.images = new ImageCollection(this);
    this.containers = new ContainerCollection(this);
    this.volumes = new VolumeCollection(this);
  }

  /** Close the channel; calls still running are cancelled. */
  close(): void {
    this.channel.close();
  }

  /** The agent's version. */
  async version(): Promise<VersionInfo> {
    const r = await this.unary(this.api.version, this.api.version.version, VersionRequest.fromPartial({}));
    return r.version ?? { version: "", revision: "", apiVersion: "" };
  }

  /** The agent's configuration and state (root, snapshotter, counts, runtimes). */
  info(): Promise<InfoResponse> {
    return this.unary(this.api.version, this.api.version.info, InfoRequest.fromPartial({}));
  }

  /**
   * Every event published from now on (`filters` such as "topic~=/tasks/"
   * narrow it; an event passes when any filter matches), as an async
   * iterator, until `close()`.
   */
  events(filters?: string | string[]): EventStream {
    return new EventStream(this, filters);
  }

  /** Options (metadata and deadline) of one call. */
  callOptions(timeout?: number | null): Partial<CallOptions> {
    const t = timeout === undefined ? this.timeout : timeout;
    return t === null || !Number.isFinite(t) ? {} : { deadline: Date.now() + t * 1000 };
  }

  /**
   * Make a unary call with the namespace header and a deadline, as a promise
   * that rejects with a BerthError.
   */
  unary<Req, Res>(
    stub: object,
    method: UnaryMethod<Req, Res>,
    request: Req,
    timeout?: number | null,
  ): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      method.call(stub, request, this.metadata.clone(), this.callOptions(timeout), (err, res) => {
        if (err) {
          reject(toBerthError(err));
        } else {
          resolve(res);
        }
      });
    });
  }
}

/** Connect to berthd (the channel connects lazily, on the first call). */
export function connect(options: ConnectOptions = {}): Client {
  return new Client(options);
}
