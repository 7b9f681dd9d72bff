#!/usr/bin/env python3
"""Write an OCI image archive for the benchmarks: a busybox layer plus N layers
of random data, gzip-compressed (level 1), named by --name.

usage: mkimage.py OUT.tar [--layers 5] [--layer-mb 40] [--name bench/random:latest]
"""
import argparse, gzip, hashlib, io, json, os, tarfile, time


def tar_bytes(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data, mode in files:
            if data is None:  # directory
                ti = tarfile.TarInfo(name); ti.type = tarfile.DIRTYPE; ti.mode = mode
                t.addfile(ti)
            elif isinstance(data, str):  # symlink to `data`
                ti = tarfile.TarInfo(name); ti.type = tarfile.SYMTYPE; ti.linkname = data; ti.mode = 0o777
                t.addfile(ti)
            else:
                ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = mode; ti.mtime = 1700000000
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--layer-mb", type=int, default=40)
    ap.add_argument("--name", default="docker.io/bench/random:latest")
    a = ap.parse_args()
    busybox = open("/bin/busybox", "rb").read()
    applets = [(f"bin/{a}", "busybox", 0o777) for a in ("sh", "true", "sleep", "echo", "cat")]
    layers = [tar_bytes([("bin", None, 0o755), ("bin/busybox", busybox, 0o755)] + applets + [("tmp", None, 0o1777)])]
    for i in range(a.layers):
        layers.append(tar_bytes([(f"data{i}", None, 0o755), (f"data{i}/random.bin", os.urandom(a.layer_mb << 20), 0o644)]))
    blobs = {}
    def put(b):
        d = "sha256:" + hashlib.sha256(b).hexdigest(); blobs[d] = b; return d
    diff_ids, descs = [], []
    for l in layers:
        diff_ids.append("sha256:" + hashlib.sha256(l).hexdigest())
        gz = gzip.compress(l, compresslevel=1, mtime=0)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(gz), "size": len(gz)})
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                         "config": {"Cmd": ["/bin/busybox", "true"]},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    cd = put(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
                           "layers": descs}).encode()
    md = put(manifest)
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": len(manifest),
                                       "annotations": {"io.containerd.image.name": a.name,
                                                       "org.opencontainers.image.ref.name": a.name.rsplit(":", 1)[-1]},
                                       "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    with tarfile.open(a.out, "w", format=tarfile.PAX_FORMAT) as t:
        def add(name, data):
            ti = tarfile.TarInfo(name); ti.size = len(data); ti.mtime = int(time.time()); t.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        for d, b in blobs.items():
            add("blobs/sha256/" + d[7:], b)
        add("index.json", index)


if __name__ == "__main__":
    main()
