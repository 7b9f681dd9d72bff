//! Which process of a task a call is about: its init, or one of its execs.
//! (The shim's protocol says the same with an exec id that is empty for the
//! init; that spelling stays on the wire.)

use super::TaskError;

/// An exec's id: 1-64 of `[a-zA-Z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecId(String);

impl ExecId {
    pub fn parse(id: &str) -> Result<ExecId, TaskError> {
        let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(ExecId(id.to_owned()))
        } else {
            Err(TaskError::InvalidArgument(format!(
                "invalid exec id {:?}: use 1-64 of [a-zA-Z0-9_.-]",
                id.chars().take(80).collect::<String>()
            )))
        }
    }

    /// A new random id.
    pub fn generate() -> ExecId {
        ExecId(crate::content::random_hex(8))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ExecId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A process of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proc {
    Init,
    Exec(ExecId),
}

impl Proc {
    /// The init when `exec_id` is empty, else that exec (checked).
    pub fn parse(exec_id: &str) -> Result<Proc, TaskError> {
        if exec_id.is_empty() {
            Ok(Proc::Init)
        } else {
            ExecId::parse(exec_id).map(Proc::Exec)
        }
    }

    /// The exec id the shim's protocol uses (empty for the init).
    pub(super) fn wire(&self) -> String {
        match self {
            Proc::Init => String::new(),
            Proc::Exec(id) => id.0.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_ids_are_checked_and_the_empty_one_is_the_init() {
        assert_eq!(Proc::parse("").unwrap(), Proc::Init);
        assert_eq!(Proc::parse("web-1.a_b").unwrap().wire(), "web-1.a_b");
        for bad in ["a b", "../x", "é", &"x".repeat(65)] {
            assert!(Proc::parse(bad).is_err(), "{bad:?}");
        }
        let g = ExecId::generate();
        assert_eq!(ExecId::parse(g.as_str()).unwrap(), g);
    }
}
