import type { Client } from "./client";
import {
  CommitRequest,
  type Change,
  type Container as ContainerMessage,
  ContainerConfig,
  type CopyFromResponse,
  CopyFromRequest,
  CopyToOptions,
  CopyToRequest,
  CreateContainerRequest,
  NetworkEndpoint,
  DeleteContainerRequest,
  DiffRequest,
  GetContainerRequest,
  ListContainersRequest,
  LogsRequest,
  type LogsResponse,
  type PathStat,
  StatPathRequest,
} from "./gen/berth/v1/containers";
import {
  AttachRequest,
  type AttachResponse,
  CreateTaskRequest,
  DeleteTaskRequest,
  ExecRequest,
  KillTaskRequest,
  ListPidsRequest,
  PauseTaskRequest,
  type ProcessInfo,
  ResumeTaskRequest,
  StartTaskRequest,
  StatsRequest,
  type StatsResponse,
  StopTaskRequest,
  WaitTaskRequest,
} from "./gen/berth/v1/tasks";
import { ContainerError, NotFound, toBerthError } from "./errors";
import { toFilters } from "./events";
import type { Image } from "./images";
import { ResponseStream } from "./stream";

/** Bytes per message of an archive sent to the agent. */
const ARCHIVE_CHUNK = 1 << 20;

/** What a container is created with (docker-py's names, camelCase). */
export interface CreateOptions {
  /** Unique name ([a-zA-Z0-9][a-zA-Z0-9_.-]*); generated when absent. */
  name?: string;
  /** Replaces the image's Entrypoint (a string is split like a shell would). */
  entrypoint?: string | string[];
  /** Added to the image's environment: ["K=V", ...] or {K: "V"}. */
  env?: string[] | { [key: string]: string };
  workingDir?: string;
  /** "UID[:GID]" or "NAME[:GROUP]". */
  user?: string;
  hostname?: string;
  /** "" (the default network), "none", "host", "container:NAME", or a network's name. */
  network?: string;
  labels?: { [key: string]: string };
  /** Allocate a terminal. */
  tty?: boolean;
  /** Delete the container when its main process exits (docker run --rm). */
  autoRemove?: boolean;
  /** Mount the root filesystem read-only. */
  readOnly?: boolean;
  privileged?: boolean;
  /** "runc" (default), "crun" or the path of an OCI runtime. */
  runtime?: string;
  /** Run berth-init as PID 1: it reaps zombies and passes signals on (docker run --init). */
  init?: boolean;
  /** The signal `stop()` sends first ("SIGQUIT"); default: the image's, else SIGTERM. */
  stopSignal?: string;
  /** Seconds `stop()` waits before SIGKILL when it names none (default 10). */
  stopTimeout?: number;
  /** When the agent starts it again: "always", "unless-stopped", "on-failure" (with maxRetries). */
  restartPolicy?: { name: string; maxRetries?: number };
}

export interface RunOptions extends CreateOptions {
  /** Start and return the running Container instead of waiting for the output. */
  detach?: boolean;
  /** Delete the container once it exited (with `detach`: `autoRemove`). */
  remove?: boolean;
  /** Collect stdout (default true). */
  stdout?: boolean;
  /** Collect stderr (default false). */
  stderr?: boolean;
}

export interface ListOptions {
  /** Also the containers that are not running (default: running and paused ones only, as docker ps). */
  all?: boolean;
  /** "name==N", "name~=SUB", "label.K==V", "label.K", "status==exited", "image==NAME", "id==PREFIX". */
  filters?: string | string[];
}

export interface LogsOptions {
  /** Include stdout (default true). */
  stdout?: boolean;
  /** Include stderr (default true). */
  stderr?: boolean;
  /** Keep going while the container runs (no deadline). */
  follow?: boolean;
  /** Only the last N lines. */
  tail?: number | "all";
  /** Only records at or after this time (a Date or Unix seconds). */
  since?: Date | number;
  /** Only records before this time. */
  until?: Date | number;
  /** Return an async iterator of chunks instead of one Buffer. */
  stream?: boolean;
}

export interface ExecOptions {
  /** KEY=VALUE added to the container's environment (or an object). */
  env?: string[] | { [key: string]: string };
  /** Default: the container's working directory. */
  workdir?: string;
  /** Default: the container's user. */
  user?: string;
  /** Collect stdout (default true). */
  stdout?: boolean;
  /** Collect stderr (default true). */
  stderr?: boolean;
  tty?: boolean;
}

export interface ExecResult {
  exitCode: number;
  output: Buffer;
}

export interface WaitResult {
  exitCode: number;
  exitedAt: Date | undefined;
}

