//! Issue 5: every case of mendersoftware/integration `tests/tests/test_filetransfer.py`
//! (`BaseTestFileTransferDownload` and `BaseTestFileTransferLimits`), with the same requests
//! (`GET .../download?path=`, multipart `PUT .../upload`) and the same assertions, against the mock
//! server, the real Mender client 3.4.0 and the agent under test. The suite's `set_limits` (edit
//! `Limits` in mender-connect.conf, restart the agent, wait for the reconnect) is
//! [`Testbed::start_agent_with_config`].
//!
//! Each case runs with Debian's Go mender-connect 2.1.0 (proving the assertions are the reference
//! behaviour) and with our agent. Paths the suite uses under `/tmp` and `/var/lib/mender` are
//! placed under the test's own temporary directory so that parallel tests never meet; `/usr`,
//! `/etc/profile` and `/does/not/exist` are used as the suite uses them (read only or expected to
//! be refused).
//!
//! The six `test_filetransfer_limits_download_err_*` cases are `xfail` (MEN-4659) upstream: they
//! pass if the server answers 403 with the device's message, and are expected failures if it
//! answers 500 (what the real server does for a device error without a status code); any other
//! answer fails them. Here the same rule applies, and in the 500 case the device's exact message
//! must appear in the mock server's log (the real server hides it from the user). The Go agent
//! gets 500 in all six (xfail upstream); ours gets 403 with the exact text for the size, owner and
//! group limits (pass upstream) and 500 for the chroot and symlink ones (xfail upstream), which
//! it refuses already at `stat` so that no metadata of such files leaks.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mender_connect_interop::agent::AgentKind;
use mender_connect_interop::cli::MenderCli;
use mender_connect_interop::device_files::Identity;
use mender_connect_interop::deviceconnect::{Answer, DeviceConnect, UploadFields};
use mender_connect_interop::mock::{USER_EMAIL, USER_PASSWORD};
use mender_connect_interop::scenarios::{random_bytes, sha256_file};
use mender_connect_interop::testbed::{Admission, Testbed};
use mender_connect_interop::{Error, TestEnv};
use serde_json::{Value, json};

/// A device whose agent (`kind`) runs with the `Limits` section `limits` (`Null`: none).
fn device(
    env: &TestEnv,
    name: &str,
    kind: AgentKind,
    limits: Value,
) -> Result<(Testbed, DeviceConnect), Error> {
    let admission = Admission::ManualAccept;
    let mock = Testbed::start_mock(env, &admission)?;
    let mut bed = Testbed::start_device(env, mock, Identity::mac_for(name), &admission)?;
    let overrides = if limits.is_null() { Value::Null } else { json!({ "Limits": limits }) };
    bed.start_agent_with_config(env, kind, &overrides)?;
    let dc = DeviceConnect::new(bed.mock.url(), bed.api.token(), &bed.device_id);
    Ok((bed, dc))
}

fn check(ok: bool, what: &str, answer: &Answer) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(Error::Check(format!(
            "{what}; got status {} headers {:?} body {:?}",
            answer.status,
            answer.headers,
            String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
        )))
    }
}

/// The answer has `status` and its error message contains `text`.
fn check_error(r: &Answer, status: u16, text: &str) -> Result<(), Error> {
    check(r.status == status, &format!("status {status}"), r)?;
    check(r.error().is_some_and(|e| e.contains(text)), &format!("error contains `{text}`"), r)
}

fn ensure(ok: bool, what: impl Into<String>) -> Result<(), Error> {
    if ok { Ok(()) } else { Err(Error::Check(what.into())) }
}

