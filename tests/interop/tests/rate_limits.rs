//! Issue 5: `Limits.FileTransfer.Counters.MaxBytesRxPerMinute` / `MaxBytesTxPerMinute` measured
//! over a minute of real traffic through the mock server.
//!
//! The reference (mender-connect 2.1.0 `limits/filetransfer/limits.go`) keeps, per device, an
//! exponential moving average with a one-minute time constant of the bytes moved in each 5 s
//! tick, and refuses once that average reaches the limit. At a steady rate R bytes/s the average
//! tends to 5·R, reaching a fraction 1 − e^(−t/60) of it after t seconds. Each scenario keeps a
//! transfer going at R = 8 KiB/s for about 60 s:
//! - limit 16 KiB (< 5·R = 40 KiB): the average crosses the limit after about half a minute, and
//!   the transfer is cut with the reference's text;
//! - limit 64 KiB (> 40 KiB): the average never reaches it, and everything completes.
//!
//! Uploads (Rx) are one long multipart upload whose body is produced at R; downloads (Tx) are a
//! 8 KiB file fetched once a second (a single slow download cannot be paced from the user side:
//! socket buffers would swallow a burst first).
//!
//! The four scenarios of an agent run at the same time, each with its own mock server, client and
//! agent, so that the test takes about 60 s of traffic plus setup (under 90 s).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mender_connect_interop::agent::AgentKind;
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::deviceconnect::{DeviceConnect, Paced, UploadFields};
use mender_connect_interop::testbed::{Admission, Testbed};
use mender_connect_interop::{Error, TestEnv};
use serde_json::json;

const RATE: u64 = 8 * 1024;
const TRAFFIC: Duration = Duration::from_secs(60);
const LOW_LIMIT: u64 = 16 * 1024;
const HIGH_LIMIT: u64 = 64 * 1024;

fn ensure(ok: bool, what: impl Into<String>) -> Result<(), Error> {
    if ok { Ok(()) } else { Err(Error::Check(what.into())) }
}

#[derive(Debug, Clone, Copy)]
enum Direction {
    Rx,
    Tx,
}

fn device(
    env: &TestEnv,
    name: &str,
    kind: AgentKind,
    direction: Direction,
    limit: u64,
) -> Result<(Testbed, DeviceConnect), Error> {
    let admission = Admission::ManualAccept;
    let mock = Testbed::start_mock(env, &admission)?;
    let mut bed = Testbed::start_device(env, mock, Identity::mac_for(name), &admission)?;
    let key = match direction {
        Direction::Rx => "MaxBytesRxPerMinute",
        Direction::Tx => "MaxBytesTxPerMinute",
    };
    let overrides = json!({ "Limits": { "Enabled": true, "FileTransfer": { "Counters": { key: limit } } } });
    bed.start_agent_with_config(env, kind, &overrides)?;
    let dc = DeviceConnect::new(bed.mock.url(), bed.api.token(), &bed.device_id);
    Ok((bed, dc))
}

