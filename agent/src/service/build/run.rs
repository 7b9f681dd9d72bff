//! RUN steps of a build: a container on the stage's state, through the
//! same records, shims and runtime as `berthctl run`, its output relayed.

use std::collections::BTreeMap;

use super::{blocking, conclude, store_state, BuildEvent, Next, Run, State, LAST_LINES};
use crate::build::LABEL_BUILD;
use crate::container::config::{ContainerConfig, NetworkMode};
use crate::container::CreateRequest;
use crate::image::oci::Platform;
use crate::metadata::{DescriptorRecord, ImageRecord};
use crate::runtime::{AttachOutput, Proc};
use crate::service::Error;

impl Run {
    /// A RUN step: a container on the stage, its output streamed; the
    /// stage's next state, with the container's changes as its layer.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run(
        &self,
        sname: &str,
        index: u32,
        state: State,
        argv: Vec<String>,
        args: Vec<String>,
        network: NetworkMode,
        next: Next,
    ) -> Result<State, Error> {
        let (core, ns, id) = (self.core.clone(), self.ns.clone(), self.id.clone());
        let st = state.clone();
        let config = ContainerConfig { entrypoint: Some(argv), command: Some(Vec::new()), env: args, network, ..Default::default() };
        let rec = blocking(move || {
            let lease = core.images.lease();
            let (desc, _) = store_state(&lease, &st)?;
            let record = ImageRecord {
                name: "build".into(),
                target: DescriptorRecord { media_type: desc.media_type.clone(), digest: desc.digest.clone(), size: desc.size },
                labels: Default::default(),
                created: 0,
                updated: 0,
            };
            let resolved = core.images.resolve(&record, &Platform::default_platform())?;
            let req = CreateRequest {
                image: "build".into(),
                name: String::new(),
                config,
                labels: BTreeMap::from([(LABEL_BUILD.to_owned(), id)]),
                runtime: String::new(),
            };
            Ok(core.containers.create_from(&ns, req, &resolved)?)
        })
        .await?;
        let outcome = self.run_task(sname, index, &rec).await;
        let (core, ns) = (self.core.clone(), self.ns.clone());
        if let Err(e) = core.tasks.delete(&ns, &rec, true).await {
            tracing::debug!(container = %rec.id, error = %e, "deleting a build step's task");
        }
        let text = next.text.clone();
        let result = match outcome {
            Ok((0, _)) => {
                let (c, n, r) = (core.clone(), ns.clone(), rec.clone());
                blocking(move || conclude(&c, &n, &r.snapshot_key, state, next)).await
            }
            Ok((code, last)) => {
                let tail = if last.is_empty() { String::new() } else { format!("; last output: {}", last.join(" | ")) };
                Err(Error::Aborted(format!("{text}: exit code {code}{tail}")))
            }
            Err(e) => Err(e),
        };
        // The container goes; its snapshot too, unless it became the layer.
        let (c, n, r) = (core.clone(), ns.clone(), rec.clone());
        if let Err(e) = blocking(move || Ok(c.containers.delete(&n, &r)?)).await {
            tracing::warn!(container = %rec.id, error = %e, "removing a build step's container");
        }
        core.tasks.forget_container(&ns, &rec.id);
        result
    }

    /// Start the task, relay its output, wait for its exit: (code, last lines).
    async fn run_task(&self, sname: &str, index: u32, rec: &crate::metadata::ContainerRecord) -> Result<(i32, Vec<String>), Error> {
        let tasks = &self.core.tasks;
        tasks.create(&self.ns, rec).await?;
        let conn = tasks.attach(&self.ns, rec, &Proc::Init).await?;
        let (mut frames, _writer) = conn.split();
        tasks.start(&self.ns, rec, &Proc::Init).await?;
        let mut last: std::collections::VecDeque<String> = Default::default();
        let mut partial = Vec::new();
        loop {
            let next = tokio::select! {
                f = frames.next_output() => f,
                () = self.events.closed() => {
                    let _ = tasks.kill(&self.ns, rec, &Proc::Init, 9, true).await;
                    return Err(Error::Cancelled("the client went away".into()));
                }
            };
            match next {
                Ok(Some(AttachOutput::Stdout(d) | AttachOutput::Stderr(d))) => {
                    partial.extend_from_slice(&d);
                    while let Some(nl) = partial.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = partial.drain(..=nl).collect();
                        last.push_back(berth_common::text::printable(&String::from_utf8_lossy(&line[..line.len() - 1])).into_owned());
                        if last.len() > LAST_LINES {
                            last.pop_front();
                        }
                    }
                    let _ = self.events.send(BuildEvent::Output { stage: sname.to_owned(), index, data: d }).await;
                }
                Ok(Some(AttachOutput::Exit(code))) => {
                    if !partial.is_empty() {
                        last.push_back(berth_common::text::printable(&String::from_utf8_lossy(&partial)).into_owned());
                        if last.len() > LAST_LINES {
                            last.pop_front();
                        }
                    }
                    return Ok((code, last.into_iter().collect()));
                }
                Ok(None) => {
                    let exit = tasks.wait(&self.ns, rec, &Proc::Init, Some(std::time::Duration::from_secs(10))).await?;
                    return Ok((exit.exit_code, last.into_iter().collect()));
                }
                Err(e) => return Err(Error::Internal(format!("the RUN step's output broke: {e}"))),
            }
        }
    }
}