/// The suite's `random_filename()`: 8 lowercase letters.
fn random_filename() -> Result<String, Error> {
    Ok(random_bytes(8)?.iter().map(|b| char::from(b'a' + b % 26)).collect())
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// The suite's device has `/var/lib/mender` as a symlink (to the data partition); the limits
/// tests rely on that (`FollowSymLinks: True`). Returns `<env>/var/lib/mender/filetransfer`
/// (created) whose parent `<env>/var/lib/mender` is a symlink to `<env>/data/mender`.
fn symlinked_chroot(env: &TestEnv) -> Result<PathBuf, Error> {
    let data = env.subdir("data/mender")?;
    let var_lib = env.subdir("var/lib")?;
    let link = var_lib.join("mender");
    std::os::unix::fs::symlink(&data, &link).map_err(|e| Error::io("symlinking var/lib/mender", e))?;
    let chroot = link.join("filetransfer");
    std::fs::create_dir_all(&chroot).map_err(|e| Error::io("mkdir -p var/lib/mender/filetransfer", e))?;
    Ok(chroot)
}

/// One case on a fresh device: mock, client, agent with `limits`; passes if `body` does and the
/// agent is still running afterwards.
fn run_case(
    kind: AgentKind,
    tag: &str,
    limits: Value,
    body: impl FnOnce(&TestEnv, &DeviceConnect) -> Result<(), Error>,
) -> Result<(), Error> {
    let name = format!("{tag}-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let (mut bed, dc) = device(&env, &name, kind, limits)?;
    body(&env, &dc)?;
    finish(&env, &mut bed)
}

fn finish(env: &TestEnv, bed: &mut Testbed) -> Result<(), Error> {
    if let Some(agent) = bed.agent.as_mut() {
        agent.ensure_running()?;
    }
    env.pass();
    Ok(())
}

// ---- BaseTestFileTransferDownload ----

/// `test_download_ok`: `/etc/mender/mender.conf` there is the client's configuration, root's, mode
/// 644; here the harness's client configuration is that file.
fn download_ok(kind: AgentKind) -> Result<(), Error> {
    run_case(kind, "ft-download-ok", Value::Null, |env, dc| {
        let conf = env.dir().join("mender-client/mender.conf");
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io("chmod 644 mender.conf", e))?;
        std::os::unix::fs::chown(&conf, Some(0), Some(0))
            .map_err(|e| Error::io("chown 0:0 mender.conf", e))?;
        let path = path_str(&conf);
        let r = dc.download(&path)?;
        check(r.status == 200, "status 200", &r)?;
        check(r.text().contains("ServerURL"), "content contains ServerURL", &r)?;
        check(
            r.header("Content-Disposition") == Some("attachment; filename=\"mender.conf\""),
            "Content-Disposition",
            &r,
        )?;
        check(r.header("Content-Type") == Some("application/octet-stream"), "Content-Type", &r)?;
        check(r.header("X-Men-File-Gid") == Some("0"), "X-Men-File-Gid 0", &r)?;
        check(r.header("X-Men-File-Uid") == Some("0"), "X-Men-File-Uid 0", &r)?;
        check(r.header("X-Men-File-Mode") == Some("644"), "X-Men-File-Mode 644", &r)?;
        check(r.header("X-Men-File-Path") == Some(path.as_str()), "X-Men-File-Path", &r)?;
        let size = std::fs::metadata(&conf).map_err(|e| Error::io("stat mender.conf", e))?.len();
        check(
            r.header("X-Men-File-Size").is_some_and(|s| !s.is_empty() && s == size.to_string()),
            "X-Men-File-Size present (and the file's size)",
            &r,
        )?;
        Ok(())
    })
}

/// `test_download_error_relative_path`.
fn download_error_relative_path(kind: AgentKind) -> Result<(), Error> {
    run_case(kind, "ft-download-relative", Value::Null, |_, dc| {
        let r = dc.download("relative/path")?;
        check_error(&r, 400, "path: must be absolute")?;
        Ok(())
    })
}

/// `test_upload_error_no_such_file_or_directory` (a download of `/does/not/exist`).
fn download_error_no_such_file(kind: AgentKind) -> Result<(), Error> {
    let name = format!("ft-download-enoent-{}", kind.name());
    let env = TestEnv::new(&name)?;
    ensure(!Path::new("/does/not/exist").exists(), "/does/not/exist exists on this machine")?;
    let (mut bed, dc) = device(&env, &name, kind, Value::Null)?;
    let r = dc.download("/does/not/exist")?;
    check_error(&r, 400, "/does/not/exist: no such file or directory")?;
    finish(&env, &mut bed)
}

/// `test_upload_and_download_ok`: 4 MiB random, mode 600, random uid/gid in 100..=200.
fn upload_and_download_ok(kind: AgentKind) -> Result<(), Error> {
    run_case(kind, "ft-up-down-ok", Value::Null, |env, dc| {
        let content = random_bytes(4 * 1024 * 1024)?;
        let ids = random_bytes(2)?;
        let (uid, gid) = (100 + u32::from(ids[0]) % 101, 100 + u32::from(ids[1]) % 101);
        let fname = random_filename()?;
        let path = path_str(&env.subdir("tmp")?.join(&fname));
        let (uid_s, gid_s) = (uid.to_string(), gid.to_string());
        let fields = UploadFields { path: &path, mode: Some("600"), uid: Some(&uid_s), gid: Some(&gid_s) };
        let up = dc.upload(&fields, &mut content.as_slice())?;
        check(up.status == 201, "upload status 201", &up)?;
        mender_connect_interop::wait::for_upload(Path::new(&path))?;
        let r = dc.download(&path)?;
        check(r.status == 200, "download status 200", &r)?;
        check(
            r.header("Content-Disposition") == Some(format!("attachment; filename=\"{fname}\"").as_str()),
            "Content-Disposition",
            &r,
        )?;
        check(r.header("Content-Type") == Some("application/octet-stream"), "Content-Type", &r)?;
        check(r.header("X-Men-File-Mode") == Some("600"), "X-Men-File-Mode 600", &r)?;
        check(r.header("X-Men-File-Uid") == Some(uid_s.as_str()), "X-Men-File-Uid", &r)?;
        check(r.header("X-Men-File-Gid") == Some(gid_s.as_str()), "X-Men-File-Gid", &r)?;
        check(r.header("X-Men-File-Path") == Some(path.as_str()), "X-Men-File-Path", &r)?;
        check(r.header("X-Men-File-Size") == Some("4194304"), "X-Men-File-Size 4194304", &r)?;
        ensure(r.body == content, "downloaded content differs from the uploaded content")?;
        Ok(())
    })
}

/// `test_upload_error_path_is_relative`.
fn upload_error_path_is_relative(kind: AgentKind) -> Result<(), Error> {
    run_case(kind, "ft-upload-relative", Value::Null, |_, dc| {
        let r = dc.upload(&UploadFields::new("relative/path/dummy.txt"), &mut &b"dummy"[..])?;
        check_error(&r, 400, "path: must be absolute")?;
        Ok(())
    })
}

/// `test_upload_error_file_does_not_exist`.
fn upload_error_file_does_not_exist(kind: AgentKind) -> Result<(), Error> {
    let name = format!("ft-upload-enoent-{}", kind.name());
    let env = TestEnv::new(&name)?;
    ensure(!Path::new("/does/not/exist").exists(), "/does/not/exist exists on this machine")?;
    let (mut bed, dc) = device(&env, &name, kind, Value::Null)?;
    let r = dc.upload(&UploadFields::new("/does/not/exist/dummy.txt"), &mut &b"dummy"[..])?;
    check_error(&r, 400, "failed to create target file")?;
    finish(&env, &mut bed)
}

// ---- BaseTestFileTransferLimits ----

/// `test_upload_limits_err_file_outside_chroot`: 4 MiB to `/usr/<rand>` with a chroot.
fn upload_limits_err_file_outside_chroot(kind: AgentKind) -> Result<(), Error> {
    let name = format!("ft-lim-outside-chroot-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let chroot = symlinked_chroot(&env)?;
    let limits = json!({ "Enabled": true, "FileTransfer": { "Chroot": path_str(&chroot) } });
    let (mut bed, dc) = device(&env, &name, kind, limits)?;
    let target = format!("/usr/{}", random_filename()?);
    let content = random_bytes(4 * 1024 * 1024)?;
    let r = dc.upload(&UploadFields::new(&target), &mut content.as_slice())?;
    check(r.status == 400, "status 400", &r)?;
    check(
        r.error().as_deref() == Some("access denied: the target file path is outside chroot"),
        "error == `access denied: the target file path is outside chroot`",
        &r,
    )?;
    ensure(!Path::new(&target).exists(), format!("{target} was created outside the chroot"))?;
    finish(&env, &mut bed)
}

/// `test_upload_limits_ok`: 16 bytes inside the chroot (reached through a symlinked parent).
fn upload_limits_ok(kind: AgentKind) -> Result<(), Error> {
    let name = format!("ft-lim-upload-ok-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let chroot = symlinked_chroot(&env)?;
    let limits = json!({
        "Enabled": true,
        "FileTransfer": { "Chroot": path_str(&chroot), "FollowSymLinks": true },
    });
    let (mut bed, dc) = device(&env, &name, kind, limits)?;
    let target = chroot.join(random_filename()?);
    let content = random_bytes(16)?;
    let r = dc.upload(&UploadFields::new(&path_str(&target)), &mut content.as_slice())?;
    check(r.status == 201, "status 201", &r)?;
    mender_connect_interop::wait::for_upload(&target)?;
    let written = std::fs::read(&target).map_err(|e| Error::io("reading the upload", e))?;
    ensure(written == content, "uploaded content differs")?;
    finish(&env, &mut bed)
}

/// `test_upload_limits_err_file_too_big`: MaxFileSize 15 KiB, 256 KiB upload.
fn upload_limits_err_file_too_big(kind: AgentKind) -> Result<(), Error> {
    let name = format!("ft-lim-too-big-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let limits = json!({
        "Enabled": true,
        "FileTransfer": { "MaxFileSize": 15 * 1024, "FollowSymLinks": true },
    });
    let (mut bed, dc) = device(&env, &name, kind, limits)?;
    let target = env.subdir("tmp")?.join(random_filename()?);
    let content = b"ok".repeat(128 * 1024);
    let r = dc.upload(&UploadFields::new(&path_str(&target)), &mut content.as_slice())?;
    check(r.status == 400, "status 400", &r)?;
    check(
        r.error().as_deref() == Some("failed to write file chunk: transmitted bytes limit exhausted"),
        "error == `failed to write file chunk: transmitted bytes limit exhausted`",
        &r,
    )?;
    ensure(!target.exists(), "the refused upload left a file at the target")?;
    finish(&env, &mut bed)
}

/// `test_upload_limits_err_max_bytes_per_minute_exceeded`, scaled to fit 90 s: MaxBytesRxPerMinute
/// 16 KiB as upstream, but two 192 KiB uploads instead of 512 KiB (the reference's 1-minute
/// moving average of bytes per 5 s tick then peaks near 31 KB instead of 84 KB and decays below
/// 16 KiB in about 40 s instead of 100 s). After the average has been computed (upstream sleeps
/// 60 s; one 5 s tick is enough) a third upload is refused with the exact text; once the average
/// decays, a small upload succeeds (upstream: after 64 s; here polled, bounded).
fn upload_limits_err_max_bytes_per_minute_exceeded(kind: AgentKind) -> Result<(), Error> {
    let name = format!("ft-lim-rx-minute-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let limits = json!({
        "Enabled": true,
        "FileTransfer": { "FollowSymLinks": true, "Counters": { "MaxBytesRxPerMinute": 16 * 1024 } },
    });
    let (mut bed, dc) = device(&env, &name, kind, limits)?;
    let tmp = env.subdir("tmp")?;
    let fname = random_filename()?;
    let content = b"ok".repeat(96 * 1024);
    for i in 0..2 {
        let target = path_str(&tmp.join(format!("{fname}-{i}.bin")));
        // Upstream ignores these answers too.
        dc.upload(&UploadFields::new(&target), &mut content.as_slice())?;
    }
    // Two 5 s ticks of the counters' clock, so the average includes both uploads.
    std::thread::sleep(std::time::Duration::from_secs(11));
    let target = path_str(&tmp.join(format!("{fname}-2.bin")));
    let r = dc.upload(&UploadFields::new(&target), &mut content.as_slice())?;
    check(r.status == 400, "third upload: status 400", &r)?;
    check(
        r.error().as_deref() == Some("transmitted bytes limit exhausted"),
        "third upload: error == `transmitted bytes limit exhausted`",
        &r,
    )?;
    let small = b"ok".repeat(64);
    let target = path_str(&tmp.join(format!("{fname}-a.bin")));
    let mut refused = 0u32;
    let last = mender_connect_interop::wait::until(
        "a small upload to be allowed again as the average decays",
        std::time::Duration::from_secs(75),
        std::time::Duration::from_secs(5),
        || {
            let r = dc.upload(&UploadFields::new(&target), &mut small.as_slice())?;
            if r.status == 201 {
                return Ok(Some(r));
            }
            check(
                r.status == 400 && r.error().as_deref() == Some("transmitted bytes limit exhausted"),
                "while over the limit: 400 `transmitted bytes limit exhausted`",
                &r,
            )?;
            refused += 1;
            Ok(None)
        },
    )?;
    check(last.status == 201, "small upload after the decay: status 201", &last)?;
    eprintln!("{}: {refused} small uploads refused before the average decayed", kind.name());
    finish(&env, &mut bed)
}

/// `test_upload_limits_err_preserve_modes`: PreserveMode, upload with mode 4711 → `-rws--x--x`,
/// 201. `allow_suid` adds `AllowSuid: true` (our agent refuses set-uid uploads without it).
fn upload_limits_preserve_modes(kind: AgentKind, allow_suid: bool) -> Result<(), Error> {
    let name = format!("ft-lim-preserve-mode-{}-{allow_suid}", kind.name());
    let env = TestEnv::new(&name)?;
    let chroot = symlinked_chroot(&env)?;
    let mut ft = json!({ "Chroot": path_str(&chroot), "FollowSymLinks": true, "PreserveMode": true });
    if allow_suid {
        ft["AllowSuid"] = json!(true);
    }
    let (mut bed, dc) = device(&env, &name, kind, json!({ "Enabled": true, "FileTransfer": ft }))?;
    let target = chroot.join(format!("{}.bin", random_filename()?));
    let content = random_bytes(16)?;
    let target_s = path_str(&target);
    let fields = UploadFields { mode: Some("4711"), ..UploadFields::new(&target_s) };
    let r = dc.upload(&fields, &mut content.as_slice())?;
    check(r.status == 201, "status 201", &r)?;
    mender_connect_interop::wait::for_upload(&target)?;
    let mode = std::fs::symlink_metadata(&target).map(|m| m.mode());
    ensure(
        mode.as_ref().is_ok_and(|m| m & 0o170000 == 0o100000 && m & 0o7777 == 0o4711),
        format!("{}: mode is {mode:?}, expected -rws--x--x (0o104711)", target.display()),
    )?;
    check(r.status == 201, "status 201", &r)?;
    finish(&env, &mut bed)
}

/// Our agent's deliberate difference: the suite's preserve-modes configuration (no `AllowSuid`)
/// makes it refuse the set-uid upload and leave nothing at the target.
fn upload_suid_refused_without_allow_suid(kind: AgentKind) -> Result<(), Error> {
    let name = format!("ft-lim-suid-refused-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let chroot = symlinked_chroot(&env)?;
    let ft = json!({ "Chroot": path_str(&chroot), "FollowSymLinks": true, "PreserveMode": true });
    let (mut bed, dc) = device(&env, &name, kind, json!({ "Enabled": true, "FileTransfer": ft }))?;
    let target = chroot.join(format!("{}.bin", random_filename()?));
    let target_s = path_str(&target);
    let fields = UploadFields { mode: Some("4711"), ..UploadFields::new(&target_s) };
    let r = dc.upload(&fields, &mut &b"0123456789abcdef"[..])?;
    check(r.status == 400, "status 400", &r)?;
    check(
        r.error().as_deref() == Some("access denied: the set uid mode is forbidden"),
        "error == `access denied: the set uid mode is forbidden`",
        &r,
    )?;
    ensure(!target.exists(), "the refused set-uid upload left a file")?;
    finish(&env, &mut bed)
}

fn last_id(file: &str) -> Result<u32, Error> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(format!("reading {file}"), e))?;
    text.lines()
        .rfind(|l| !l.trim().is_empty())
        .and_then(|l| l.split(':').nth(2))
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| Error::Check(format!("no id in the last line of {file}")))
}

