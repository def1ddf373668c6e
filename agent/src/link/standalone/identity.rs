//! Identity attributes: the output of an identity script (`key=value` lines, as the Mender
//! client's `mender-device-identity`) or fixed attributes from the configuration, as the JSON
//! object string of the auth request's `id_data`.
//!
//! As the Mender client: a key given once maps to a string, a key given several times to an array
//! of its values in order; keys come out sorted (Go marshals maps sorted). Lines without `=` are
//! an error, the value is everything after the first `=`.

use std::path::Path;
use std::process::Command;

use serde_json::{Map, Value};

use crate::config::standalone::Attributes;

/// Why no identity could be collected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The script could not be started.
    #[error("cannot run identity script {path}: {source}")]
    Spawn { path: String, source: std::io::Error },
    /// The script failed.
    #[error("identity script {path} exited with {status}: {stderr}")]
    Failed { path: String, status: String, stderr: String },
    /// Output that is not `key=value` lines.
    #[error("identity script {path}, line {}: {reason}", reason.line())]
    Parse { path: String, reason: LineError },
    /// No attribute at all.
    #[error("identity script {path} printed no key=value line")]
    Empty { path: String },
}

/// A line of identity output that is not `key=value`; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// No `=` in the line.
    #[error("expected key=value, got {text:?}")]
    NoEquals { line: usize, text: String },
    /// Nothing before the `=`.
    #[error("empty key in {text:?}")]
    EmptyKey { line: usize, text: String },
}

impl LineError {
    /// The line's number, from 1.
    pub fn line(&self) -> usize {
        match self {
            Self::NoEquals { line, .. } | Self::EmptyKey { line, .. } => *line,
        }
    }
}

/// Parses `key=value` lines into attributes (several values per key kept in order).
pub fn parse(text: &str) -> Result<Attributes, LineError> {
    let mut attrs = Attributes::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(LineError::NoEquals { line: n + 1, text: line.to_owned() });
        };
        if key.is_empty() {
            return Err(LineError::EmptyKey { line: n + 1, text: line.to_owned() });
        }
        attrs.add(key, value.to_owned());
    }
    Ok(attrs)
}

/// The compact JSON object: one value → string, several → array.
pub fn to_json(attrs: &Attributes) -> String {
    let map: Map<String, Value> = attrs
        .iter()
        .map(|(k, v)| {
            let value = match v {
                [one] => Value::String(one.clone()),
                many => Value::Array(many.iter().cloned().map(Value::String).collect()),
            };
            (k.to_owned(), value)
        })
        .collect();
    Value::Object(map).to_string()
}

/// Runs the identity script and parses its standard output.
pub fn from_script(path: &Path) -> Result<Attributes, IdentityError> {
    let shown = path.display().to_string();
    let out = Command::new(path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| IdentityError::Spawn { path: shown.clone(), source })?;
    if !out.status.success() {
        return Err(IdentityError::Failed {
            path: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let attrs = parse(&String::from_utf8_lossy(&out.stdout))
        .map_err(|reason| IdentityError::Parse { path: shown.clone(), reason })?;
    if attrs.is_empty() {
        return Err(IdentityError::Empty { path: shown });
    }
    Ok(attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_to_sorted_json_with_repeated_keys_as_arrays() {
        let attrs = parse("mac=00:11:22:33:44:55\nserial=a=b\n\nmac=66:77:88:99:aa:bb\r\n").unwrap();
        assert_eq!(to_json(&attrs), r#"{"mac":["00:11:22:33:44:55","66:77:88:99:aa:bb"],"serial":"a=b"}"#);
        let err = parse("novalue\n").unwrap_err();
        assert_eq!((err.line(), err.to_string().as_str()), (1, "expected key=value, got \"novalue\""));
        let err = parse("a=1\n=x\n").unwrap_err();
        assert_eq!((err.line(), err.to_string().as_str()), (2, "empty key in \"=x\""));
        assert!(parse("").unwrap().is_empty());
    }
}
