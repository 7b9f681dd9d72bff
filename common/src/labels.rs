//! Labels: how `KEY=VALUE` text becomes a label, and what a user's labels may
//! be.
//!
//! Parsing follows docker's `--label`: the text is split at its first `=`, so
//! values may contain `=`; text without `=` is a key with an empty value; the
//! key must not be empty.
//!
//! Validation is the agent's rule for labels a client sends: at most
//! [`MAX_LABELS`] of them, keys of 1 to [`MAX_KEY_LEN`] bytes, values of at
//! most [`MAX_VALUE_LEN`] bytes, and nothing under [`RESERVED_PREFIX`], which
//! the agent keeps for its own labels.

use std::collections::BTreeMap;

/// Keys under this prefix belong to the agent; clients may not set them.
pub const RESERVED_PREFIX: &str = "berth.io/";
/// The most labels one object may carry.
pub const MAX_LABELS: usize = 256;
/// The longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// The longest value, in bytes.
pub const MAX_VALUE_LEN: usize = 4096;

/// How much of a key or label an error message quotes.
const QUOTED: usize = 80;

/// Why text is not a label, or labels break the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// `=VALUE`, or an empty string.
    #[error("invalid label {label:?}: the key is empty (use KEY=VALUE)")]
    EmptyKey { label: String },
    #[error("too many labels: at most {MAX_LABELS}")]
    TooMany,
    #[error("label key {key:?} is {len} bytes long; keys are at most {MAX_KEY_LEN} bytes")]
    KeyTooLong { key: String, len: usize },
    #[error("the value of label {key:?} is {len} bytes long; values are at most {MAX_VALUE_LEN} bytes")]
    ValueTooLong { key: String, len: usize },
    #[error("label {key:?}: keys under {RESERVED_PREFIX} are reserved for the agent")]
    Reserved { key: String },
}

/// The start of `s`, for an error message (a label may be 5 kB of anything).
fn quote(s: &str) -> String {
    s.chars().take(QUOTED).collect()
}

/// Splits one `KEY=VALUE` at its first `=`. `KEY` alone means an empty value.
pub fn parse(label: &str) -> Result<(&str, &str), LabelError> {
    let (key, value) = label.split_once('=').unwrap_or((label, ""));
    if key.is_empty() {
        return Err(LabelError::EmptyKey { label: quote(label) });
    }
    Ok((key, value))
}

/// [`parse`] for each item; a key given twice keeps its last value.
pub fn parse_all<'a>(labels: impl IntoIterator<Item = &'a str>) -> Result<BTreeMap<String, String>, LabelError> {
    labels.into_iter().map(|l| parse(l).map(|(k, v)| (k.to_owned(), v.to_owned()))).collect()
}

