"""Images: `client.images` and the `Image` objects it returns."""

from __future__ import annotations

import datetime
import os
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .client import Filters, filter_list, to_datetime
from .v1 import images_pb2, registry_pb2

if TYPE_CHECKING:
    from .client import Client

_CHUNK = 1 << 20

Auth = Union[None, Dict[str, str], Tuple[str, str]]
Progress = Optional[Callable[[registry_pb2.TransferProgress], None]]


class Image:
    """An image record: a name for a manifest (or index) in the store."""

    def __init__(self, client: "Client", attrs: images_pb2.Image) -> None:
        self.client = client
        #: The `berth.v1.Image` message the agent sent.
        self.attrs = attrs

    @property
    def name(self) -> str:
        """The full name, e.g. "docker.io/library/busybox:latest"."""
        return self.attrs.name

    @property
    def id(self) -> str:
        """The image id: the digest of its config."""
        return self.attrs.config_digest

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[-1][:12]

    @property
    def digest(self) -> str:
        """The digest of the manifest or index the name points at."""
        return self.attrs.target.digest

    @property
    def labels(self) -> Dict[str, str]:
        return dict(self.attrs.labels)

    @property
    def size(self) -> int:
        """Bytes of content: manifest, config and compressed layers."""
        return self.attrs.size

    @property
    def created_at(self) -> Optional[datetime.datetime]:
        return to_datetime(self.attrs.created_at)

    def reload(self) -> "Image":
        """Ask the agent again for this image's record."""
        self.attrs = self.client.images.get(self.name).attrs
        return self

    def inspect(self, platform: str = "") -> images_pb2.InspectImageResponse:
        """Manifest, config (JSON), layers, diff ids and chain ids."""
        return self.client.images.inspect(self.name, platform)

    def tag(self, target: str, force: bool = True) -> "Image":
        """Give the image another name; returns the new record."""
        return self.client.images.tag(self.name, target, force)

    def remove(self, force: bool = False) -> List[str]:
        """Remove this name; returns the names removed."""
        return self.client.images.remove(self.name, force)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and other.name == self.name and other.id == self.id

    def __hash__(self) -> int:
        return hash((self.name, self.id))

    def __repr__(self) -> str:
        return f"<Image {self.name} {self.short_id}>"