/// `test_upload_limits_preserve_owner_and_group`: PreserveOwner; uid/gid of the last entries of
/// /etc/passwd and /etc/group.
fn upload_limits_preserve_owner_and_group(kind: AgentKind) -> Result<(), Error> {
    let name = format!("ft-lim-preserve-owner-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let chroot = symlinked_chroot(&env)?;
    let limits = json!({
        "Enabled": true,
        "FileTransfer": { "Chroot": path_str(&chroot), "FollowSymLinks": true, "PreserveOwner": true },
    });
    let (mut bed, dc) = device(&env, &name, kind, limits)?;
    let (uid, gid) = (last_id("/etc/passwd")?, last_id("/etc/group")?);
    let target = chroot.join(format!("{}.bin", random_filename()?));
    let content = random_bytes(16)?;
    let (uid_s, gid_s) = (uid.to_string(), gid.to_string());
    let target_s = path_str(&target);
    let fields = UploadFields { uid: Some(&uid_s), gid: Some(&gid_s), ..UploadFields::new(&target_s) };
    let r = dc.upload(&fields, &mut content.as_slice())?;
    check(r.status == 201, "status 201", &r)?;
    mender_connect_interop::wait::for_upload(&target)?;
    let meta = std::fs::symlink_metadata(&target).map_err(|e| Error::io("stat the upload", e))?;
    ensure(
        (meta.uid(), meta.gid()) == (uid, gid),
        format!("owner/group {} {}, expected {uid} {gid}", meta.uid(), meta.gid()),
    )?;
    finish(&env, &mut bed)
}

/// The suite's `assert_forbidden` under `xfail(raises=NotImplementedError)`: 403 with `message`
/// passes; 500 is the expected failure (then the device's `message` must be in the mock's log);
/// anything else fails.
fn assert_forbidden(bed: &Testbed, r: &Answer, path: &str, message: &str) -> Result<&'static str, Error> {
    if r.status == 403 {
        check(r.error().as_deref() == Some(message), &format!("403 error == `{message}`"), r)?;
        return Ok("pass (403)");
    }
    check(r.status == 500, "status 403 (pass) or 500 (xfail, MEN-4659)", r)?;
    let log = bed.mock.log_text();
    ensure(
        log.lines().any(|l| l.contains(&format!("download {}:{path}: failed: 500 {message}", bed.device_id))),
        format!("500, but the mock's log lacks the device's error `{message}` for {path}"),
    )?;
    Ok("xfail (500, device message as expected)")
}

