import type { Client } from "./client";
import {
  CreateVolumeRequest,
  GetVolumeRequest,
  ListVolumesRequest,
  PruneVolumesRequest,
  RemoveVolumeRequest,
  type Volume as VolumeMessage,
} from "./gen/berth/v1/volumes";
import { toFilters } from "./events";

/** A named volume: a directory under the agent's root that outlives containers. */
export class Volume {
  constructor(
    private readonly client: Client,
    /** The `berth.v1.Volume` message the agent sent. */
    public attrs: VolumeMessage,
  ) {}

  get name(): string {
    return this.attrs.name;
  }

  /** The directory containers mount, on the agent's machine. */
  get mountpoint(): string {
    return this.attrs.mountpoint;
  }

  get labels(): { [key: string]: string } {
    return this.attrs.labels;
  }

  /** Made for a container (an image's VOLUME), not by a user. */
  get anonymous(): boolean {
    return this.attrs.anonymous;
  }

  /** Names of the containers that mount it, running or not. */
  get containers(): string[] {
    return this.attrs.containers;
  }

  /** Read it again (with its size). */
  async reload(): Promise<Volume> {
    this.attrs = (await this.client.volumes.get(this.name)).attrs;
    return this;
  }

  /** Remove it and its files (FailedPrecondition while a container mounts it). */
  remove(): Promise<void> {
    return this.client.volumes.remove(this.name);
  }
}

/** `client.volumes`: create, get, list, remove, prune. */
export class VolumeCollection {
  constructor(private readonly client: Client) {}

  /** Make a volume (no name: a generated one). */
  async create(name = "", labels: { [key: string]: string } = {}): Promise<Volume> {
    const api = this.client.api.volumes;
    const r = await this.client.unary(api, api.create, CreateVolumeRequest.fromPartial({ name, labels }));
    return new Volume(this.client, r.volume!);
  }

  /** One volume, with its size (NotFound otherwise). */
  async get(name: string): Promise<Volume> {
    const api = this.client.api.volumes;
    const r = await this.client.unary(api, api.get, GetVolumeRequest.fromPartial({ name }));
    return new Volume(this.client, r.volume!);
  }

  /** The volumes of the namespace, or those matching every filter ("name~=TEXT", "label.KEY==VALUE", "dangling==true"). */
  async list(filters?: string | string[]): Promise<Volume[]> {
    const api = this.client.api.volumes;
    const r = await this.client.unary(api, api.list, ListVolumesRequest.fromPartial({ filters: toFilters(filters) }));
    return r.volumes.map((v) => new Volume(this.client, v));
  }

  async remove(name: string): Promise<void> {
    const api = this.client.api.volumes;
    await this.client.unary(api, api.remove, RemoveVolumeRequest.fromPartial({ name }));
  }

  /** Remove the volumes no container mounts (anonymous ones; `all`: named ones too). */
  async prune(all = false): Promise<{ volumesDeleted: string[]; spaceReclaimed: number }> {
    const api = this.client.api.volumes;
    const r = await this.client.unary(api, api.prune, PruneVolumesRequest.fromPartial({ all }));
    return { volumesDeleted: r.removed, spaceReclaimed: Number(r.reclaimedBytes) };
  }
}
