//! The gRPC layer: each method validates its request into domain types, calls
//! the core on a blocking thread, and maps the result. No logic lives here.

pub mod containers;
pub mod content;
pub mod convert;
pub mod error;
pub mod events;
pub mod images;
pub mod registry;
pub mod snapshots;
pub mod tasks;
pub mod version;

use tonic::Status;

/// The namespace of a call, from the `berth-namespace` header (default `default`).
pub fn namespace<T>(req: &tonic::Request<T>) -> Result<String, Status> {
    let ns = match req.metadata().get(berth_api::NAMESPACE_HEADER) {
        None => return Ok(berth_api::DEFAULT_NAMESPACE.to_owned()),
        Some(v) => v.to_str().map_err(|_| Status::invalid_argument("namespace header is not valid text"))?,
    };
    validate_namespace(ns)?;
    Ok(ns.to_owned())
}

/// A namespace is 1-76 characters of `[a-z0-9._-]`, starting with a letter or digit.
pub fn validate_namespace(ns: &str) -> Result<(), Status> {
    let ok = !ns.is_empty()
        && ns.len() <= 76
        && ns.as_bytes()[0].is_ascii_alphanumeric()
        && ns.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid namespace {:?}: use 1-76 lowercase letters, digits, '.', '_' or '-'",
            ns.chars().take(80).collect::<String>()
        )))
    }
}

/// Run blocking core work off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Status> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(format!("task failed: {e}")))?
}

/// Parse `KEY==VALUE` / `KEY` filters: returns (key, Some(value)) pairs.
pub fn parse_filters(filters: &[String]) -> Result<Vec<(String, Option<String>, bool)>, Status> {
    filters
        .iter()
        .map(|f| {
            if let Some((k, v)) = f.split_once("==") {
                Ok((k.trim().to_owned(), Some(v.trim().to_owned()), false))
            } else if let Some((k, v)) = f.split_once("~=") {
                Ok((k.trim().to_owned(), Some(v.trim().to_owned()), true))
            } else if !f.is_empty() && !f.contains('=') {
                Ok((f.trim().to_owned(), None, false))
            } else {
                Err(Status::invalid_argument(format!("invalid filter {f:?}: use KEY==VALUE, KEY~=SUBSTRING or KEY")))
            }
        })
        .collect()
}

/// User labels: non-empty keys, none under `berth.io/` (the agent's own), bounded sizes.
pub fn validate_labels(labels: &std::collections::HashMap<String, String>) -> Result<(), Status> {
    if labels.len() > 256 {
        return Err(Status::invalid_argument("at most 256 labels"));
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > 1024 || v.len() > 4096 {
            return Err(Status::invalid_argument(format!(
                "label {:?}: keys are 1-1024 bytes, values at most 4096",
                k.chars().take(80).collect::<String>()
            )));
        }
        if k.starts_with("berth.io/") {
            return Err(Status::invalid_argument(format!("labels under berth.io/ are reserved for the agent: {k:?}")));
        }
    }
    Ok(())
}

/// A container by name, full id or unique id prefix.
pub async fn find_container(
    agent: &std::sync::Arc<crate::server::Agent>,
    ns: &str,
    id: &str,
) -> Result<crate::metadata::ContainerRecord, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument("a container name or id is required"));
    }
    let agent = agent.clone();
    let (ns, id) = (ns.to_owned(), id.to_owned());
    blocking(move || Ok(agent.containers.find(&ns, &id)?)).await
}
