//! One test's private world: a temporary directory and the log files of every process started in it.
//! Declare it first in a test so that it is dropped last, after the processes have been stopped; if
//! the test did not reach [`TestEnv::pass`], it prints every log and keeps the directory.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

use crate::Error;
use crate::error::IoContext;

/// A test's temporary directory and log registry.
pub struct TestEnv {
    name: String,
    dir: Option<tempfile::TempDir>,
    logs: RefCell<Vec<(String, PathBuf)>>,
    passed: Cell<bool>,
}

impl TestEnv {
    /// Creates the environment for the test `name` under the system temp dir.
    pub fn new(name: &str) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("mender-interop-{name}-"))
            .tempdir()
            .context(|| "creating the test's temporary directory".to_owned())?;
        Ok(TestEnv {
            name: name.to_owned(),
            dir: Some(dir),
            logs: RefCell::new(Vec::new()),
            passed: Cell::new(false),
        })
    }

    /// The test's temporary directory.
    pub fn dir(&self) -> &Path {
        match &self.dir {
            Some(dir) => dir.path(),
            // Only `drop` takes the directory out.
            None => Path::new("/nonexistent"),
        }
    }

    /// Creates (if needed) and returns a subdirectory of the test's directory.
    pub fn subdir(&self, name: &str) -> Result<PathBuf, Error> {
        let path = self.dir().join(name);
        std::fs::create_dir_all(&path).context(|| format!("creating {}", path.display()))?;
        Ok(path)
    }

    /// Creates an empty log file for a process called `name` and registers it for printing on
    /// failure.
    pub fn log_file(&self, name: &str) -> Result<(PathBuf, std::fs::File), Error> {
        let logs_dir = self.subdir("logs")?;
        let mut path = logs_dir.join(format!("{name}.log"));
        let mut n = 1;
        while path.exists() {
            n += 1;
            path = logs_dir.join(format!("{name}-{n}.log"));
        }
        let file = std::fs::File::create(&path).context(|| format!("creating {}", path.display()))?;
        self.logs.borrow_mut().push((name.to_owned(), path.clone()));
        Ok((path, file))
    }

    /// Marks the test as passed: logs are not printed and the directory is removed.
    pub fn pass(&self) {
        self.passed.set(true);
    }

    fn dump_logs(&self) {
        eprintln!(
            "==== {}: test failed; logs of every process follow (directory kept: {})",
            self.name,
            self.dir().display()
        );
        for (name, path) in self.logs.borrow().iter() {
            eprintln!("---- log of {name} ({})", path.display());
            match std::fs::read(path) {
                Ok(bytes) => eprintln!("{}", tail(&String::from_utf8_lossy(&bytes), 400)),
                Err(e) => eprintln!("(cannot read: {e})"),
            }
        }
        eprintln!("==== end of logs of {}", self.name);
    }
}

/// The last `lines` lines of `text`, so that a runaway log does not drown the failure message.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let skip = all.len().saturating_sub(lines);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("[... {skip} earlier lines omitted ...]\n"));
    }
    out.push_str(&all[skip..].join("\n"));
    out
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.passed.get() && !std::thread::panicking() {
            return;
        }
        self.dump_logs();
        if let Some(dir) = self.dir.take() {
            // Keep the directory for post-mortem inspection.
            let _ = dir.keep();
        }
    }
}
