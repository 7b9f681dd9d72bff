"""Import an image archive, run `echo hello from python` in a container from
it, print the output and the exit code, remove the container.

    python examples/quickstart.py IMAGE.tar

The agent is the one at $BERTH_ADDRESS (else /run/berth/berthd.sock).
"""

import sys

import berth


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: quickstart.py ARCHIVE (an OCI or docker image archive)", file=sys.stderr)
        return 2
    with berth.connect() as client:
        images = client.images.load(sys.argv[1])
        print(f"loaded {images[0].name} ({images[0].short_id})")
        container = client.containers.run(images[0].name, ["echo", "hello from python"], detach=True)
        result = container.wait(timeout=60)
        print(container.logs().decode(), end="")
        print(f"exit code: {result.exit_code}")
        container.remove()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except berth.BerthError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
