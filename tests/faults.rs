//! Faults around files: a conversion interrupted by SIGINT/SIGTERM or by a
//! full disk (a file-size limit, `ulimit -f`) leaves neither its output nor
//! its temporary file; a model or sidecar truncated while `meki-run` has it
//! mapped ends in a message naming the file and exit status 1 (not a silent
//! SIGBUS); Ctrl-C in chat ends only the current answer.

use std::io::{BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const CONVERT: &str = env!("CARGO_BIN_EXE_meki-convert");
const RUN: &str = env!("CARGO_BIN_EXE_meki-run");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh empty directory for one test.
fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("faults")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The MeKi demo fixture converted to a backbone + sidecar pair, and to one
/// file with the tables inside (the `Once` keeps parallel tests from racing).
fn tiny_models() -> &'static (PathBuf, PathBuf, PathBuf) {
    static M: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    M.get_or_init(|| {
        let d = tmp("models");
        let fixture = root().join("tests/fixtures/meki/hf_demo");
        let conv = |out: &Path, split: bool| {
            meki::convert::convert_checkpoint(&meki::convert::CheckpointOptions {
                input: fixture.clone(),
                output: out.to_path_buf(),
                backbone_type: "f32".into(),
                table_type: "f32".into(),
                meki_proj_type: None,
                tokenizer: None,
                base: None,
                split_tables: split,
                threads: 1,
                meki_dim: None,
                progress: false,
            })
            .unwrap();
        };
        conv(&d.join("whole.gguf"), false);
        conv(&d.join("base.gguf"), true);
        (
            d.join("whole.gguf"),
            d.join("base.gguf"),
            d.join("base.meki.gguf"),
        )
    })
}

fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("process still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Quantizes the repository's model (tens of MB: long enough to interrupt)
/// and sends `sig` as soon as the temporary output file exists.
fn interrupted_quantize(sig: i32, name: &str) {
    let d = tmp(name);
    let out = d.join("out.gguf");
    let mut child = Command::new(CONVERT)
        .args(["quantize"])
        .arg(root().join("models/meki-small.gguf"))
        .arg(&out)
        .args(["q4_0", "-t", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while entries(&d).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no temporary file appeared"
        );
        assert!(child.try_wait().unwrap().is_none(), "quantize ended early");
        std::thread::sleep(Duration::from_millis(1));
    }
    let tmp_name = entries(&d)[0].clone();
    assert!(tmp_name.starts_with(".out.gguf.tmp-"), "{tmp_name}");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, sig) };
    let st = wait_timeout(&mut child, Duration::from_secs(60));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(st.signal(), Some(sig), "ends by the signal, {st:?} {err}");
    assert_eq!(entries(&d), Vec::<String>::new(), "files left behind");
}

#[test]
fn sigint_during_conversion_leaves_no_file() {
    interrupted_quantize(libc::SIGINT, "sigint");
}

#[test]
fn sigterm_during_conversion_leaves_no_file() {
    interrupted_quantize(libc::SIGTERM, "sigterm");
}

