"""Volumes: `client.volumes` and the `Volume` objects it returns."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Dict, List, Optional

from .client import Filters, filter_list, to_datetime
from .v1 import volumes_pb2

if TYPE_CHECKING:
    from .client import Client


class Volume:
    """A named volume: a directory under the agent's root that outlives containers."""

    def __init__(self, client: "Client", attrs: volumes_pb2.Volume) -> None:
        self.client = client
        #: The `berth.v1.Volume` message the agent sent.
        self.attrs = attrs

    @property
    def name(self) -> str:
        return self.attrs.name

    @property
    def mountpoint(self) -> str:
        """The directory containers mount, on the agent's machine."""
        return self.attrs.mountpoint

    @property
    def labels(self) -> Dict[str, str]:
        return dict(self.attrs.labels)

    @property
    def anonymous(self) -> bool:
        """Made for a container (an image's VOLUME), not by a user."""
        return self.attrs.anonymous

    @property
    def containers(self) -> List[str]:
        """Names of the containers that mount it, running or not."""
        return list(self.attrs.containers)

    @property
    def created_at(self) -> Optional[datetime.datetime]:
        return to_datetime(self.attrs.created_at)

    def reload(self) -> "Volume":
        """Read it again (with its size)."""
        self.attrs = self.client.volumes.get(self.name).attrs
        return self

    def remove(self) -> None:
        """Remove it and its files (`FailedPrecondition` while a container mounts it)."""
        self.client.volumes.remove(self.name)

    def __repr__(self) -> str:
        return f"<berth.Volume {self.name}>"


class VolumeCollection:
    """`client.volumes`: create, get, list, remove, prune."""

    def __init__(self, client: "Client") -> None:
        self.client = client

    def create(self, name: str = "", labels: Optional[Dict[str, str]] = None) -> Volume:
        """Make a volume (an empty `name`: a generated one)."""
        req = volumes_pb2.CreateVolumeRequest(name=name, labels=labels or {})
        return Volume(self.client, self.client.call(self.client.api.volumes.Create, req).volume)

    def get(self, name: str) -> Volume:
        """One volume, with its size (`NotFound` otherwise)."""
        req = volumes_pb2.GetVolumeRequest(name=name)
        return Volume(self.client, self.client.call(self.client.api.volumes.Get, req).volume)

    def list(self, filters: Filters = None) -> List[Volume]:
        """The volumes of the namespace, or those matching every filter
        ("name~=TEXT", "label.KEY==VALUE", "dangling==true")."""
        req = volumes_pb2.ListVolumesRequest(filters=filter_list(filters))
        return [Volume(self.client, v) for v in self.client.call(self.client.api.volumes.List, req).volumes]

    def remove(self, name: str) -> None:
        self.client.call(self.client.api.volumes.Remove, volumes_pb2.RemoveVolumeRequest(name=name))

    def prune(self, all: bool = False) -> Dict[str, object]:
        """Remove the volumes no container mounts (anonymous ones; `all`:
        named ones too): {"VolumesDeleted": [...], "SpaceReclaimed": bytes}."""
        r = self.client.call(self.client.api.volumes.Prune, volumes_pb2.PruneVolumesRequest(all=all))
        return {"VolumesDeleted": list(r.removed), "SpaceReclaimed": r.reclaimed_bytes}
