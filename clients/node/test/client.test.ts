// Tests of the TypeScript client against a running berthd.
//
//   BERTH_ADDRESS=/path/berthd.sock BERTH_TEST_ARCHIVE=busybox.tar \
//   BERTH_TEST_REGISTRY=127.0.0.1:5000 npm test
//
// BERTH_ADDRESS and BERTH_TEST_ARCHIVE are required (every test fails
// without them); BERTH_TEST_REGISTRY (a plain-HTTP registry) only for the
// push/pull test, which is skipped without it.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, test } from "node:test";
import {
  AlreadyExists,
  BerthError,
  type BerthEvent,
  type Client,
  type Container,
  ContainerError,
  FailedPrecondition,
  InvalidArgument,
  connect,
  type Image,
  NotFound,
  pb,
  type RunOptions,
} from "../src";

const ARCHIVE_IMAGE = "docker.io/library/busybox:latest";
const SUFFIX = randomBytes(4).toString("hex");
/** Every container of this run carries this label, and a name starting with PREFIX. */
const LABEL = "berth-node-test";
const PREFIX = `bnt-${SUFFIX}`;
/** This run's own name for the image, so that nobody else's removal of busybox:latest matters. */
const IMAGE = `localhost/berth-node-test:${SUFFIX}`;

const T = 60_000;

let client: Client | undefined;
let imageLoad: Promise<Image[]> | undefined;
let seq = 0;

function requireEnv(name: string): string {
  const v = process.env[name];
  if (!v) {
    throw new Error(
      `${name} is not set: these tests need a running berthd (BERTH_ADDRESS=socket path) and ` +
        "an OCI archive of docker.io/library/busybox:latest (BERTH_TEST_ARCHIVE=path); " +
        "BERTH_TEST_REGISTRY=host:port (plain HTTP) enables the registry test",
    );
  }
  return v;
}

/** The client, once the environment is checked. */
function berth(): Client {
  requireEnv("BERTH_ADDRESS");
  requireEnv("BERTH_TEST_ARCHIVE");
  if (!client) {
    client = connect({ address: process.env.BERTH_ADDRESS, timeout: 60 });
  }
  return client;
}

/** Load the archive once and give its image this run's name; the loaded images. */
function loadImage(): Promise<Image[]> {
  const c = berth();
  if (!imageLoad) {
    imageLoad = (async () => {
      const images = await c.images.load(requireEnv("BERTH_TEST_ARCHIVE"));
      const busybox = images.find((i) => i.name === ARCHIVE_IMAGE);
      if (busybox) {
        await busybox.tag(IMAGE);
      }
      return images;
    })();
  }
  return imageLoad;
}

/** The client and this run's image name, ready to run containers. */
async function setup(): Promise<{ c: Client; image: string }> {
  const c = berth();
  await loadImage();
  return { c, image: IMAGE };
}

function name(what: string): string {
  seq += 1;
  return `${PREFIX}-${what}-${seq}`;
}

/** Options of a quick test container: no network, labelled, named for this run. */
function opts<O extends RunOptions>(what: string, extra?: O): RunOptions & O {
  return { name: name(what), network: "none", labels: { [LABEL]: SUFFIX }, ...(extra as O) };
}

async function removeQuietly(ct: Container | undefined): Promise<void> {
  if (ct) {
    await ct.remove({ force: true }).catch((e) => {
      if (!(e instanceof NotFound)) {
        throw e;
      }
    });
  }
}

async function assertGone(c: Client, id: string): Promise<void> {
  await assert.rejects(c.containers.get(id), NotFound);
}

after(async () => {
  if (!client) {
    return;
  }
  // Whatever a failed test left behind.
  const left = await client.containers.list({ all: true, filters: `label.${LABEL}==${SUFFIX}` }).catch(() => []);
  for (const ct of left) {
    await ct.remove({ force: true }).catch(() => {});
  }
  await client.images.remove(IMAGE).catch(() => {});
  client.close();
});

test("version and info", { timeout: T }, async () => {
  const c = berth();
  const v = await c.version();
  assert.ok(v.version.length > 0, "a version");
  assert.equal(v.apiVersion, "v1");
  const info = await c.info();
  assert.ok(info.pid > 0);
  assert.ok(["overlayfs", "native"].includes(info.snapshotter), info.snapshotter);
  assert.ok(info.runtimes.length > 0);
});