/** A container's log as chunks; `close()` stops it. */
export interface LogStream extends AsyncIterableIterator<Buffer> {
  close(): void;
}

/** Split a command line into words as a POSIX shell would (quotes and backslashes, no expansion). */
export function splitCommand(line: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let quote: "'" | '"' | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote === "'") {
      if (c === "'") {
        quote = undefined;
      } else {
        word += c;
      }
    } else if (quote === '"') {
      if (c === '"') {
        quote = undefined;
      } else if (c === "\\" && i + 1 < line.length && '\\"$`\n'.includes(line[i + 1])) {
        word += line[++i];
      } else {
        word += c;
      }
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === "\\" && i + 1 < line.length) {
      word += line[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) {
        words.push(word);
        word = "";
        inWord = false;
      }
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote) {
    throw new Error(`unterminated quote in ${JSON.stringify(line)}`);
  }
  if (inWord) {
    words.push(word);
  }
  return words;
}

function toArgs(cmd: string | string[]): string[] {
  return typeof cmd === "string" ? splitCommand(cmd) : [...cmd];
}

function toEnv(env?: string[] | { [key: string]: string }): string[] {
  if (!env) {
    return [];
  }
  return Array.isArray(env) ? [...env] : Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

function toDate(t?: Date | number): Date | undefined {
  return t === undefined ? undefined : t instanceof Date ? t : new Date(t * 1000);
}

/** What an attached process wrote, and how it ended. */
interface Attached {
  exitCode: number;
  chunks: { stream: string; data: Buffer }[];
}

/**
 * Attach to a process (the init when `execId` is empty), start it once the
 * attach is in place (so no output is missed), and collect its output until
 * it exits.
 */
async function attachAndStart(client: Client, containerId: string, execId: string): Promise<Attached> {
  const tasks = client.api.tasks;
  const call = tasks.attach(client.metadata.clone(), client.callOptions(null));
  const responses = new ResponseStream<AttachResponse>(call);
  const chunks: Attached["chunks"] = [];
  let exitCode: number | undefined;
  try {
    call.write(AttachRequest.fromPartial({ containerId, execId }));
    await responses.ready;
    await client.unary(tasks, tasks.start, StartTaskRequest.fromPartial({ containerId, execId }));
    for await (const r of responses) {
      if (r.exited) {
        exitCode = r.exitCode;
        break;
      }
      chunks.push({ stream: r.stream, data: r.data });
    }
  } finally {
    responses.close();
  }
  if (exitCode === undefined) {
    // The stream ended without the exit message: ask for the exit status.
    const w = await client.unary(tasks, tasks.wait, WaitTaskRequest.fromPartial({ containerId, execId }), null);
    exitCode = w.exitCode;
  }
  return { exitCode, chunks };
}

function pick(chunks: Attached["chunks"], stdout: boolean, stderr: boolean): Buffer {
  return Buffer.concat(
    chunks.filter((c) => (c.stream === "stderr" ? stderr : stdout)).map((c) => c.data),
  );
}

/** A container: its record, and its task (the running process) through the methods. */
export class Container {
  constructor(
    private readonly client: Client,
    /** The `berth.v1.Container` message the agent sent. */
    public attrs: ContainerMessage,
  ) {}

  /** 64 hex characters. */
  get id(): string {
    return this.attrs.id;
  }

  /** The first 12 characters of the id. */
  get shortId(): string {
    return this.attrs.id.slice(0, 12);
  }

  get name(): string {
    return this.attrs.name;
  }

  /** The image name as given at create time, normalized. */
  get image(): string {
    return this.attrs.image;
  }

  /** "created", "running", "paused", "exited" or "unknown", as of the last reload. */
  get status(): string {
    return this.attrs.status?.state ?? "unknown";
  }

  get labels(): { [key: string]: string } {
    return this.attrs.labels;
  }

  private get tasks() {
    return this.client.api.tasks;
  }

  /** Ask the agent again (attrs, status). */
  async reload(): Promise<this> {
    const api = this.client.api.containers;
    const r = await this.client.unary(api, api.get, GetContainerRequest.fromPartial({ id: this.id }));
    if (r.container) {
      this.attrs = r.container;
    }
    return this;
  }

  /** Start the main process (creating the task first if needed). */
  async start(): Promise<void> {
    await this.client.unary(this.tasks, this.tasks.start, StartTaskRequest.fromPartial({ containerId: this.id }));
  }

  /**
   * The stop signal (SIGTERM, or the container's or image's), SIGKILL after
   * `timeout` seconds (default: the container's stop timeout, else 10); returns the exit code.
   */
  async stop(options: { timeout?: number } = {}): Promise<number> {
    const set = options.timeout !== undefined;
    const secs = options.timeout ?? this.attrs.config?.stopTimeout ?? 10;
    const r = await this.client.unary(
      this.tasks,
      this.tasks.stop,
      StopTaskRequest.fromPartial({ containerId: this.id, timeoutSecs: set ? secs : 0, timeoutSet: set }),
      this.client.timeout + secs,
    );
    return r.exitCode;
  }

  /** Send a signal ("KILL" by default, a name or a number) to the main process. */
  async kill(signal: string | number = "KILL"): Promise<void> {
    await this.client.unary(
      this.tasks,
      this.tasks.kill,
      KillTaskRequest.fromPartial({ containerId: this.id, signal: String(signal) }),
    );
  }

  /**
   * Wait for the main process to exit. Without `timeout` (seconds) it
   * waits as long as it takes (no deadline); with one it rejects with
   * DeadlineExceeded when the process is still running then.
   */
  async wait(options: { timeout?: number } = {}): Promise<WaitResult> {
    const t = options.timeout;
    const r = await this.client.unary(
      this.tasks,
      this.tasks.wait,
      WaitTaskRequest.fromPartial({ containerId: this.id, timeoutMs: t === undefined ? 0 : Math.ceil(t * 1000) }),
      t === undefined ? null : t + this.client.timeout,
    );
    return { exitCode: r.exitCode, exitedAt: r.exitedAt };
  }

  /** The container's log as one Buffer (with `follow`, once the container has exited). */
  logs(options?: LogsOptions & { stream?: false }): Promise<Buffer>;
  /** The container's log as an async iterator of chunks (with `follow`, until the container exits). */
  logs(options: LogsOptions & { stream: true }): LogStream;
  logs(options: LogsOptions = {}): Promise<Buffer> | LogStream {
    const stdout = options.stdout ?? true;
    const stderr = options.stderr ?? true;
    const tail = options.tail === undefined || options.tail === "all" ? undefined : options.tail;
    const follow = options.follow ?? false;
    const api = this.client.api.containers;
    const call = api.logs(
      LogsRequest.fromPartial({
        id: this.id,
        follow,
        tail: tail ?? 0,
        tailSet: tail !== undefined,
        since: toDate(options.since),
        until: toDate(options.until),
        // Both false means both to the agent.
        stdout,
        stderr,
      }),
      this.client.metadata.clone(),
      this.client.callOptions(follow ? null : undefined),
    );
    const responses = new ResponseStream<LogsResponse>(call);
    const wanted = (r: LogsResponse) => (r.stream === "stderr" ? stderr : stdout);
    if (options.stream) {
      const it: LogStream = {
        async next(): Promise<IteratorResult<Buffer>> {
          for (;;) {
            const r = await responses.next();
            if (r.done) {
              return { done: true, value: undefined };
            }
            if (wanted(r.value)) {
              return { done: false, value: r.value.data };
            }
          }
        },
        async return(): Promise<IteratorResult<Buffer>> {
          responses.close();
          return { done: true, value: undefined };
        },
        close(): void {
          responses.close();
        },
        [Symbol.asyncIterator]() {
          return it;
        },
      };
      return it;
    }
    return responses.toArray().then((all) => Buffer.concat(all.filter(wanted).map((r) => r.data)));
  }

  /**
   * Run a command in the running container, collect its output (stdout and
   * stderr unless told otherwise) and return it with the exit code.
   */
  async execRun(cmd: string | string[], options: ExecOptions = {}): Promise<ExecResult> {
    const r = await this.client.unary(
      this.tasks,
      this.tasks.exec,
      ExecRequest.fromPartial({
        containerId: this.id,
        args: toArgs(cmd),
        env: toEnv(options.env),
        workdir: options.workdir ?? "",
        user: options.user ?? "",
        tty: options.tty ?? false,
      }),
    );
    try {
      const a = await attachAndStart(this.client, this.id, r.execId);
      return { exitCode: a.exitCode, output: pick(a.chunks, options.stdout ?? true, options.stderr ?? true) };
    } finally {
      // The exec's record is of no use once it exited (as berthctl exec).
      await this.client
        .unary(
          this.tasks,
          this.tasks.delete,
          DeleteTaskRequest.fromPartial({ containerId: this.id, execId: r.execId, force: true }),
        )
        .catch(() => {});
    }
  }

  /** Freeze every process of the container. */
  async pause(): Promise<void> {
    await this.client.unary(this.tasks, this.tasks.pause, PauseTaskRequest.fromPartial({ containerId: this.id }));
  }

  /** Thaw them. */
  async unpause(): Promise<void> {
    await this.client.unary(this.tasks, this.tasks.resume, ResumeTaskRequest.fromPartial({ containerId: this.id }));
  }

  /** CPU, memory and pids usage. */
  stats(): Promise<StatsResponse> {
    return this.client.unary(this.tasks, this.tasks.stats, StatsRequest.fromPartial({ containerId: this.id }));
  }

  /** The container's processes. */
  async top(): Promise<ProcessInfo[]> {
    const r = await this.client.unary(
      this.tasks,
      this.tasks.listPids,
      ListPidsRequest.fromPartial({ containerId: this.id }),
    );
    return r.processes;
  }

  /** Changes in the writable layer: {kind: "A" | "C" | "D", path}. */
  async diff(): Promise<Change[]> {
    const api = this.client.api.containers;
    const r = await this.client.unary(api, api.diff, DiffRequest.fromPartial({ id: this.id }));
    return r.changes;
  }

  /** Store the writable layer as a new image named `reference`; returns it. */
  async commit(
    reference: string,
    options: { message?: string; author?: string; pause?: boolean } = {},
  ): Promise<Image> {
    const api = this.client.api.containers;
    const r = await this.client.unary(
      api,
      api.commit,
      CommitRequest.fromPartial({
        id: this.id,
        reference,
        message: options.message ?? "",
        author: options.author ?? "",
        noPause: options.pause === false,
      }),
    );
    return this.client.images.get(r.name || r.configDigest);
  }

  /**
   * A file or directory tree of the container (running or not) as an uncompressed tar
   * stream: what is at `path`, and the archive as an async iterator of chunks whose top
   * entry is the path's last component (docker-py's get_archive).
   */
  async getArchive(
    path: string,
    options: { followLink?: boolean } = {},
  ): Promise<{ stat: PathStat; chunks: AsyncIterableIterator<Buffer> }> {
    const api = this.client.api.containers;
    const followLink = options.followLink ?? false;
    const r = await this.client.unary(api, api.statPath, StatPathRequest.fromPartial({ id: this.id, path, followLink }));
    const call = api.copyFrom(
      CopyFromRequest.fromPartial({ id: this.id, path, followLink }),
      this.client.metadata.clone(),
      this.client.callOptions(null),
    );
    const responses = new ResponseStream<CopyFromResponse>(call);
    async function* chunks(): AsyncIterableIterator<Buffer> {
      try {
        for await (const m of responses) {
          yield Buffer.from(m.data);
        }
      } finally {
        responses.close();
      }
    }
    if (!r.stat) {
      responses.close();
      throw new Error("the agent answered without a stat");
    }
    return { stat: r.stat, chunks: chunks() };
  }

  /**
   * Extract a tar archive into the directory `path` of the container (running or not).
   * The whole archive is received and checked before anything is written; entries are
   * owned by the container's root unless `keepOwners` (docker-py's put_archive).
   */
  async putArchive(path: string, data: Uint8Array, options: { keepOwners?: boolean; timeout?: number } = {}): Promise<void> {
    const api = this.client.api.containers;
    await new Promise<void>((resolve, reject) => {
      const call = api.copyTo(this.client.metadata.clone(), this.client.callOptions(options.timeout ?? 600), (err) =>
        err ? reject(toBerthError(err)) : resolve(),
      );
      const opts = CopyToOptions.fromPartial({ id: this.id, path, keepOwners: options.keepOwners ?? false });
      call.write(CopyToRequest.fromPartial({ options: opts }));
      for (let i = 0; i < data.length; i += ARCHIVE_CHUNK) {
        call.write(CopyToRequest.fromPartial({ chunk: Buffer.from(data.subarray(i, i + ARCHIVE_CHUNK)) }));
      }
      call.end();
    });
  }

  /** Delete the container; `force` kills a running one first. */
  async remove(options: { force?: boolean } = {}): Promise<void> {
    const api = this.client.api.containers;
    await this.client.unary(
      api,
      api.delete,
      DeleteContainerRequest.fromPartial({ id: this.id, force: options.force ?? false }),
    );
  }

  toString(): string {
    return `<Container ${this.shortId} ${this.name}>`;
  }
}

/** `client.containers`. */
export class ContainerCollection {
  constructor(private readonly client: Client) {}

  private wrap(m: ContainerMessage | undefined): Container {
    if (!m) {
      throw new Error("the agent sent no container");
    }
    return new Container(this.client, m);
  }

  /** Create a container (not started). `command` replaces the image's Cmd (a string is split like a shell would). */
  async create(image: string, command?: string | string[] | null, options: CreateOptions = {}): Promise<Container> {
    const net = options.network ?? "";
    const config = ContainerConfig.fromPartial({
      command: command == null ? [] : toArgs(command),
      commandSet: command != null,
      entrypoint: options.entrypoint === undefined ? [] : toArgs(options.entrypoint),
      entrypointSet: options.entrypoint !== undefined,
      env: toEnv(options.env),
      workdir: options.workingDir ?? "",
      user: options.user ?? "",
      hostname: options.hostname ?? "",
      // A mode goes as it is; a network's name joins that network.
      network: isNetworkMode(net) ? net : "",
      networks: isNetworkMode(net) ? [] : [NetworkEndpoint.fromPartial({ network: net })],
      tty: options.tty ?? false,
      readOnly: options.readOnly ?? false,
      privileged: options.privileged ?? false,
      autoRemove: options.autoRemove ?? false,
      init: options.init ?? false,
      stopSignal: options.stopSignal ?? "",
      stopTimeout: options.stopTimeout,
      restartPolicy: options.restartPolicy && { name: options.restartPolicy.name, maxRetries: options.restartPolicy.maxRetries ?? 0 },
    });
    const api = this.client.api.containers;
    const r = await this.client.unary(
      api,
      api.create,
      CreateContainerRequest.fromPartial({
        image,
        name: options.name ?? "",
        config,
        labels: options.labels ?? {},
        runtime: options.runtime ?? "",
      }),
    );
    return this.wrap(r.container);
  }

  /**
   * Create and start a container, as `docker run`.
   *
   * Without `detach`: wait for it to exit and resolve to its output (stdout,
   * and stderr with `stderr: true`); a non-zero exit rejects with
   * ContainerError. With `detach`: resolve to the running Container.
   */
  run(image: string, command: string | string[] | null | undefined, options: RunOptions & { detach: true }): Promise<Container>;
  run(image: string, command?: string | string[] | null, options?: RunOptions & { detach?: false }): Promise<Buffer>;
  run(image: string, command?: string | string[] | null, options?: RunOptions): Promise<Buffer | Container>;
  async run(image: string, command?: string | string[] | null, options: RunOptions = {}): Promise<Buffer | Container> {
    const { detach, remove, stdout, stderr, ...create } = options;
    const tasks = this.client.api.tasks;
    if (detach) {
      const c = await this.create(image, command, { ...create, autoRemove: create.autoRemove || remove });
      try {
        await c.start();
      } catch (e) {
        await c.remove({ force: true }).catch(() => {});
        throw e;
      }
      return c.reload().catch((e) => {
        // An auto-removed container may be gone already.
        if (e instanceof NotFound) {
          return c;
        }
        throw e;
      });
    }
    const c = await this.create(image, command, create);
    let result: Attached;
    try {
      await this.client.unary(tasks, tasks.create, CreateTaskRequest.fromPartial({ containerId: c.id }));
      result = await attachAndStart(this.client, c.id, "");
    } finally {
      if (remove) {
        await c.remove({ force: true }).catch((e) => {
          if (!(e instanceof NotFound)) {
            throw e;
          }
        });
      }
    }
    const output = pick(result.chunks, stdout ?? true, stderr ?? false);
    if (result.exitCode !== 0) {
      const cmd = command == null ? undefined : toArgs(command);
      throw new ContainerError(
        { id: c.id, name: c.name },
        result.exitCode,
        cmd,
        image,
        output,
        pick(result.chunks, false, true),
      );
    }
    return output;
  }

  /** A container by name, full id or unique id prefix. */
  async get(id: string): Promise<Container> {
    const api = this.client.api.containers;
    const r = await this.client.unary(api, api.get, GetContainerRequest.fromPartial({ id }));
    return this.wrap(r.container);
  }

  /** Containers: running (and paused) ones, or all with `all`; `filters` must all match. */
  async list(options: ListOptions = {}): Promise<Container[]> {
    const api = this.client.api.containers;
    const r = await this.client.unary(
      api,
      api.list,
      ListContainersRequest.fromPartial({ filters: toFilters(options.filters) }),
    );
    const live = (m: ContainerMessage) => ["running", "paused"].includes(m.status?.state ?? "");
    return r.containers.filter((m) => options.all || live(m)).map((m) => this.wrap(m));
  }
}

/** A network mode ("", "none", "host", "container:NAME") rather than a network's name. */
function isNetworkMode(n: string): boolean {
  return n === "" || n === "none" || n === "host" || n.startsWith("container:");
}