/// Checks labels a client asks to set against the rules in the module
/// documentation. The first broken rule is reported: too many labels before
/// anything about one label.
pub fn validate<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), LabelError> {
    let mut checked = Vec::new();
    for pair in labels {
        if checked.len() == MAX_LABELS {
            return Err(LabelError::TooMany);
        }
        checked.push(pair);
    }
    for (key, value) in checked {
        if key.is_empty() {
            return Err(LabelError::EmptyKey { label: quote(&format!("={value}")) });
        }
        if key.len() > MAX_KEY_LEN {
            return Err(LabelError::KeyTooLong { key: quote(key), len: key.len() });
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(LabelError::ValueTooLong { key: quote(key), len: value.len() });
        }
        if key.starts_with(RESERVED_PREFIX) {
            return Err(LabelError::Reserved { key: quote(key) });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_splits_at_the_first_equals_sign() {
        let ok: &[(&str, (&str, &str))] = &[
            ("a=b", ("a", "b")),
            ("a=", ("a", "")),
            ("a", ("a", "")),
            ("a=b=c", ("a", "b=c")),
            ("a==", ("a", "=")),
            ("com.example/x=1 2", ("com.example/x", "1 2")),
            ("k= v ", ("k", " v ")),
            ("berth.io/x=1", ("berth.io/x", "1")),
            ("ключ=значение", ("ключ", "значение")),
        ];
        for (input, want) in ok {
            assert_eq!(parse(input), Ok(*want), "{input:?}");
        }
        for input in ["", "=", "=b", "==b"] {
            assert_eq!(parse(input), Err(LabelError::EmptyKey { label: input.to_owned() }), "{input:?}");
        }
    }

    #[test]
    fn parse_all_keeps_the_last_value_of_a_key() {
        let got = parse_all(["a=1", "b", "a=2"]).unwrap();
        let want: BTreeMap<String, String> = [("a", "2"), ("b", "")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        assert_eq!(got, want);
        assert_eq!(parse_all(["a=1", "=2"]), Err(LabelError::EmptyKey { label: "=2".into() }));
        assert_eq!(parse_all([]), Ok(BTreeMap::new()));
    }

    #[test]
    fn validation_table() {
        let long_key = "k".repeat(MAX_KEY_LEN + 1);
        let max_key = "k".repeat(MAX_KEY_LEN);
        let long_value = "v".repeat(MAX_VALUE_LEN + 1);
        let max_value = "v".repeat(MAX_VALUE_LEN);
        let cases: Vec<(&str, &str, Result<(), LabelError>)> = vec![
            ("a", "b", Ok(())),
            ("a", "", Ok(())),
            (&max_key, &max_value, Ok(())),
            ("berth.io", "x", Ok(())),
            ("example.com/berth.io/x", "x", Ok(())),
            ("Berth.io/x", "x", Ok(())),
            ("", "x", Err(LabelError::EmptyKey { label: "=x".into() })),
            (&long_key, "x", Err(LabelError::KeyTooLong { key: "k".repeat(QUOTED), len: MAX_KEY_LEN + 1 })),
            ("a", &long_value, Err(LabelError::ValueTooLong { key: "a".into(), len: MAX_VALUE_LEN + 1 })),
            ("berth.io/", "", Err(LabelError::Reserved { key: "berth.io/".into() })),
            ("berth.io/unpacking", "1", Err(LabelError::Reserved { key: "berth.io/unpacking".into() })),
        ];
        for (key, value, want) in cases {
            assert_eq!(validate([(key, value)]), want, "{key:?}={value:?}");
        }
    }

    #[test]
    fn validation_counts_labels_first() {
        let keys: Vec<String> = (0..=MAX_LABELS).map(|i| format!("k{i}")).collect();
        assert_eq!(validate(keys.iter().take(MAX_LABELS).map(|k| (k.as_str(), ""))), Ok(()));
        assert_eq!(validate(keys.iter().map(|k| (k.as_str(), ""))), Err(LabelError::TooMany));
        // Too many wins over a bad label among them.
        let with_bad = std::iter::once(("berth.io/x", "")).chain(keys.iter().map(|k| (k.as_str(), "")));
        assert_eq!(validate(with_bad), Err(LabelError::TooMany));
        assert_eq!(validate([]), Ok(()));
    }

    #[test]
    fn validation_takes_a_map() {
        let mut m = BTreeMap::new();
        m.insert("a".to_owned(), "1".to_owned());
        assert_eq!(validate(m.iter().map(|(k, v)| (k.as_str(), v.as_str()))), Ok(()));
        m.insert("berth.io/gc".to_owned(), String::new());
        assert!(validate(m.iter().map(|(k, v)| (k.as_str(), v.as_str()))).is_err());
    }

    #[test]
    fn messages_are_plain() {
        assert_eq!(parse("=x").unwrap_err().to_string(), "invalid label \"=x\": the key is empty (use KEY=VALUE)");
        assert_eq!(LabelError::TooMany.to_string(), "too many labels: at most 256");
        assert_eq!(
            LabelError::Reserved { key: "berth.io/a".into() }.to_string(),
            "label \"berth.io/a\": keys under berth.io/ are reserved for the agent"
        );
        assert_eq!(
            LabelError::KeyTooLong { key: "kk".into(), len: 1025 }.to_string(),
            "label key \"kk\" is 1025 bytes long; keys are at most 1024 bytes"
        );
        assert_eq!(
            LabelError::ValueTooLong { key: "a".into(), len: 4097 }.to_string(),
            "the value of label \"a\" is 4097 bytes long; values are at most 4096 bytes"
        );
        // Long input is cut in messages.
        let e = parse(&format!("={}", "x".repeat(500))).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
    }
}
