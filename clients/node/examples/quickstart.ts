// Load an image archive, run a command in a container from it, print what
// it wrote and how it exited.
//
//   node dist/examples/quickstart.js ARCHIVE
//
// The agent is the one at BERTH_ADDRESS (default /run/berth/berthd.sock).
import { connect } from "../src";

async function main(): Promise<number> {
  const archive = process.argv[2];
  if (!archive || process.argv.length > 3) {
    console.error("usage: node dist/examples/quickstart.js ARCHIVE (an OCI or docker archive)");
    return 2;
  }
  const client = connect();
  try {
    const images = await client.images.load(archive);
    if (images.length === 0) {
      console.error(`${archive} holds no image`);
      return 1;
    }
    const image = images[0];
    console.log(`loaded ${image.name} (${image.id.slice(0, 19)})`);

    const container = await client.containers.run(image.name || image.id, ["echo", "hello from typescript"], {
      detach: true,
    });
    const { exitCode } = await container.wait();
    process.stdout.write(await container.logs());
    console.log(`exit code: ${exitCode}`);
    await container.remove();
    return 0;
  } finally {
    client.close();
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`quickstart: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