/// Runs meki-convert with a file-size limit of `limit` bytes.
fn convert_with_fsize_limit(
    args: &[&std::ffi::OsStr],
    limit: u64,
) -> (std::process::ExitStatus, String) {
    let mut cmd = Command::new(CONVERT);
    cmd.args(args);
    // SAFETY: only setrlimit runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn full_disk_during_conversion_leaves_no_file() {
    // A checkpoint conversion and a quantization, each stopped at 64 KiB.
    let d = tmp("fsize");
    let out = d.join("out.gguf");
    let fixture = root().join("tests/fixtures/meki/hf_demo");
    let (st, err) = convert_with_fsize_limit(
        &[
            "checkpoint".as_ref(),
            fixture.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
            "--type".as_ref(),
            "f32".as_ref(),
        ],
        64 << 10,
    );
    assert_eq!(st.code(), Some(1), "{st:?} {err}");
    assert!(
        err.contains("File too large") || err.contains("EFBIG"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(entries(&d), Vec::<String>::new(), "files left behind");

    let (st, err) = convert_with_fsize_limit(
        &[
            "quantize".as_ref(),
            root().join("models/meki-small.gguf").as_os_str(),
            out.as_os_str(),
            "q8_0".as_ref(),
            "-t".as_ref(),
            "1".as_ref(),
        ],
        64 << 10,
    );
    assert_eq!(st.code(), Some(1), "{st:?} {err}");
    assert!(err.contains("File too large"), "{err}");
    assert_eq!(entries(&d), Vec::<String>::new(), "files left behind");
}

/// A chat session of meki-run on `model` (and `sidecar`), stdin piped.
struct ChatProc {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: std::sync::mpsc::Receiver<u8>,
}

impl ChatProc {
    fn start(model: &Path, sidecar: Option<&Path>, n_predict: &str) -> ChatProc {
        let mut cmd = Command::new(RUN);
        cmd.arg("-m").arg(model);
        if let Some(s) = sidecar {
            cmd.arg("--meki").arg(s);
        }
        cmd.args([
            "--chat", "-n", n_predict, "-t", "1", "-c", "256", "--seed", "1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            while out.read(&mut b).map(|n| n == 1).unwrap_or(false) {
                if tx.send(b[0]).is_err() {
                    break;
                }
            }
        });
        ChatProc {
            child,
            stdin,
            stdout: rx,
        }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Waits for one whole answer (the line break meki-run prints after it).
    fn read_answer(&mut self) -> String {
        let mut s = Vec::new();
        loop {
            match self.stdout.recv_timeout(Duration::from_secs(60)) {
                Ok(b'\n') if !s.is_empty() => return String::from_utf8_lossy(&s).into(),
                Ok(b) => s.push(b),
                Err(_) => panic!("no answer; got {:?}", String::from_utf8_lossy(&s)),
            }
        }
    }

    fn finish(mut self) -> (std::process::ExitStatus, String) {
        drop(self.stdin);
        let st = wait_timeout(&mut self.child, Duration::from_secs(60));
        let mut err = String::new();
        BufReader::new(self.child.stderr.take().unwrap())
            .read_to_string(&mut err)
            .unwrap();
        (st, err)
    }
}

/// Truncates `victim` (a copy) while meki-run chats with it mapped.
fn truncated_while_mapped(name: &str, truncate_sidecar: bool) {
    let (whole, base, side) = tiny_models();
    let d = tmp(name);
    let model = d.join("model.gguf");
    let sidecar = d.join("model.meki.gguf");
    if truncate_sidecar {
        std::fs::copy(base, &model).unwrap();
        std::fs::copy(side, &sidecar).unwrap();
    } else {
        std::fs::copy(whole, &model).unwrap();
    }
    let mut chat = ChatProc::start(&model, truncate_sidecar.then_some(sidecar.as_path()), "4");
    chat.say("hello there");
    let _ = chat.read_answer();
    let victim = if truncate_sidecar { &sidecar } else { &model };
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(victim)
        .unwrap();
    f.set_len(4096).unwrap();
    drop(f);
    chat.say("the quick brown fox jumps over the lazy dog, again and again");
    let (st, err) = chat.finish();
    assert_eq!(st.signal(), None, "died of a signal: {st:?} {err}");
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains(&victim.display().to_string()) && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn model_truncated_while_mapped_is_reported() {
    truncated_while_mapped("trunc_model", false);
}

#[test]
fn sidecar_truncated_while_mapped_is_reported() {
    truncated_while_mapped("trunc_side", true);
}

#[test]
fn sigint_in_chat_ends_only_the_answer() {
    let (whole, _, _) = tiny_models();
    // In-process: a writer that raises the stop flag at the first token of
    // the answer, as the Ctrl-C handler does.
    let model = meki::model::Model::open_with(whole, &meki::model::MekiSource::Auto, 1).unwrap();
    let tok = meki::tokenizer::Tokenizer::from_gguf(&model.file).unwrap();
    let src = model
        .file
        .metadata()
        .get_str("tokenizer.chat_template")
        .unwrap()
        .to_string();
    let template = meki::chat::ChatTemplate::new(&src, &tok).unwrap();
    let session = meki::model::Session::new(&model, 256, meki::model::KvType::F32);
    let mut chat = meki::chat::Chat::new(session, &tok, template);
    let mut sampler = meki::sampler::Sampler::new(meki::sampler::SamplerParams {
        temp: 0.0,
        ..Default::default()
    });
    struct StopAfterFirst<'a>(&'a AtomicBool, usize);
    impl Write for StopAfterFirst<'_> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if !b.is_empty() {
                self.1 += 1;
                self.0.store(true, Ordering::SeqCst);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let stop = AtomicBool::new(false);
    // The same question, uninterrupted, in a conversation of its own.
    let full = {
        let session = meki::model::Session::new(&model, 256, meki::model::KvType::F32);
        let template = meki::chat::ChatTemplate::new(&src, &tok).unwrap();
        let mut c = meki::chat::Chat::new(session, &tok, template);
        let mut s = meki::sampler::Sampler::new(meki::sampler::SamplerParams {
            temp: 0.0,
            ..Default::default()
        });
        c.reply("tell me a long story", &mut s, 50, &stop, &mut Vec::new())
            .unwrap()
    };
    let mut w = StopAfterFirst(&stop, 0);
    let cut = chat
        .reply("tell me a long story", &mut sampler, 50, &stop, &mut w)
        .unwrap();
    // One token's text, then at most the decoder's tail.
    assert!(w.1 <= 2, "{} writes after the stop", w.1);
    assert!(
        cut.len() < full.len() && full.starts_with(&cut),
        "cut {cut:?} vs full {full:?}"
    );
    // A Ctrl-C pressed while the user was typing (flag already raised when
    // the answer starts) is forgotten: it does not cut the next answer.
    stop.store(true, Ordering::SeqCst);
    let mut sink = Vec::new();
    let next = chat
        .reply("and another", &mut sampler, 4, &stop, &mut sink)
        .unwrap();
    assert!(!next.is_empty(), "a stale Ctrl-C cut the next answer");
    // The conversation goes on: the next answer runs to its limit.
    stop.store(false, Ordering::SeqCst);
    let mut sink = Vec::new();
    chat.reply("go on", &mut sampler, 8, &stop, &mut sink)
        .unwrap();
    assert_eq!(chat.messages.len(), 6, "three questions, three answers");

    // The process: SIGINT while an answer is being written or while waiting
    // for input leaves meki-run running; /exit then ends it with status 0.
    let mut p = ChatProc::start(whole, None, "8");
    p.say("hello");
    let _ = p.read_answer();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(200));
    p.say("still there?");
    let _ = p.read_answer();
    p.say("/exit");
    let (st, err) = p.finish();
    assert_eq!(st.code(), Some(0), "{st:?} {err}");
}
