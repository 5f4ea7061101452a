//! A run of 4 worker *processes* sharing one output folder, started the way Slurm arrays and
//! Kubernetes Indexed Jobs start them (index and count in the environment): one is killed
//! mid-run and relaunched, then the whole array is relaunched (finished workers exit at
//! once), then `merge` checks the run and finds every id exactly once.
//!
//! The workers are this test binary re-executed with `--ignored --exact worker_child` and the
//! worker's settings in environment variables.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use svgen_data::shard::{resolve_shard_from_env, ShardArgs};
use svgen_data::source::VecSource;
use svgen_data::storage::{self, ShardOptions};
use svgen_data::tools::{merge, MergeOptions};
use svgen_data::worker::marker_name;
use svgen_data::{run, DataError, PipelineConfig, ShardSpec};

const N_ITEMS: usize = 96;
const WORKERS: u32 = 4;

fn items() -> Vec<(String, String)> {
    (0..N_ITEMS)
        .map(|i| (format!("item-{i:03}"), format!("a round object number {i}")))
        .collect()
}

fn config(dir: &Path, shard: ShardSpec) -> PipelineConfig {
    let mut c = PipelineConfig::new(dir);
    c.shard = shard;
    c.shard_options = ShardOptions {
        rows_per_shard: 3,
        rows_per_row_group: 3,
        ..ShardOptions::default()
    };
    c.cpu_workers = 1;
    c.network_workers = 1;
    c.channel_capacity = 2;
    c.run_tag = "workers-test".into();
    c
}