test("load the archive returns its image", { timeout: T }, async () => {
  const images = await loadImage();
  const busybox = images.find((i) => i.name === ARCHIVE_IMAGE);
  assert.ok(busybox, `${ARCHIVE_IMAGE} in ${images.map((i) => i.name).join(", ")}`);
  assert.match(busybox.id, /^sha256:[0-9a-f]{64}$/);
  assert.match(busybox.digest, /^sha256:[0-9a-f]{64}$/);
  assert.ok(busybox.size > 0);
  assert.equal(busybox.attrs.name, ARCHIVE_IMAGE);
  // Loading again works and names the same image.
  const again = await berth().images.load(requireEnv("BERTH_TEST_ARCHIVE"), { onProgress: () => {} });
  assert.deepEqual(
    again.map((i) => i.id),
    images.map((i) => i.id),
  );
});

test("images.list and images.get find the loaded image", { timeout: T }, async () => {
  const { c } = await setup();
  const all = await c.images.list();
  assert.ok(all.some((i) => i.name === IMAGE), "the run's image is listed");
  const only = await c.images.list(`name==${IMAGE}`);
  assert.deepEqual(
    only.map((i) => i.name),
    [IMAGE],
  );
  const img = await c.images.get(IMAGE);
  assert.equal(img.name, IMAGE);
  await img.reload();
  const inspected = await img.inspect();
  assert.equal(inspected.config?.digest, img.id);
  assert.ok(inspected.layers.length > 0);
  assert.ok(Buffer.isBuffer(inspected.configJson));
  assert.equal(typeof JSON.parse(inspected.configJson.toString()).config, "object");
});

test("run to completion returns the output", { timeout: T }, async () => {
  const { c, image } = await setup();
  const o = opts("run", { remove: true });
  const out = await c.containers.run(image, ["echo", "hello", "world"], o);
  assert.ok(Buffer.isBuffer(out));
  assert.equal(out.toString(), "hello world\n");
  await assertGone(c, o.name as string);

  // stdout only by default; stderr when asked; a string command is split like a shell.
  const both = opts("run-stderr", { remove: true });
  const quiet = await c.containers.run(image, "sh -c 'echo out; echo err >&2'", opts("run-quiet", { remove: true }));
  assert.equal(quiet.toString(), "out\n");
  const loud = await c.containers.run(image, "sh -c 'echo out; echo err >&2'", { ...both, stderr: true });
  assert.equal(loud.toString().split("\n").sort().join(" "), " err out");

  // env as an object, working dir, user.
  const env = await c.containers.run(image, ["sh", "-c", "echo $GREETING; pwd; id -u"], {
    ...opts("run-env", { remove: true }),
    env: { GREETING: "hi" },
    workingDir: "/tmp",
    user: "1000",
  });
  assert.equal(env.toString(), "hi\n/tmp\n1000\n");
});