/// What a refused-download case sets up: the limits and the path to download.
#[derive(Clone, Copy)]
enum Refusal {
    OutsideChroot,
    MaxFileSize,
    FollowLink,
    FollowLinkOnPathPart,
    OwnerMismatch,
    GroupMismatch,
}

fn download_refused(kind: AgentKind, case: Refusal) -> Result<(), Error> {
    let tag = match case {
        Refusal::OutsideChroot => "outside-chroot",
        Refusal::MaxFileSize => "max-file-size",
        Refusal::FollowLink => "follow-link",
        Refusal::FollowLinkOnPathPart => "follow-link-part",
        Refusal::OwnerMismatch => "owner",
        Refusal::GroupMismatch => "group",
    };
    let name = format!("ft-lim-get-{tag}-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let tmp = env.subdir("tmp")?;
    let fname = random_filename()?;
    let (ft, path, message) = match case {
        Refusal::OutsideChroot => (
            json!({ "Chroot": path_str(&symlinked_chroot(&env)?) }),
            "/etc/profile".to_owned(),
            "access denied: the target file path is outside chroot",
        ),
        Refusal::MaxFileSize => (
            json!({ "MaxFileSize": 2 }),
            "/etc/profile".to_owned(),
            "access denied: the file size is over the limit",
        ),
        Refusal::FollowLink => {
            let link = tmp.join(format!("{fname}-profile-link"));
            std::os::unix::fs::symlink("/etc/profile", &link).map_err(|e| Error::io("ln -s", e))?;
            (
                json!({ "FollowSymLinks": false }),
                path_str(&link),
                "access denied: forbidden to follow the link",
            )
        }
        Refusal::FollowLinkOnPathPart => {
            let dir = tmp.join(&fname);
            std::fs::create_dir(&dir).map_err(|e| Error::io("mkdir", e))?;
            std::os::unix::fs::symlink("/etc", dir.join("etc")).map_err(|e| Error::io("ln -s /etc", e))?;
            (
                json!({ "FollowSymLinks": false }),
                path_str(&dir.join("etc/profile")),
                "access denied: forbidden to follow the link",
            )
        }
        Refusal::OwnerMismatch => (
            json!({ "OwnerGet": ["someotheruser"] }),
            "/etc/profile".to_owned(),
            "access denied: the file owner does not match",
        ),
        Refusal::GroupMismatch => (
            json!({ "GroupGet": ["someothergroup"] }),
            "/etc/profile".to_owned(),
            "access denied: the file group does not match",
        ),
    };
    let (mut bed, dc) = device(&env, &name, kind, json!({ "Enabled": true, "FileTransfer": ft }))?;
    let r = dc.download(&path)?;
    ensure(!r.text().contains("PS1="), "the refused download delivered the file")?;
    let verdict = assert_forbidden(&bed, &r, &path, message)?;
    eprintln!("{name}: {verdict}");
    // Pinned per agent: the reference refuses every case at `get_file` without a status code
    // (500); ours refuses chroot and symlink cases at `stat` with code 500 (no metadata leak, same
    // answer) and the other limits at `get_file` with code 403 (the suite's ideal).
    let forbidden = kind == AgentKind::Rust
        && matches!(case, Refusal::MaxFileSize | Refusal::OwnerMismatch | Refusal::GroupMismatch);
    ensure(
        (r.status == 403) == forbidden,
        format!("{name}: expected {}, got {verdict}", if forbidden { "403" } else { "500" }),
    )?;
    finish(&env, &mut bed)
}

/// `test_filetransfer_limits_download_ok_allowed_to_follow_symlink`.
fn download_ok_allowed_to_follow_symlink(kind: AgentKind) -> Result<(), Error> {
    let name = format!("ft-lim-get-symlink-ok-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let (mut bed, dc) =
        device(&env, &name, kind, json!({ "Enabled": true, "FileTransfer": { "FollowSymLinks": true } }))?;
    let link = env.subdir("tmp")?.join(format!("{}.symlink", random_filename()?));
    std::os::unix::fs::symlink("/etc/profile", &link).map_err(|e| Error::io("ln -s", e))?;
    let r = dc.download(&path_str(&link))?;
    check(r.status == 200, "status 200", &r)?;
    check(r.text().contains("PS1="), "content contains PS1=", &r)?;
    finish(&env, &mut bed)
}

/// `test_filetransfer_limits_download_err_not_a_regular_file`: a FIFO.
fn download_err_not_a_regular_file(kind: AgentKind) -> Result<(), Error> {
    let name = format!("ft-lim-get-fifo-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let (mut bed, dc) =
        device(&env, &name, kind, json!({ "Enabled": true, "FileTransfer": { "RegularFilesOnly": true } }))?;
    let fifo = env.subdir("tmp")?.join(format!("{}.fifo", random_filename()?));
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .map_err(|e| Error::io("mkfifo", e.into()))?;
    let r = dc.download(&path_str(&fifo))?;
    check(r.status == 400, "status 400", &r)?;
    check(
        r.error().is_some_and(|e| e.ends_with("path is not a regular file")),
        "error ends with `path is not a regular file`",
        &r,
    )?;
    finish(&env, &mut bed)
}

/// `test_filetransfer_limits_download_ok_file_owner_match`.
fn download_ok_file_owner_match(kind: AgentKind) -> Result<(), Error> {
    let name = format!("ft-lim-get-owner-ok-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let limits = json!({ "Enabled": true, "FileTransfer": { "OwnerGet": ["someotheruser", "root"] } });
    let (mut bed, dc) = device(&env, &name, kind, limits)?;
    let r = dc.download("/etc/profile")?;
    check(r.status == 200, "status 200", &r)?;
    check(r.text().contains("PS1="), "content contains PS1=", &r)?;
    finish(&env, &mut bed)
}

// ---- the same through Debian's mender-cli 1.9.0 ----

fn logged_in_cli(env: &TestEnv, bed: &Testbed) -> Result<MenderCli, Error> {
    let cli = MenderCli::new(env, bed.mock.url())?;
    cli.login(env, USER_EMAIL, USER_PASSWORD)?;
    Ok(cli)
}

fn cp_fails_with(env: &TestEnv, cli: &MenderCli, src: &str, dst: &str, expected: &str) -> Result<(), Error> {
    let done = cli.cp(env, src, dst)?;
    ensure(
        done.status.code() == Some(1) && done.output.contains(expected),
        format!(
            "mender-cli cp {src} {dst}: expected exit 1 with {expected:?}, got {} with: {}",
            done.status,
            done.output_without_harness()
        ),
    )
}

/// mendersoftware/mender-cli `tests/integration/tests/test_filetransfer_cli.py` (the cp half of
/// the suite, moved there from integration): a 40 MiB file up and back (md5 there, sha256 here),
/// an upload into a missing directory (`failed to create target file`), and two copies with a
/// missing local source (`no such file or directory`).
fn filetransfer_cli(kind: AgentKind) -> Result<(), Error> {
    let name = format!("ft-cli-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let (mut bed, _dc) = device(&env, &name, kind, Value::Null)?;
    let cli = logged_in_cli(&env, &bed)?;
    let local = env.subdir("user-side")?;
    let original = local.join("random.bin");
    std::fs::write(&original, random_bytes(40 * 1024 * 1024)?).map_err(|e| Error::io("writing 40 MiB", e))?;
    let remote = env.subdir("tmp")?.join("random.bin");
    let dev = &bed.device_id;
    let up = cli.cp(&env, &path_str(&original), &format!("{dev}:{}", remote.display()))?;
    ensure(up.status.success(), format!("cp up: {}", up.output_without_harness()))?;
    mender_connect_interop::wait::for_upload(&remote)?;
    let back = local.join("random.bin.download");
    let down = cli.cp(&env, &format!("{dev}:{}", remote.display()), &path_str(&back))?;
    ensure(down.status.success(), format!("cp down: {}", down.output_without_harness()))?;
    ensure(sha256_file(&original)? == sha256_file(&back)?, "the 40 MiB round trip differs")?;
    let missing_dir = env.dir().join("tmp/path-does-not-exist/random.bin");
    cp_fails_with(
        &env,
        &cli,
        &path_str(&original),
        &format!("{dev}:{}", missing_dir.display()),
        "failed to create target file",
    )?;
    let no_local = local.join("does-not-exist.bin");
    cp_fails_with(
        &env,
        &cli,
        &path_str(&no_local),
        &format!("{dev}:{}", remote.display()),
        "no such file or directory",
    )?;
    cp_fails_with(
        &env,
        &cli,
        &path_str(&no_local),
        &format!("{dev}:{}", missing_dir.display()),
        "no such file or directory",
    )?;
    finish(&env, &mut bed)
}

/// The limits cases whose device error reaches a mender-cli user verbatim (uploads: the server
/// answers 400 with the device's text): outside the chroot, over MaxFileSize; and a download of
/// a FIFO under RegularFilesOnly (`path is not a regular file`).
fn mender_cli_limits(kind: AgentKind) -> Result<(), Error> {
    let name = format!("ft-cli-limits-{}", kind.name());
    let env = TestEnv::new(&name)?;
    let chroot = symlinked_chroot(&env)?;
    let limits = json!({
        "Enabled": true,
        "FileTransfer": {
            "Chroot": path_str(&chroot), "FollowSymLinks": true, "MaxFileSize": 15 * 1024, "RegularFilesOnly": true,
        },
    });
    let (mut bed, _dc) = device(&env, &name, kind, limits)?;
    let cli = logged_in_cli(&env, &bed)?;
    let dev = &bed.device_id;
    let local = env.subdir("user-side")?;
    let big = local.join("big.bin");
    std::fs::write(&big, b"ok".repeat(128 * 1024)).map_err(|e| Error::io("writing 256 KiB", e))?;
    let small = local.join("small.bin");
    std::fs::write(&small, random_bytes(16)?).map_err(|e| Error::io("writing 16 bytes", e))?;
    let outside = format!("/usr/{}", random_filename()?);
    cp_fails_with(
        &env,
        &cli,
        &path_str(&small),
        &format!("{dev}:{outside}"),
        "access denied: the target file path is outside chroot",
    )?;
    ensure(!Path::new(&outside).exists(), format!("{outside} was created"))?;
    let too_big = chroot.join("big.bin");
    cp_fails_with(
        &env,
        &cli,
        &path_str(&big),
        &format!("{dev}:{}", too_big.display()),
        "failed to write file chunk: transmitted bytes limit exhausted",
    )?;
    ensure(!too_big.exists(), "the refused upload left a file")?;
    let fifo = chroot.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .map_err(|e| Error::io("mkfifo", e.into()))?;
    cp_fails_with(
        &env,
        &cli,
        &format!("{dev}:{}", fifo.display()),
        &path_str(&local.join("never")),
        "path is not a regular file",
    )?;
    let ok = chroot.join("small.bin");
    let up = cli.cp(&env, &path_str(&small), &format!("{dev}:{}", ok.display()))?;
    ensure(up.status.success(), format!("cp inside the chroot: {}", up.output_without_harness()))?;
    finish(&env, &mut bed)
}

macro_rules! both_agents {
    ($($case:ident => $body:expr;)*) => {
        mod go_agent {
            use super::*;
            $(#[test] fn $case() -> Result<(), Error> { let kind = AgentKind::Go; $body(kind) })*
        }
        mod rust_agent {
            use super::*;
            $(#[test] fn $case() -> Result<(), Error> { let kind = AgentKind::Rust; $body(kind) })*
        }
    };
}

both_agents! {
    test_download_ok => download_ok;
    test_download_error_relative_path => download_error_relative_path;
    test_upload_error_no_such_file_or_directory => download_error_no_such_file;
    test_upload_and_download_ok => upload_and_download_ok;
    test_upload_error_path_is_relative => upload_error_path_is_relative;
    test_upload_error_file_does_not_exist => upload_error_file_does_not_exist;
    test_upload_limits_err_file_outside_chroot => upload_limits_err_file_outside_chroot;
    test_upload_limits_ok => upload_limits_ok;
    test_upload_limits_err_file_too_big => upload_limits_err_file_too_big;
    test_upload_limits_err_max_bytes_per_minute_exceeded => upload_limits_err_max_bytes_per_minute_exceeded;
    test_upload_limits_preserve_owner_and_group => upload_limits_preserve_owner_and_group;
    test_filetransfer_limits_download_err_outside_chroot => |k| download_refused(k, Refusal::OutsideChroot);
    test_filetransfer_limits_download_err_max_file_size => |k| download_refused(k, Refusal::MaxFileSize);
    test_filetransfer_limits_download_err_not_allowed_to_follow_link => |k| download_refused(k, Refusal::FollowLink);
    test_filetransfer_limits_download_err_not_allowed_to_follow_link_on_path_part => |k| download_refused(k, Refusal::FollowLinkOnPathPart);
    test_filetransfer_limits_download_err_owner_mismatch => |k| download_refused(k, Refusal::OwnerMismatch);
    test_filetransfer_limits_download_err_group_mismatch => |k| download_refused(k, Refusal::GroupMismatch);
    test_filetransfer_limits_download_ok_allowed_to_follow_symlink => download_ok_allowed_to_follow_symlink;
    test_filetransfer_limits_download_err_not_a_regular_file => download_err_not_a_regular_file;
    test_filetransfer_limits_download_ok_file_owner_match => download_ok_file_owner_match;
    test_filetransfer_cli => filetransfer_cli;
    mender_cli_cp_limits => mender_cli_limits;
}

/// sid's Go mender-connect 2.3.0, the second reference (issue 20). It passed every case when the
/// suite was extended (2026-12-03, the same results as 2.1.0: it vendors the same file-transfer
/// code); CI runs a download, an upload, mender-cli `cp` and one refusal each way, the rest with
/// `--ignored` (CI time).
macro_rules! go23_agent {
    (ci { $($case:ident => $body:expr;)* } ignored { $($icase:ident => $ibody:expr;)* }) => {
        mod go23_agent {
            use super::*;
            $(#[test] fn $case() -> Result<(), Error> { let kind = AgentKind::Go23; $body(kind) })*
            $(#[test] #[ignore = "same as 2.1.0 (checked 2026-12-03); CI time"]
              fn $icase() -> Result<(), Error> { let kind = AgentKind::Go23; $ibody(kind) })*
        }
    };
}

go23_agent! {
  ci {
    test_download_ok => download_ok;
    test_upload_and_download_ok => upload_and_download_ok;
    test_upload_limits_err_file_outside_chroot => upload_limits_err_file_outside_chroot;
    test_filetransfer_limits_download_err_max_file_size => |k| download_refused(k, Refusal::MaxFileSize);
    test_filetransfer_cli => filetransfer_cli;
  }
  ignored {
    test_download_error_relative_path => download_error_relative_path;
    test_upload_error_no_such_file_or_directory => download_error_no_such_file;
    test_upload_error_path_is_relative => upload_error_path_is_relative;
    test_upload_error_file_does_not_exist => upload_error_file_does_not_exist;
    test_upload_limits_ok => upload_limits_ok;
    test_upload_limits_err_file_too_big => upload_limits_err_file_too_big;
    test_upload_limits_err_max_bytes_per_minute_exceeded => upload_limits_err_max_bytes_per_minute_exceeded;
    test_upload_limits_preserve_owner_and_group => upload_limits_preserve_owner_and_group;
    test_filetransfer_limits_download_err_outside_chroot => |k| download_refused(k, Refusal::OutsideChroot);
    test_filetransfer_limits_download_err_not_allowed_to_follow_link => |k| download_refused(k, Refusal::FollowLink);
    test_filetransfer_limits_download_err_not_allowed_to_follow_link_on_path_part => |k| download_refused(k, Refusal::FollowLinkOnPathPart);
    test_filetransfer_limits_download_err_owner_mismatch => |k| download_refused(k, Refusal::OwnerMismatch);
    test_filetransfer_limits_download_err_group_mismatch => |k| download_refused(k, Refusal::GroupMismatch);
    test_filetransfer_limits_download_ok_allowed_to_follow_symlink => download_ok_allowed_to_follow_symlink;
    test_filetransfer_limits_download_err_not_a_regular_file => download_err_not_a_regular_file;
    test_filetransfer_limits_download_ok_file_owner_match => download_ok_file_owner_match;
    mender_cli_cp_limits => mender_cli_limits;
  }
}

/// `test_upload_limits_err_preserve_modes` as upstream (no `AllowSuid`): the reference's behaviour.
#[test]
fn go_agent_test_upload_limits_err_preserve_modes() -> Result<(), Error> {
    upload_limits_preserve_modes(AgentKind::Go, false)
}

#[test]
#[ignore = "same as 2.1.0 (checked 2026-12-03); CI time"]
fn go23_agent_test_upload_limits_err_preserve_modes() -> Result<(), Error> {
    upload_limits_preserve_modes(AgentKind::Go23, false)
}

/// The same case for our agent needs `AllowSuid: true` (set-uid uploads are refused by default).
#[test]
fn rust_agent_test_upload_limits_err_preserve_modes_with_allow_suid() -> Result<(), Error> {
    upload_limits_preserve_modes(AgentKind::Rust, true)
}

/// With the suite's exact configuration our agent refuses the set-uid upload.
#[test]
fn rust_agent_refuses_suid_upload_without_allow_suid() -> Result<(), Error> {
    upload_suid_refused_without_allow_suid(AgentKind::Rust)
}
