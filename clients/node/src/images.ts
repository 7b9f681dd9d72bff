import * as fs from "node:fs";
import { once } from "node:events";
import type { Client } from "./client";
import {
  DeleteImageRequest,
  ExportImagesRequest,
  GetImageRequest,
  type Image as ImageMessage,
  ImportOptions,
  type ImportProgress,
  ImportRequest,
  type ImportResponse,
  InspectImageRequest,
  type InspectImageResponse,
  ListImagesRequest,
  TagImageRequest,
} from "./gen/berth/v1/images";
import { PullRequest, PushRequest, type TransferProgress } from "./gen/berth/v1/registry";
import { toFilters } from "./events";
import { ResponseStream } from "./stream";

/** Bytes of archive per Import message. */
export const CHUNK_SIZE = 1024 * 1024;

/** Registry credentials. */
export interface Auth {
  username: string;
  password: string;
}

export interface LoadOptions {
  /** Name for the (first) image of the archive. */
  name?: string;
  /** Platform to unpack from an index ("linux/amd64" if empty). */
  platform?: string;
  /** Labels set on the imported images. */
  labels?: { [key: string]: string };
  /** Called with each progress message (blob stored, layer unpacked, image created). */
  onProgress?: (p: ImportProgress) => void;
  /** Deadline in seconds; default none (an archive takes as long as it takes). */
  timeout?: number | null;
}

export interface PullOptions {
  /** "os/arch[/variant]"; default: this machine's. */
  platform?: string;
  /** Plain HTTP instead of TLS. */
  plainHttp?: boolean;
  auth?: Auth;
  onProgress?: (p: TransferProgress) => void;
  /** Deadline in seconds; default none. */
  timeout?: number | null;
}

export interface PushOptions {
  plainHttp?: boolean;
  auth?: Auth;
  onProgress?: (p: TransferProgress) => void;
  /** Deadline in seconds; default none. */
  timeout?: number | null;
}

export interface ExportOptions {
  /** Platform for docker's manifest.json of an image that is an index. */
  platform?: string;
  /** Deadline in seconds; default none. */
  timeout?: number | null;
}

/** An image: a name pointing at a manifest or an index. */
export class Image {
  constructor(
    private readonly client: Client,
    /** The `berth.v1.Image` message the agent sent. */
    public attrs: ImageMessage,
  ) {}

  /** The image id: the digest of its config. */
  get id(): string {
    return this.attrs.configDigest;
  }

  /** The full reference, e.g. "docker.io/library/busybox:latest". */
  get name(): string {
    return this.attrs.name;
  }

  /** Digest of the manifest or index the name points at. */
  get digest(): string {
    return this.attrs.target?.digest ?? "";
  }

  get labels(): { [key: string]: string } {
    return this.attrs.labels;
  }

  /** Bytes of content (manifest, config, compressed layers). */
  get size(): number {
    return this.attrs.size;
  }

  /** Ask the agent again. */
  async reload(): Promise<this> {
    const img = await this.client.images.get(this.name || this.id);
    this.attrs = img.attrs;
    return this;
  }

  /** Give this image another name. */
  tag(target: string, options: { force?: boolean } = {}): Promise<Image> {
    return this.client.images.tag(this.name || this.id, target, options);
  }

  /** Remove this name; returns the names removed. */
  remove(options: { force?: boolean } = {}): Promise<string[]> {
    return this.client.images.remove(this.name || this.id, options);
  }

  /** Manifest, config (and its JSON), layers, diff ids and chain ids. */
  inspect(options: { platform?: string } = {}): Promise<InspectImageResponse> {
    return this.client.unary(
      this.client.api.images,
      this.client.api.images.inspect,
      InspectImageRequest.fromPartial({ name: this.name || this.id, platform: options.platform ?? "" }),
    );
  }

  toString(): string {
    return `<Image ${this.name}>`;
  }
}

function credentials(auth?: Auth) {
  return auth ? { username: auth.username, password: auth.password } : undefined;
}

/** `client.images`. */
export class ImageCollection {
  constructor(private readonly client: Client) {}

  private wrap(m: ImageMessage | undefined): Image {
    if (!m) {
      throw new Error("the agent sent no image");
    }
    return new Image(this.client, m);
  }

  /** Images, filtered by "name==REF", "name~=SUB", "label.K==V", "digest==sha256:..." (all must match). */
  async list(filters?: string | string[]): Promise<Image[]> {
    const api = this.client.api.images;
    const r = await this.client.unary(api, api.list, ListImagesRequest.fromPartial({ filters: toFilters(filters) }));
    return r.images.map((m) => this.wrap(m));
  }

  /** An image by name, digest or unique id prefix. */
  async get(name: string): Promise<Image> {
    const api = this.client.api.images;
    const r = await this.client.unary(api, api.get, GetImageRequest.fromPartial({ name }));
    return this.wrap(r.image);
  }