/// Not a test by itself: one worker process of `four_worker_processes_...` (run with
/// `--ignored`). Prints its summary as one JSON line.
#[test]
#[ignore = "child process of four_worker_processes_killed_relaunched_and_merged"]
fn worker_child() {
    let Ok(out) = std::env::var("SVGEN_WORKERS_CHILD_OUT") else {
        return;
    };
    let delay_ms: u64 = std::env::var("SVGEN_WORKERS_CHILD_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let shard = resolve_shard_from_env(&ShardArgs::default()).unwrap();
    let stages = disc_stages(Duration::from_millis(delay_ms));
    let summary = run(
        &mut VecSource::from_pairs("numbers", items()),
        &stages,
        &config(Path::new(&out), shard.spec),
    )
    .unwrap();
    println!("SUMMARY {}", serde_json::to_string(&summary).unwrap());
}

/// The environment a scheduler would give worker `index`: workers 0 and 1 as tasks 1 and 2
/// of a Slurm array `--array=1-4`, workers 2 and 3 as pods of an Indexed Job.
fn spawn_worker(out: &Path, index: u32, delay_ms: u64) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        "worker_child",
        "--test-threads=1",
        "--nocapture",
    ]);
    for var in [
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_MAX",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_STEP",
        "JOB_COMPLETION_INDEX",
        "SVGEN_SHARD_COUNT",
        "SVGEN_SHARD_BASE",
    ] {
        cmd.env_remove(var);
    }
    if index < 2 {
        cmd.env("SLURM_ARRAY_TASK_ID", (index + 1).to_string())
            .env("SLURM_ARRAY_TASK_MIN", "1")
            .env("SLURM_ARRAY_TASK_MAX", "4")
            .env("SLURM_ARRAY_TASK_COUNT", "4");
    } else {
        cmd.env("JOB_COMPLETION_INDEX", index.to_string())
            .env("SVGEN_SHARD_COUNT", WORKERS.to_string());
    }
    cmd.env("SVGEN_WORKERS_CHILD_OUT", out)
        .env("SVGEN_WORKERS_CHILD_DELAY_MS", delay_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a worker and returns its summary.
fn finish(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "worker failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("SUMMARY ").map(|(_, json)| json))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    serde_json::from_str(line).unwrap()
}

fn spec(i: u32) -> ShardSpec {
    ShardSpec::new(i, WORKERS).unwrap()
}

fn shard_files(dir: &Path) -> Vec<PathBuf> {
    storage::list_shards(dir).unwrap()
}

#[test]
fn four_worker_processes_killed_relaunched_and_merged() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let victim = 2u32;
    // The victim is slow so that it is still running after its first shard.
    let mut children: Vec<(u32, Child)> = (0..WORKERS)
        .map(|i| (i, spawn_worker(&out, i, if i == victim { 100 } else { 5 })))
        .collect();
    let victim_manifest = out.join(format!("manifest-{victim:05}-of-{WORKERS:05}.jsonl"));
    let t0 = Instant::now();
    loop {
        let published = std::fs::read_to_string(&victim_manifest)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if published >= 1 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the victim published nothing"
        );
        let (_, c) = children.iter_mut().find(|(i, _)| *i == victim).unwrap();
        if let Some(status) = c.try_wait().unwrap() {
            panic!("the victim ended before the kill: {status}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let pos = children.iter().position(|(i, _)| *i == victim).unwrap();
    let (_, mut killed) = children.remove(pos);
    killed.kill().unwrap(); // SIGKILL: no destructor, no flush
    killed.wait().unwrap();
    assert!(
        !out.join(marker_name(spec(victim))).exists(),
        "the victim finished before it was killed"
    );
    let mut first_written = 0u64;
    for (i, c) in children {
        let s = finish(c);
        assert!(s["marker"].is_string(), "worker {i}: {s}");
        assert!(s["finished_before"].is_null());
        first_written += s["written"].as_u64().unwrap();
        assert!(out.join(marker_name(spec(i))).is_file());
    }

    // The run is not complete: merge says which worker is missing.
    match merge(
        std::slice::from_ref(&out),
        dir.path().join("early"),
        &MergeOptions::default(),
    ) {
        Err(DataError::WorkersIncomplete {
            count,
            missing,
            duplicated,
        }) => {
            assert_eq!(
                (count, missing, duplicated.len()),
                (WORKERS, vec![victim], 0)
            );
        }
        other => panic!("expected WorkersIncomplete, got {other:?}"),
    }

    // Relaunch the killed worker: it resumes, nothing is redone.
    let s = finish(spawn_worker(&out, victim, 0));
    assert!(s["already_done"].as_u64().unwrap() >= 3, "{s}");
    assert!(s["marker"].is_string(), "{s}");
    let victim_written = s["written"].as_u64().unwrap();

    // Relaunch the whole array: every worker finds its marker and does nothing.
    let shards_before = shard_files(&out);
    let relaunched: Vec<Child> = (0..WORKERS).map(|i| spawn_worker(&out, i, 0)).collect();
    for c in relaunched {
        let s = finish(c);
        assert!(s["finished_before"].is_object(), "{s}");
        assert_eq!(s["written"], 0);
        assert_eq!(s["read"], 0, "a finished worker must not read its input");
    }
    assert_eq!(shard_files(&out), shards_before);

    // The rows of the run folder: every id exactly once.
    let (rows, fails) = output_ids(&out);
    assert!(fails.is_empty(), "{fails:?}");
    let expected: BTreeSet<String> = items().into_iter().map(|(id, _)| id).collect();
    let got: BTreeSet<String> = rows.iter().cloned().collect();
    assert_eq!(rows.len(), N_ITEMS, "some id was written twice");
    assert_eq!(got, expected);
    assert!(first_written + victim_written <= N_ITEMS as u64);

    // merge checks every marker and copies exactly the listed shards.
    let merged = dir.path().join("merged");
    let m = merge(
        std::slice::from_ref(&out),
        &merged,
        &MergeOptions::default(),
    )
    .unwrap();
    assert_eq!(m.workers, Some(WORKERS));
    assert_eq!((m.read, m.written, m.duplicates), (N_ITEMS, N_ITEMS, 0));
    let (rows, _) = output_ids(&merged);
    assert_eq!(rows.len(), N_ITEMS);
    assert_eq!(rows.into_iter().collect::<BTreeSet<_>>(), expected);
}

/// The typed errors of a badly launched worker, in-process.
#[test]
fn badly_launched_workers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let stages = disc_stages(Duration::ZERO);
    let small = || VecSource::from_pairs("numbers", items().into_iter().take(12));
    let s = run(&mut small(), &stages, &config(dir.path(), spec(0))).unwrap();
    assert!(s.marker.is_some());
    // A worker told there are 5 workers in a run of 4.
    match run(
        &mut small(),
        &stages,
        &config(dir.path(), ShardSpec::new(1, 5).unwrap()),
    ) {
        Err(DataError::ShardCountMismatch { run, worker, .. }) => assert_eq!((run, worker), (4, 5)),
        other => panic!("expected ShardCountMismatch, got {other:?}"),
    }
    // A worker with another labelling threshold.
    let mut other = config(dir.path(), spec(1));
    other.label.max_tokens = 1234;
    assert!(matches!(
        run(&mut small(), &stages, &other),
        Err(DataError::ConfigMismatch { .. })
    ));
    // An index past the count, from the environment.
    let err = svgen_data::shard::resolve_shard(&ShardArgs::default(), |k| match k {
        "JOB_COMPLETION_INDEX" => Some("4".into()),
        "SVGEN_SHARD_COUNT" => Some("4".into()),
        _ => None,
    })
    .unwrap_err();
    assert_eq!(
        err,
        svgen_data::shard::ShardError::IndexOutOfRange { index: 4, count: 4 }
    );
    // Nothing of the refused workers was written.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.contains("-of-00005") && !n.contains("00001-of-00004")),
        "{names:?}"
    );
}