class ImageCollection:
    """`client.images`: list, get, load, pull, push, tag, remove, export."""

    def __init__(self, client: "Client") -> None:
        self.client = client

    def _wrap(self, m: images_pb2.Image) -> Image:
        return Image(self.client, m)

    def list(self, filters: Filters = None) -> List[Image]:
        """Every image of the namespace, or those matching every filter
        ("name==REF", "name~=TEXT", "label.KEY==VALUE", "label.KEY",
        "digest==sha256:..."; a dict {"name": "x"} means "name==x")."""
        req = images_pb2.ListImagesRequest(filters=filter_list(filters))
        return [self._wrap(m) for m in self.client.call(self.client.api.images.List, req).images]

    def get(self, name: str) -> Image:
        """One image by name, digest or unique id prefix (`NotFound` otherwise)."""
        return self._wrap(self.client.call(self.client.api.images.Get, images_pb2.GetImageRequest(name=name)).image)

    def inspect(self, name: str, platform: str = "") -> images_pb2.InspectImageResponse:
        req = images_pb2.InspectImageRequest(name=name, platform=platform)
        return self.client.call(self.client.api.images.Inspect, req)

    def load(
        self,
        data: Union[str, "os.PathLike[str]", bytes, IO[bytes]],
        name: str = "",
        labels: Optional[Dict[str, str]] = None,
        progress: Optional[Callable[[images_pb2.ImportProgress], None]] = None,
    ) -> List[Image]:
        """Import an archive (an OCI image layout or `docker save`, plain or
        compressed): a path, the archive's bytes, or a binary file object.
        The bytes are streamed to the agent; returns the images it named."""
        opts = images_pb2.ImportOptions(name=name, labels=labels or {})

        def requests(f: IO[bytes]) -> Iterator[images_pb2.ImportRequest]:
            yield images_pb2.ImportRequest(options=opts)
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    return
                yield images_pb2.ImportRequest(chunk=chunk)

        def run(f: IO[bytes]) -> List[Image]:
            images: List[Image] = []
            for resp in self.client.stream(self.client.api.images.Import, requests(f)):
                if resp.HasField("progress"):
                    if progress:
                        progress(resp.progress)
                elif resp.HasField("result"):
                    images = [self._wrap(m) for m in resp.result.images]
            return images

        if isinstance(data, (bytes, bytearray)):
            import io

            return run(io.BytesIO(data))
        if isinstance(data, (str, os.PathLike)):
            with open(data, "rb") as f:
                return run(f)
        return run(data)

    def pull(
        self,
        reference: str,
        platform: str = "",
        all_platforms: bool = False,
        plain_http: bool = False,
        auth: Auth = None,
        progress: Progress = None,
    ) -> Image:
        """Pull an image from its registry; the agent fetches, verifies and
        unpacks it. `plain_http` for a registry without TLS (the default for
        localhost), `auth` {"username", "password"}, `progress` a callable
        given each `TransferProgress`."""
        req = registry_pb2.PullRequest(
            reference=reference,
            platform=platform,
            all_platforms=all_platforms,
            plain_http=plain_http,
            credentials=_credentials(auth),
        )
        image = None
        for resp in self.client.stream(self.client.api.registry.Pull, req):
            if resp.HasField("progress"):
                if progress:
                    progress(resp.progress)
            elif resp.HasField("image"):
                image = self._wrap(resp.image)
        if image is None:
            from .errors import BerthError

            raise BerthError(f"the pull of {reference} ended without an image")
        return image

    def push(self, reference: str, plain_http: bool = False, auth: Auth = None, progress: Progress = None) -> str:
        """Push an image to the registry its name names; returns the digest
        the registry now has under the tag."""
        req = registry_pb2.PushRequest(reference=reference, plain_http=plain_http, credentials=_credentials(auth))
        digest = ""
        for resp in self.client.stream(self.client.api.registry.Push, req):
            if resp.HasField("progress"):
                if progress:
                    progress(resp.progress)
            else:
                digest = resp.digest
        return digest

    def tag(self, source: str, target: str, force: bool = True) -> Image:
        """Name an image `target` (moving the name from another image, as
        docker does, unless `force=False`)."""
        req = images_pb2.TagImageRequest(source=source, target=target, force=force)
        return self._wrap(self.client.call(self.client.api.images.Tag, req).image)

    def remove(self, image: str, force: bool = False) -> List[str]:
        """Remove an image name (an id or digest: every name of that image,
        which needs `force` when there are several). Returns the names removed."""
        req = images_pb2.DeleteImageRequest(name=image, force=force)
        return list(self.client.call(self.client.api.images.Delete, req).deleted)

    def export(self, names: Union[str, Sequence[str]], path: Union[str, "os.PathLike[str]"]) -> int:
        """Write images to an OCI archive (which docker load reads too) at
        `path`; returns its size. Nothing is left at `path` when it fails."""
        names = [names] if isinstance(names, str) else list(names)
        tmp = f"{os.fspath(path)}.partial"
        size = 0
        try:
            with open(tmp, "wb") as f:
                req = images_pb2.ExportImagesRequest(names=names)
                for resp in self.client.stream(self.client.api.images.Export, req):
                    f.write(resp.data)
                    size += len(resp.data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return size


def _credentials(auth: Auth) -> Optional[registry_pb2.RegistryCredentials]:
    if auth is None:
        return None
    if isinstance(auth, tuple):
        return registry_pb2.RegistryCredentials(username=auth[0], password=auth[1])
    return registry_pb2.RegistryCredentials(username=auth.get("username", ""), password=auth.get("password", ""))
