//! `check-config`: every error and every warning of a configuration, each naming the file it
//! comes from.
//!
//! The loader stops at the first error: the daemon needs nothing more. To find the next one,
//! the check loads again without what failed (the key in the file it came from, or the whole file
//! when it is not JSON), until the rest loads or nothing more can be taken out. Each retry
//! removes something, so the loop ends.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Config, ConfigError, MoreChecks};

/// What `check-config` prints.
#[derive(Debug, Default)]
pub struct Report {
    /// One line each, naming the file when it is known.
    pub errors: Vec<String>,
    /// Warnings of the last load (after the failing keys were taken out).
    pub warnings: Vec<String>,
    /// The files that exist, fallback first.
    pub files: Vec<PathBuf>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// One file being checked.
struct Doc {
    path: PathBuf,
    /// `None` once the file is out of the check (not JSON, or nothing left to take out).
    value: Option<Value>,
    /// The text as read, for the first load: the loader reports syntax errors with positions.
    text: Option<String>,
}

/// Checks `paths` (fallback first) as the daemon would load them, then this machine's side
/// ([`Config::chroot_problem`]).
pub fn check(paths: &[&Path], more: MoreChecks) -> Report {
    let mut report = Report::default();
    let mut docs = Vec::new();
    for path in paths {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                report.files.push(path.to_path_buf());
                docs.push(Doc { path: path.to_path_buf(), value: None, text: Some(text) });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                report.files.push(path.to_path_buf());
                report.errors.push(ConfigError::Read { path: path.to_path_buf(), source }.to_string());
            }
        }
    }
    // Each round removes a key or a file, so this bound is never reached on real input; it keeps
    // the loop finite whatever happens.
    for _ in 0..1000 {
        let texts: Vec<(PathBuf, String)> = docs
            .iter()
            .filter_map(|d| {
                Some((d.path.clone(), d.text.clone().or_else(|| d.value.as_ref().map(Value::to_string))?))
            })
            .collect();
        let mut warnings = Vec::new();
        match Config::load_documents(&texts, &mut warnings, more) {
            Ok(config) => {
                report.warnings = warnings;
                if let Some(p) = config.chroot_problem() {
                    report.errors.push(in_file(&docs, "Limits.FileTransfer.Chroot", p));
                }
                break;
            }
            Err(e) => {
                report.warnings = warnings;
                if !take_out(&mut docs, &e, &mut report.errors) {
                    break;
                }
            }
        }
    }
    name_files(&docs, &mut report.warnings);
    report
}

/// Records `e` and removes its cause; false when nothing could be removed (the check ends).
fn take_out(docs: &mut [Doc], e: &ConfigError, errors: &mut Vec<String>) -> bool {
    match e {
        ConfigError::Syntax { path, .. } => {
            errors.push(e.to_string());
            match docs.iter_mut().find(|d| Some(&d.path) == path.as_ref() && d.text.is_some()) {
                Some(d) => {
                    d.text = None;
                    d.value = None;
                    true
                }
                None => false,
            }
        }
        ConfigError::Invalid { path: Some(path), key, .. } => {
            errors.push(e.to_string());
            let Some(d) = docs.iter_mut().find(|d| &d.path == path) else { return false };
            parse(d);
            let Some(value) = d.value.as_mut() else { return false };
            if !remove(value, key) {
                // "(top level)" and the like: the file has nothing more to check.
                d.value = None;
            }
            true
        }
        ConfigError::Invalid { path: None, key, reason } => {
            // Raised after merging (combinations, this machine): the file that set it last wins.
            errors.push(in_file(docs, key, format!("{key}: {reason}")));
            let mut removed = false;
            for d in docs.iter_mut() {
                parse(d);
                if let Some(v) = d.value.as_mut() {
                    removed |= remove(v, key);
                }
            }
            removed
        }
        _ => {
            errors.push(e.to_string());
            false
        }
    }
}

/// Switches `d` from its text to its parsed value (keys are removed from the value).
fn parse(d: &mut Doc) {
    if let Some(text) = d.text.take() {
        d.value = serde_json::from_str(&text).ok();
    }
}

/// The `Key.Sub` path in a document, matched case-insensitively as the loader does.
fn lookup<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    key.split('.').try_fold(value, |v, part| {
        v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(part)).map(|(_, v)| v)
    })
}

fn remove(value: &mut Value, key: &str) -> bool {
    let (parent, last) = match key.rsplit_once('.') {
        Some((p, l)) => (p, l),
        None => ("", key),
    };
    let mut v = value;
    if !parent.is_empty() {
        for part in parent.split('.') {
            let Some(map) = v.as_object_mut() else { return false };
            let Some(k) = map.keys().find(|k| k.eq_ignore_ascii_case(part)).cloned() else { return false };
            let Some(next) = map.get_mut(&k) else { return false };
            v = next;
        }
    }
    let Some(map) = v.as_object_mut() else { return false };
    let found: Vec<String> = map.keys().filter(|k| k.eq_ignore_ascii_case(last)).cloned().collect();
    for k in &found {
        map.remove(k);
    }
    !found.is_empty()
}

/// The last file (the primary overrides the fallback) that sets `key`, if any.
fn file_of<'d>(docs: &'d [Doc], key: &str) -> Option<&'d Path> {
    docs.iter()
        .rev()
        .find(|d| {
            let parsed;
            let value = match (&d.value, &d.text) {
                (Some(v), _) => v,
                (None, Some(t)) => {
                    parsed = serde_json::from_str::<Value>(t).ok();
                    match &parsed {
                        Some(v) => v,
                        None => return false,
                    }
                }
                (None, None) => return false,
            };
            lookup(value, key).is_some()
        })
        .map(|d| d.path.as_path())
}

fn in_file(docs: &[Doc], key: &str, message: String) -> String {
    match file_of(docs, key) {
        Some(p) if !message.starts_with(&format!("{}: ", p.display())) => {
            format!("{}: {message}", p.display())
        }
        _ => message,
    }
}

/// Warnings about a merged key ("Sessions.ExpireAfter has no effect: ...") get the file that
/// set the key; those the loader already placed keep theirs.
fn name_files(docs: &[Doc], warnings: &mut [String]) {
    for w in warnings.iter_mut() {
        let key: String = w.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.').collect();
        let first_upper = key.chars().next().is_some_and(|c| c.is_ascii_uppercase());
        if !first_upper || docs.iter().any(|d| w.starts_with(&format!("{}: ", d.path.display()))) {
            continue;
        }
        *w = in_file(docs, &key, std::mem::take(w));
    }
}

#[cfg(test)]
mod tests {
    use super::{lookup, remove};
    use serde_json::json;

    #[test]
    fn keys_are_found_and_removed_case_insensitively() {
        let mut v = json!({"sessions": {"maxperuser": -1, "StopExpired": true}, "User": "x"});
        assert_eq!(lookup(&v, "Sessions.MaxPerUser"), Some(&json!(-1)));
        assert!(remove(&mut v, "Sessions.MaxPerUser"));
        assert_eq!(v, json!({"sessions": {"StopExpired": true}, "User": "x"}));
        assert!(!remove(&mut v, "Sessions.MaxPerUser"));
        assert!(!remove(&mut v, "(top level)"));
        assert!(remove(&mut v, "user"));
        assert!(lookup(&v, "User").is_none());
    }
}
