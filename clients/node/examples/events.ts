// Follow the agent's events while a container runs and exits: print each
// event of that container ("topic id"), stop once it exited and was deleted.
//
//   node dist/examples/events.js [IMAGE | ARCHIVE]
//
// IMAGE defaults to docker.io/library/busybox:latest (it needs sh and
// sleep); an archive path is loaded first and its first image is used.
import * as fs from "node:fs";
import { connect, type Client } from "../src";

async function imageName(client: Client, arg: string | undefined): Promise<string> {
  if (arg && fs.existsSync(arg) && fs.statSync(arg).isFile()) {
    const [image] = await client.images.load(arg);
    if (!image) {
      throw new Error(`${arg} holds no image`);
    }
    return image.name || image.id;
  }
  return arg ?? "docker.io/library/busybox:latest";
}

async function main(): Promise<number> {
  const client = connect();
  try {
    const image = await imageName(client, process.argv[2]);
    // Subscribe first, and wait until the agent has the subscription: every
    // event of the container comes after that.
    const events = client.events();
    await events.ready;
    // Stop waiting after a minute whatever happens.
    const timer = setTimeout(() => events.close(), 60_000);

    const container = await client.containers.run(image, ["sh", "-c", "echo working; sleep 1"], {
      detach: true,
      network: "none",
    });
    let exited = false;
    let deleted = false;
    for await (const e of events) {
      if (e.id !== container.id) {
        continue;
      }
      console.log(`${e.topic} ${e.id}`);
      if (e.topic === "/tasks/exit") {
        exited = true;
        // Removing the container deletes its task, then the container.
        await container.remove();
      } else if (e.topic === "/containers/delete") {
        deleted = true;
        break;
      }
    }
    clearTimeout(timer);
    events.close();
    if (!exited || !deleted) {
      console.error("events: the container's exit and delete were not seen within a minute");
      await container.remove({ force: true }).catch(() => {});
      return 1;
    }
    return 0;
  } finally {
    client.close();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`events: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