test("a non-zero exit rejects with ContainerError", { timeout: T }, async () => {
  const { c, image } = await setup();
  const o = opts("fail", { remove: true });
  const err = await c.containers.run(image, ["sh", "-c", "echo partial; echo broken >&2; exit 3"], o).then(
    () => assert.fail("run resolved"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof ContainerError, String(err));
  assert.ok(err instanceof BerthError);
  assert.equal(err.exitStatus, 3);
  assert.equal(err.output.toString(), "partial\n");
  assert.equal(err.stderr.toString(), "broken\n");
  assert.deepEqual(err.command, ["sh", "-c", "echo partial; echo broken >&2; exit 3"]);
  assert.match(err.message, /exit status 3/);
  await assertGone(c, o.name as string);

  // Without remove the container stays, exited with that code.
  const kept = opts("fail-kept");
  await assert.rejects(c.containers.run(image, ["false"], kept), (e: unknown) => {
    return e instanceof ContainerError && e.exitStatus === 1;
  });
  const ct = await c.containers.get(kept.name as string);
  try {
    assert.equal(ct.status, "exited");
    assert.equal(ct.attrs.status?.exitCode, 1);
  } finally {
    await ct.remove();
  }
  await assertGone(c, ct.id);
});

test("detached run, wait and logs", { timeout: T }, async () => {
  const { c, image } = await setup();
  const ct = await c.containers.run(image, ["sh", "-c", "echo one; echo two >&2; sleep 1; echo three"], {
    ...opts("detach"),
    detach: true,
  });
  try {
    assert.match(ct.id, /^[0-9a-f]{64}$/);
    assert.equal(ct.shortId, ct.id.slice(0, 12));
    assert.equal(ct.status, "running");
    assert.equal(ct.labels[LABEL], SUFFIX);
    assert.equal(ct.image, IMAGE);
    const running = await c.containers.list({ filters: `label.${LABEL}==${SUFFIX}` });
    assert.ok(running.some((x) => x.id === ct.id), "listed while running");

    const w = await ct.wait({ timeout: 30 });
    assert.equal(w.exitCode, 0);
    assert.ok(w.exitedAt instanceof Date);
    await ct.reload();
    assert.equal(ct.status, "exited");
    // Not running any more: only with all.
    const live = await c.containers.list({ filters: `label.${LABEL}==${SUFFIX}` });
    assert.ok(!live.some((x) => x.id === ct.id), "not listed once exited");
    const all = await c.containers.list({ all: true, filters: `label.${LABEL}==${SUFFIX}` });
    assert.ok(all.some((x) => x.id === ct.id), "listed with all");

    const logs = (await ct.logs()).toString();
    assert.equal(logs.split("\n").sort().join(" "), " one three two");
    assert.equal((await ct.logs({ stderr: false })).toString(), "one\nthree\n");
    assert.equal((await ct.logs({ stdout: false })).toString(), "two\n");
    assert.equal((await ct.logs({ tail: 1, stderr: false })).toString(), "three\n");
  } finally {
    await removeQuietly(ct);
  }
  await assertGone(c, ct.id);
});

test("logs stream, following a running container", { timeout: T }, async () => {
  const { c, image } = await setup();
  const ct = await c.containers.run(image, ["sh", "-c", "for i in 1 2 3; do echo $i; sleep 1; done"], {
    ...opts("follow"),
    detach: true,
  });
  try {
    const chunks: string[] = [];
    for await (const chunk of ct.logs({ stream: true, follow: true })) {
      assert.ok(Buffer.isBuffer(chunk));
      chunks.push(chunk.toString());
    }
    // The stream ends when the container exits.
    assert.equal(chunks.join(""), "1\n2\n3\n");
    assert.equal((await ct.wait()).exitCode, 0);
    // Leaving the loop early closes the stream.
    for await (const chunk of ct.logs({ stream: true })) {
      assert.equal(chunk.toString(), "1\n");
      break;
    }
  } finally {
    await removeQuietly(ct);
  }
  await assertGone(c, ct.id);
});

test("execRun returns the output and the exit code", { timeout: T }, async () => {
  const { c, image } = await setup();
  const ct = await c.containers.run(image, ["sleep", "60"], { ...opts("exec"), detach: true });
  try {
    const ok = await ct.execRun(["echo", "inside"]);
    assert.deepEqual(ok, { exitCode: 0, output: Buffer.from("inside\n") });

    const bad = await ct.execRun("sh -c 'echo out; echo err >&2; exit 5'");
    assert.equal(bad.exitCode, 5);
    assert.equal(bad.output.toString().split("\n").sort().join(" "), " err out");
    const quiet = await ct.execRun("sh -c 'echo out; echo err >&2'", { stderr: false });
    assert.equal(quiet.output.toString(), "out\n");

    const env = await ct.execRun(["sh", "-c", "echo $X; pwd; id -u"], { env: ["X=y"], workdir: "/etc", user: "65534" });
    assert.equal(env.output.toString(), "y\n/etc\n65534\n");

    // Stop: sleep as pid 1 ignores SIGTERM, so it is killed after the timeout.
    const code = await ct.stop({ timeout: 1 });
    assert.equal(code, 137);
  } finally {
    await removeQuietly(ct);
  }
  await assertGone(c, ct.id);
});

test("init: a shell loop stops on the stop signal, with stopTimeout kept", { timeout: T }, async () => {
  const { c, image } = await setup();
  const ct = await c.containers.run(image, "sh -c 'while :; do sleep 1; done'", {
    ...opts("init"),
    detach: true,
    init: true,
    stopTimeout: 30,
  });
  try {
    assert.equal((await ct.reload()).attrs.config?.stopTimeout, 30);
    // Under berth-init the loop is not PID 1: SIGTERM ends it (143), long before 30 s.
    const started = Date.now();
    assert.equal(await ct.stop(), 143);
    assert.ok(Date.now() - started < 10_000, `stop took ${Date.now() - started} ms`);
  } finally {
    await removeQuietly(ct);
  }
  await assertGone(c, ct.id);
});

test("pause, top, stats, diff, kill, commit", { timeout: T }, async () => {
  const { c, image } = await setup();
  const ct = await c.containers.run(image, ["sh", "-c", "touch /made-here; sleep 60"], {
    ...opts("ops"),
    detach: true,
  });
  let committed: Image | undefined;
  try {
    const procs = await ct.top();
    assert.ok(procs.some((p) => p.command.includes("sleep")), JSON.stringify(procs));
    const st = await ct.stats();
    assert.ok(st.pidsCurrent >= 1);
    assert.ok(st.readAt instanceof Date);

    await ct.pause();
    assert.equal((await ct.reload()).status, "paused");
    assert.ok((await c.containers.list({ filters: `name==${ct.name}` })).length === 1, "paused is listed");
    await ct.unpause();
    assert.equal((await ct.reload()).status, "running");

    const changes = await ct.diff();
    assert.ok(changes.some((ch) => ch.kind === "A" && ch.path === "/made-here"), JSON.stringify(changes));

    committed = await ct.commit(`localhost/berth-node-test-commit:${SUFFIX}`);
    assert.equal(committed.name, `localhost/berth-node-test-commit:${SUFFIX}`);
    assert.match(committed.id, /^sha256:/);

    await ct.kill();
    const w = await ct.wait({ timeout: 30 });
    assert.equal(w.exitCode, 137);
  } finally {
    await removeQuietly(ct);
    if (committed) {
      await committed.remove();
    }
  }
  await assertGone(c, ct.id);
});

test("putArchive and getArchive, stopped and running", { timeout: T }, async () => {
  const { c, image } = await setup();
  const ct = await c.containers.create(image, ["cat", "/etc/greeting"], opts("cp"));
  try {
    // A one-file tar: a 512-byte header (ustar), the data padded to 512, two zero blocks.
    const body = Buffer.from("hello from node\n");
    const header = Buffer.alloc(512);
    header.write("greeting", 0);
    header.write("0000644\0", 100);
    header.write("0000000\0", 108);
    header.write("0000000\0", 116);
    header.write(body.length.toString(8).padStart(11, "0") + "\0", 124);
    header.write("00000000000\0", 136);
    header.write("        ", 148);
    header.write("0", 156);
    header.write("ustar\0", 257);
    header.write("00", 263);
    let sum = 0;
    for (const b of header) {
      sum += b;
    }
    header.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
    const data = Buffer.concat([header, body, Buffer.alloc(512 - body.length), Buffer.alloc(1024)]);
    await ct.putArchive("/etc", data);
    await ct.start();
    assert.equal((await ct.wait({ timeout: 30 })).exitCode, 0);
    assert.equal((await ct.logs()).toString(), "hello from node\n");
    const { stat, chunks } = await ct.getArchive("/etc/greeting");
    assert.equal(stat.name, "greeting");
    const parts: Buffer[] = [];
    for await (const chunk of chunks) {
      parts.push(chunk);
    }
    const tar = Buffer.concat(parts);
    assert.equal(tar.subarray(0, 8).toString(), "greeting");
    assert.ok(tar.includes(body), "the file's data is in the archive");
    await assert.rejects(ct.getArchive("/no/such/file"), NotFound);
    await assert.rejects(ct.putArchive("/etc", Buffer.alloc(700, 7)), InvalidArgument);
  } finally {
    await removeQuietly(ct);
  }
});

test("events: a container's /tasks/start and /tasks/exit", { timeout: T }, async () => {
  const { c, image } = await setup();
  const ct = await c.containers.create(image, ["sh", "-c", "exit 4"], opts("events"));
  const events = c.events(`id==${ct.id}`);
  const timer = setTimeout(() => events.close(), 30_000);
  const seen: BerthEvent[] = [];
  try {
    await events.ready;
    await ct.start();
    for await (const e of events) {
      seen.push(e);
      if (e.topic === "/tasks/exit") {
        break;
      }
    }
    const topics = seen.map((e) => e.topic);
    assert.ok(topics.includes("/tasks/start"), topics.join(" "));
    assert.ok(topics.includes("/tasks/exit"), topics.join(" "));
    assert.ok(topics.indexOf("/tasks/start") < topics.indexOf("/tasks/exit"));
    const exit = seen[seen.length - 1];
    assert.equal(exit.id, ct.id);
    assert.equal(exit.attributes.exit_code, "4");
    assert.equal(exit.namespace, c.namespace);
    assert.ok(exit.timestamp instanceof Date && !Number.isNaN(exit.timestamp.getTime()));
  } finally {
    clearTimeout(timer);
    events.close();
    await removeQuietly(ct);
  }
  await assertGone(c, ct.id);
});

test("a container on the default network", { timeout: T }, async () => {
  const { c, image } = await setup();
  const o: RunOptions = { name: name("net"), labels: { [LABEL]: SUFFIX }, remove: true };
  const out = (await c.containers.run(image, ["cat", "/proc/net/dev"], o)).toString();
  assert.match(out, /\blo:/);
  assert.match(out, /\beth0:/, "an interface besides lo");
  await assertGone(c, o.name as string);
});

test("tag, push, remove, pull back and run", { timeout: 120_000 }, async (t) => {
  const { c, image } = await setup();
  const registry = process.env.BERTH_TEST_REGISTRY;
  if (!registry) {
    t.skip("BERTH_TEST_REGISTRY is not set");
    return;
  }
  const ref = `${registry}/berth-node-test/busybox:${SUFFIX}`;
  const tagged = await c.images.tag(image, ref);
  try {
    assert.equal(tagged.name, ref);
    const local = await c.images.get(image);
    assert.equal(tagged.id, local.id);

    const steps: string[] = [];
    const digest = await c.images.push(ref, { plainHttp: true, onProgress: (p) => steps.push(p.status) });
    assert.match(digest, /^sha256:[0-9a-f]{64}$/);
    assert.ok(steps.length > 0, "push progress");

    assert.deepEqual(await tagged.remove(), [ref]);
    await assert.rejects(c.images.get(ref), NotFound);

    const pulled = await c.images.pull(ref, { plainHttp: true, onProgress: (p) => steps.push(p.status) });
    assert.equal(pulled.name, ref);
    assert.equal(pulled.digest, digest);
    assert.equal(pulled.id, local.id);

    const o = opts("pulled", { remove: true });
    const out = await c.containers.run(ref, ["echo", "pulled"], o);
    assert.equal(out.toString(), "pulled\n");
    await assertGone(c, o.name as string);
  } finally {
    await c.images.remove(ref).catch(() => {});
  }
});

test("export to a file and load it back", { timeout: T }, async () => {
  const { c, image } = await setup();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "berth-node-test-"));
  const file = path.join(dir, "image.tar");
  const renamed = `localhost/berth-node-test-export:${SUFFIX}`;
  try {
    await c.images.export(image, file);
    assert.ok(fs.statSync(file).size > 0);
    const loaded = await c.images.load(file, { name: renamed });
    assert.deepEqual(
      loaded.map((i) => i.name),
      [renamed],
    );
    assert.equal(loaded[0].id, (await c.images.get(image)).id);
    // An unknown name fails before the first byte: no file is left.
    const missing = path.join(dir, "missing.tar");
    await assert.rejects(c.images.export(`localhost/no-such-image-${SUFFIX}:x`, missing), NotFound);
    assert.ok(!fs.existsSync(missing));
  } finally {
    await c.images.remove(renamed).catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("errors in streams reject the iterator", { timeout: T }, async () => {
  const c = berth();
  // A subscription the agent refuses: next() rejects with the status's class.
  const events = c.events("not a filter");
  await assert.rejects(events.ready, InvalidArgument);
  await assert.rejects(events.next(), (e: unknown) => e instanceof InvalidArgument && e.code === 3);
  events.close();

  // An archive cut short: the agent reports progress, then fails the stream.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "berth-node-test-"));
  try {
    const whole = fs.readFileSync(requireEnv("BERTH_TEST_ARCHIVE"));
    const cut = path.join(dir, "cut.tar");
    fs.writeFileSync(cut, whole.subarray(0, Math.floor(whole.length * 0.6)));
    await assert.rejects(c.images.load(cut, { name: `localhost/berth-node-test-cut:${SUFFIX}` }), InvalidArgument);
    await assert.rejects(c.images.get(`localhost/berth-node-test-cut:${SUFFIX}`), NotFound);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  // A stream that ends in an error after its messages: logs of a container that is gone.
  await assert.rejects(
    (async () => {
      for await (const chunk of (await makeGone(c)).logs({ stream: true })) {
        void chunk;
      }
    })(),
    NotFound,
  );
});

/** A Container object whose container no longer exists. */
async function makeGone(c: Client): Promise<Container> {
  const { image } = await setup();
  const ct = await c.containers.create(image, ["true"], opts("gone"));
  await ct.remove();
  return ct;
}

test("an unknown container rejects with NotFound (code 5)", { timeout: T }, async () => {
  const c = berth();
  const err = await c.containers.get(`${PREFIX}-no-such-container`).then(
    () => assert.fail("get resolved"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof NotFound, String(err));
  assert.ok(err instanceof BerthError);
  assert.equal(err.code, 5);
  assert.equal(err.name, "NotFound");
  assert.ok(err.details.length > 0);
  await assert.rejects(c.images.get(`localhost/no-such-image-${SUFFIX}:x`), (e: unknown) => {
    return e instanceof NotFound && e.code === 5;
  });
});

test("a taken container name rejects with AlreadyExists (code 6)", { timeout: T }, async () => {
  const { c, image } = await setup();
  const o = opts("taken");
  const first = await c.containers.create(image, null, o);
  try {
    const err = await c.containers.create(image, null, o).then(
      () => assert.fail("the second create resolved"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof AlreadyExists, String(err));
    assert.equal(err.code, 6);
    assert.equal(first.status, "created");
  } finally {
    await first.remove();
  }
  await assertGone(c, first.id);
});

test("no container of this run is left", { timeout: T }, async () => {
  const c = berth();
  const left = await c.containers.list({ all: true, filters: `label.${LABEL}==${SUFFIX}` });
  assert.deepEqual(
    left.map((x) => x.name),
    [],
  );
  const named = await c.containers.list({ all: true, filters: `name~=${PREFIX}` });
  assert.deepEqual(
    named.map((x) => x.name),
    [],
  );
});

test("volumes are made, listed, refused while in use, and removed", { timeout: T }, async () => {
  const { c, image } = await setup();
  const vol = await c.volumes.create(`${PREFIX}-vol`, { team: "node" });
  assert.equal(vol.anonymous, false);
  assert.deepEqual(vol.labels, { team: "node" });
  assert.ok((await c.volumes.list("label.team==node")).some((v) => v.name === vol.name));
  // A container that mounts it (created, not started) keeps it.
  const api = c.api.containers;
  const req = pb.CreateContainerRequest.fromPartial({
    image,
    name: `${PREFIX}-vol-user`,
    config: { command: ["true"], commandSet: true, network: "none", mounts: [{ type: "volume", source: vol.name, destination: "/data" }] },
    labels: { [LABEL]: SUFFIX },
  });
  const user = await c.unary(api, api.create, req);
  await assert.rejects(vol.remove(), (e: unknown) => e instanceof FailedPrecondition);
  assert.deepEqual((await vol.reload()).containers, [`${PREFIX}-vol-user`]);
  await c.unary(api, api.delete, pb.DeleteContainerRequest.fromPartial({ id: user.container!.id }));
  await vol.remove();
  await assert.rejects(c.volumes.get(vol.name), (e: unknown) => e instanceof NotFound);
});
