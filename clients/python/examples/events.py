"""Follow the agent's events while a container runs and exits.

    python examples/events.py IMAGE.tar

Prints each event of the container (created, started, exited, deleted),
then exits.
"""

import sys
import threading

import berth


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: events.py ARCHIVE (an OCI or docker image archive)", file=sys.stderr)
        return 2
    with berth.connect() as client:
        image = client.images.load(sys.argv[1])[0]
        container = client.containers.create(image.name, ["sh", "-c", "echo working; sleep 0.5"])
        with client.events([f"id=={container.id}"]) as events:
            # Start, wait and remove on another thread while this one follows.
            def drive() -> None:
                container.start()
                container.wait(timeout=60)
                container.remove()

            threading.Thread(target=drive, daemon=True).start()
            for event in events:
                attrs = " ".join(f"{k}={v}" for k, v in sorted(event.attributes.items()))
                print(f"{event.timestamp:%H:%M:%S.%f} {event.topic} {container.name} {attrs}".rstrip())
                if event.topic == "/containers/delete":
                    break
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except berth.BerthError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