  /**
   * Load an archive (OCI layout or `docker save`, compressed or not) from a
   * local file: it is streamed to the agent in 1 MiB messages. Returns the
   * images it held.
   */
  async load(path: string, options: LoadOptions = {}): Promise<Image[]> {
    const file = await fs.promises.open(path, "r");
    const api = this.client.api.images;
    const call = api.import(this.client.metadata.clone(), this.client.callOptions(options.timeout ?? null));
    const responses = new ResponseStream<ImportResponse>(call);
    let finished = false;
    // The call is over (the agent answered or failed): stop sending.
    const done = new Promise<void>((resolve) =>
      call.on("status", () => {
        finished = true;
        resolve();
      }),
    );
    const send = async (): Promise<void> => {
      try {
        call.write(
          ImportRequest.fromPartial({
            options: ImportOptions.fromPartial({
              name: options.name ?? "",
              platform: options.platform ?? "",
              labels: options.labels ?? {},
            }),
          }),
        );
        for (;;) {
          const buf = Buffer.allocUnsafe(CHUNK_SIZE);
          const { bytesRead } = await file.read(buf, 0, CHUNK_SIZE, null);
          if (bytesRead === 0 || finished) {
            break;
          }
          if (!call.write(ImportRequest.fromPartial({ chunk: buf.subarray(0, bytesRead) }))) {
            await Promise.race([once(call, "drain"), done]);
          }
        }
        call.end();
      } catch (e) {
        responses.close();
        throw e;
      }
    };
    const sending = send();
    sending.catch(() => {}); // awaited below
    try {
      let images: ImageMessage[] | undefined;
      for await (const r of responses) {
        if (r.progress && options.onProgress) {
          options.onProgress(r.progress);
        }
        if (r.result) {
          images = r.result.images;
        }
      }
      await sending;
      if (!images) {
        throw new Error("the import ended without a result");
      }
      return images.map((m) => this.wrap(m));
    } finally {
      responses.close();
      await sending.catch(() => {});
      await file.close();
    }
  }

  /** Pull an image from a registry (the agent does the transfer); returns it. */
  async pull(reference: string, options: PullOptions = {}): Promise<Image> {
    const api = this.client.api.registry;
    const call = api.pull(
      PullRequest.fromPartial({
        reference,
        platform: options.platform ?? "",
        plainHttp: options.plainHttp ?? false,
        credentials: credentials(options.auth),
      }),
      this.client.metadata.clone(),
      this.client.callOptions(options.timeout ?? null),
    );
    let image: ImageMessage | undefined;
    for await (const r of new ResponseStream(call)) {
      if (r.progress && options.onProgress) {
        options.onProgress(r.progress);
      }
      if (r.image) {
        image = r.image;
      }
    }
    if (!image) {
      throw new Error("the pull ended without an image");
    }
    return this.wrap(image);
  }

  /** Push a local image to the registry its name names; returns the digest the registry has under the tag. */
  async push(reference: string, options: PushOptions = {}): Promise<string> {
    const api = this.client.api.registry;
    const call = api.push(
      PushRequest.fromPartial({
        reference,
        plainHttp: options.plainHttp ?? false,
        credentials: credentials(options.auth),
      }),
      this.client.metadata.clone(),
      this.client.callOptions(options.timeout ?? null),
    );
    let digest: string | undefined;
    for await (const r of new ResponseStream(call)) {
      if (r.progress && options.onProgress) {
        options.onProgress(r.progress);
      }
      if (r.digest !== undefined) {
        digest = r.digest;
      }
    }
    if (digest === undefined) {
      throw new Error("the push ended without a digest");
    }
    return digest;
  }

  /** Name an existing image `target` too; returns the new image. */
  async tag(source: string, target: string, options: { force?: boolean } = {}): Promise<Image> {
    const api = this.client.api.images;
    const r = await this.client.unary(
      api,
      api.tag,
      TagImageRequest.fromPartial({ source, target, force: options.force ?? false }),
    );
    return this.wrap(r.image);
  }

  /** Remove an image name (an id or digest: every name, with `force` when there are several); returns the names removed. */
  async remove(name: string, options: { force?: boolean } = {}): Promise<string[]> {
    const api = this.client.api.images;
    const r = await this.client.unary(
      api,
      api.delete,
      DeleteImageRequest.fromPartial({ name, force: options.force ?? false }),
    );
    return r.deleted;
  }

  /**
   * Write images as one tar archive (OCI layout with docker's
   * manifest.json) to `path`. The file is removed if the export fails.
   */
  async export(names: string | string[], path: string, options: ExportOptions = {}): Promise<void> {
    const api = this.client.api.images;
    const call = api.export(
      ExportImagesRequest.fromPartial({ names: toFilters(names), platform: options.platform ?? "" }),
      this.client.metadata.clone(),
      this.client.callOptions(options.timeout ?? null),
    );
    const responses = new ResponseStream(call);
    const out = fs.createWriteStream(path);
    try {
      await once(out, "open");
      for await (const r of responses) {
        if (!out.write(r.data)) {
          await once(out, "drain");
        }
      }
      out.end();
      await once(out, "finish");
    } catch (e) {
      responses.close();
      out.destroy();
      await fs.promises.rm(path, { force: true });
      throw e;
    }
  }
}