/// One paced upload of 60 s worth of bytes.
fn rx(kind: AgentKind, limit: u64) -> Result<String, Error> {
    let name = format!("rate-rx-{limit}-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let (mut bed, dc) = device(&env, &name, kind, Direction::Rx, limit)?;
    let target = env.subdir("device-side")?.join("paced.bin");
    let total = RATE * TRAFFIC.as_secs();
    let mut body = Paced::new(total, RATE);
    let counter = body.counter();
    let started = Instant::now();
    let r = dc.upload(&UploadFields::new(&target.display().to_string()), &mut body)?;
    let elapsed = started.elapsed();
    let sent = counter.load(Ordering::Relaxed);
    let summary = if limit < 5 * RATE {
        ensure(
            r.status == 400
                && r.error().as_deref()
                    == Some("failed to write file chunk: transmitted bytes limit exhausted"),
            format!(
                "over the limit: expected 400 `failed to write file chunk: transmitted bytes limit exhausted`, got {} {:?}",
                r.status,
                r.text()
            ),
        )?;
        ensure(!target.exists(), "the cut upload left a file at the target")?;
        let log = bed.mock.log_text();
        ensure(
            log.contains("device error: failed to write file chunk: transmitted bytes limit exhausted"),
            "the mock did not log the device's error",
        )?;
        format!("{name}: cut as expected (client sent {sent} bytes over {:.0} s)", elapsed.as_secs_f64())
    } else {
        ensure(r.status == 201, format!("below the limit: expected 201, got {} {:?}", r.status, r.text()))?;
        mender_connect_interop::wait::for_upload(&target)?;
        let written = std::fs::read(&target).map_err(|e| Error::io("reading the upload", e))?;
        let mut expected = Vec::new();
        std::io::Read::read_to_end(&mut Paced::new(total, u64::MAX), &mut expected)
            .map_err(|e| Error::io("regenerating the payload", e))?;
        ensure(written == expected, "the paced upload arrived different")?;
        format!("{name}: {total} bytes completed in {:.0} s", elapsed.as_secs_f64())
    };
    if let Some(agent) = bed.agent.as_mut() {
        agent.ensure_running()?;
    }
    env.pass();
    Ok(summary)
}

/// An 8 KiB file downloaded once a second for 60 s (or until refused).
fn tx(kind: AgentKind, limit: u64) -> Result<String, Error> {
    let name = format!("rate-tx-{limit}-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let (mut bed, dc) = device(&env, &name, kind, Direction::Tx, limit)?;
    let file = env.subdir("device-side")?.join("eight.bin");
    let content = mender_connect_interop::scenarios::random_bytes(RATE as usize)?;
    std::fs::write(&file, &content).map_err(|e| Error::io("writing the file", e))?;
    let path = file.display().to_string();
    let started = Instant::now();
    let mut ok = 0u32;
    let mut refused = None;
    let mut n = 0u32;
    while started.elapsed() < TRAFFIC {
        n += 1;
        // On schedule: download n starts at second n-1.
        if let Some(wait) = Duration::from_secs(u64::from(n - 1)).checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        match dc.download(&path) {
            Ok(r) if r.status == 200 && r.body == content => ok += 1,
            Ok(r) => {
                refused = Some(format!("status {} body {:?}", r.status, r.text()));
                break;
            }
            // A refusal after the headers went out cuts the body: the transfer errors.
            Err(e) => {
                refused = Some(format!("transfer error: {e}"));
                break;
            }
        }
    }
    let summary = if limit < 5 * RATE {
        let Some(how) = refused else {
            return Err(Error::Check(format!("over the limit: all {ok} downloads in {TRAFFIC:?} succeeded")));
        };
        ensure(ok >= 1, "the very first download was refused (the average starts at zero)")?;
        // R hides device errors behind 500 "internal error"; the mock's log keeps the device's text.
        let log = bed.mock.log_text();
        ensure(
            log.lines()
                .any(|l| l.contains(&format!("{path}: failed: 500 transmitted bytes limit exhausted")))
                || log
                    .lines()
                    .any(|l| l.contains("failed after") && l.contains("transmitted bytes limit exhausted")),
            format!(
                "refused ({how}), but the device's `transmitted bytes limit exhausted` is not in the mock's log"
            ),
        )?;
        format!("{name}: refused after {ok} downloads ({:.0} s): {how}", started.elapsed().as_secs_f64())
    } else {
        ensure(refused.is_none(), format!("below the limit: download {n} refused: {refused:?}"))?;
        format!("{name}: all {ok} downloads completed")
    };
    if let Some(agent) = bed.agent.as_mut() {
        agent.ensure_running()?;
    }
    env.pass();
    Ok(summary)
}

fn rate_limits(kind: AgentKind) -> Result<(), Error> {
    let scenarios: Vec<std::thread::JoinHandle<Result<String, Error>>> = vec![
        std::thread::spawn(move || rx(kind, LOW_LIMIT)),
        std::thread::spawn(move || rx(kind, HIGH_LIMIT)),
        std::thread::spawn(move || tx(kind, LOW_LIMIT)),
        std::thread::spawn(move || tx(kind, HIGH_LIMIT)),
    ];
    let mut failures = Vec::new();
    for handle in scenarios {
        match handle.join() {
            Ok(Ok(summary)) => eprintln!("{summary}"),
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(_) => failures.push("a scenario thread panicked".to_owned()),
        }
    }
    ensure(failures.is_empty(), failures.join("\n"))
}

#[test]
fn go_agent_rate_limits_over_a_minute() -> Result<(), Error> {
    rate_limits(AgentKind::Go)
}

#[test]
fn rust_agent_rate_limits_over_a_minute() -> Result<(), Error> {
    rate_limits(AgentKind::Rust)
}
