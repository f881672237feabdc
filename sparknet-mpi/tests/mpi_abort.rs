//! A rank that fails ends the whole MPI job with a non-zero exit within seconds, instead of
//! leaving its peer waiting in a collective forever.
//!
//! This test binary has its own `main` (no libtest). Run plainly, it starts itself under
//! `mpirun -n 2` once per failure mode, with `--rank-role <mode>`: rank 1 fails (calls
//! [`Collective::abort`], panics, or dies by `SIGABRT` like a killed process) while rank 0 waits in
//! an allreduce that can only complete if rank 1 joins. Without `mpirun` (or the launcher named by
//! `MPIRUN`) on the `PATH` it prints a SKIPPED line (a failure when `SPARKNET_REQUIRE_MPI=1`, as in
//! CI).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use sparknet_mpi::{Collective, MpiComm};

const MODES: [&str; 3] = ["abort", "panic", "crash"];
/// The failing rank's message, which must reach the job's output.
const REASON: &str = "deliberate failure of rank 1";
/// How long the job may take to end (MPI start-up included).
const LIMIT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--rank-role") {
        return rank_role(args.get(i + 1).map(String::as_str).unwrap_or(""));
    }
    match parent() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("mpi_abort: FAILED: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// What each rank of the job does.
fn rank_role(mode: &str) -> ExitCode {
    let comm = match MpiComm::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mpi_abort child: {e}");
            return ExitCode::from(3);
        }
    };
    if comm.size() != 2 {
        eprintln!("mpi_abort child: expected 2 ranks, got {}", comm.size());
        return ExitCode::from(4);
    }
    if comm.rank() == 1 {
        std::thread::sleep(Duration::from_millis(300));
        match mode {
            "abort" => {
                let _ = comm.abort(REASON);
            }
            "panic" => panic!("{REASON}"),
            "crash" => {
                eprintln!("{REASON}: SIGABRT");
                std::process::abort();
            }
            _ => eprintln!("mpi_abort child: unknown mode {mode:?}"),
        }
        return ExitCode::from(5);
    }
    let mut w = vec![1.0f32; 1024];
    let result = comm.all_reduce_sum(&mut w);
    // Only reached if rank 1 joined the allreduce, which it never does.
    eprintln!("mpi_abort child: rank 0 left the allreduce: {result:?}");
    ExitCode::SUCCESS
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn parent() -> Result<(), String> {
    // `MPIRUN` names the launcher that matches the MPI the crate was built with (for example
    // `mpirun.mpich` for a build with `MPICC=mpicc.mpich`).
    let launcher = std::env::var("MPIRUN").unwrap_or_else(|_| "mpirun".to_owned());
    let Some(mpirun) = which(&launcher) else {
        if matches!(std::env::var("SPARKNET_REQUIRE_MPI").as_deref(), Ok("1")) {
            return Err(format!("SPARKNET_REQUIRE_MPI=1 but {launcher} is not on the PATH"));
        }
        eprintln!("SKIPPED mpi_abort: {launcher} not found on the PATH");
        return Ok(());
    };
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let version = Command::new(&mpirun).arg("--version").output();
    let open_mpi =
        version.map(|o| String::from_utf8_lossy(&o.stdout).contains("Open MPI")).unwrap_or(false);
    for mode in MODES {
        let mut cmd = Command::new(&mpirun);
        if open_mpi {
            cmd.arg("--oversubscribe");
        }
        cmd.args(["-n", "2"]).arg(&exe).args(["--rank-role", mode]);
        cmd.env("RAYON_NUM_THREADS", "1").stdin(Stdio::null()).stdout(Stdio::piped());
        cmd.stderr(Stdio::piped());
        let start = Instant::now();
        let (status, output) = run_with_limit(cmd, LIMIT)?;
        let elapsed = start.elapsed();
        let Some(status) = status else {
            return Err(format!(
                "mode {mode}: the job was still running after {LIMIT:?}: {output}"
            ));
        };
        if status.success() {
            return Err(format!("mode {mode}: the job exited 0 although rank 1 failed: {output}"));
        }
        if !output.contains(REASON) {
            return Err(format!("mode {mode}: the job's output lacks rank 1's message: {output}"));
        }
        if output.contains("rank 0 left the allreduce") {
            return Err(format!("mode {mode}: rank 0 completed an allreduce alone: {output}"));
        }
        eprintln!("mpi_abort: mode {mode}: job ended with {status} after {elapsed:.2?}");
    }
    Ok(())
}

/// Runs `cmd`, returning its status (`None` if it was still running after `limit`, when it is
/// terminated) and its stdout and stderr together.
fn run_with_limit(
    mut cmd: Command,
    limit: Duration,
) -> Result<(Option<std::process::ExitStatus>, String), String> {
    let mut child = cmd.spawn().map_err(|e| format!("starting {cmd:?}: {e}"))?;
    let readers: Vec<_> = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    })
    .collect();
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().map_err(|e| format!("waiting for mpirun: {e}"))? {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                // Ask mpirun to take its ranks down, then make sure it is gone.
                let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
                std::thread::sleep(Duration::from_secs(3));
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let output = readers.into_iter().map(|r| r.join().unwrap_or_default()).collect::<String>();
    Ok((status, output))
}
