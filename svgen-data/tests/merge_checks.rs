//! `merge` of a run of N workers: the completion-marker checks and their typed errors.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use svgen_data::source::VecSource;
use svgen_data::storage::{list_shards, ShardOptions};
use svgen_data::tools::{merge, MergeOptions};
use svgen_data::worker::{marker_name, WorkerMarker, RUN_MANIFEST};
use svgen_data::{run, DataError, PipelineConfig, ShardSpec};

const N: usize = 24;

fn items() -> Vec<(String, String)> {
    (0..N)
        .map(|i| (format!("obj-{i:03}"), format!("a round object number {i}")))
        .collect()
}

/// A finished run of 3 workers in `dir`.
fn finished_run(dir: &Path) {
    let stages = disc_stages(Duration::ZERO);
    for i in 0..3 {
        let mut c = PipelineConfig::new(dir);
        c.shard = ShardSpec::new(i, 3).unwrap();
        c.shard_options = ShardOptions {
            rows_per_shard: 2,
            rows_per_row_group: 2,
            ..ShardOptions::default()
        };
        c.cpu_workers = 1;
        c.network_workers = 1;
        let s = run(&mut VecSource::from_pairs("n", items()), &stages, &c).unwrap();
        assert!(s.marker.is_some());
    }
}

fn marker_path(dir: &Path, i: u32) -> PathBuf {
    dir.join(marker_name(ShardSpec::new(i, 3).unwrap()))
}

fn read_marker(dir: &Path, i: u32) -> WorkerMarker {
    serde_json::from_slice(&std::fs::read(marker_path(dir, i)).unwrap()).unwrap()
}

fn opts() -> MergeOptions {
    MergeOptions::default()
}

fn all_ids() -> BTreeSet<String> {
    items().into_iter().map(|(id, _)| id).collect()
}

#[test]
fn a_complete_run_merges_and_the_result_is_a_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    finished_run(&run_dir);
    let out = dir.path().join("merged");
    let m = merge(std::slice::from_ref(&run_dir), &out, &opts()).unwrap();
    assert_eq!((m.read, m.written, m.workers), (N, N, Some(3)));
    let (rows, _) = output_ids(&out);
    assert_eq!(rows.len(), N);
    assert_eq!(rows.into_iter().collect::<BTreeSet<_>>(), all_ids());
    // The merged folder is a finished one-worker run that merges again.
    assert!(out.join(RUN_MANIFEST).is_file());
    assert!(out.join("done-00000-of-00001.json").is_file());
    let again = dir.path().join("again");
    let m2 = merge(&[out], &again, &opts()).unwrap();
    assert_eq!((m2.written, m2.workers), (N, Some(1)));
}

#[test]
fn a_missing_worker_is_named() {
    let dir = tempfile::tempdir().unwrap();
    finished_run(dir.path());
    std::fs::remove_file(marker_path(dir.path(), 1)).unwrap();
    let out = dir.path().join("m");
    let err = merge(&[dir.path().to_path_buf()], &out, &opts()).unwrap_err();
    match &err {
        DataError::WorkersIncomplete {
            count: 3,
            missing,
            duplicated,
        } => {
            assert_eq!(missing, &vec![1]);
            assert!(duplicated.is_empty());
        }
        other => panic!("expected WorkersIncomplete, got {other:?}"),
    }
    assert!(
        err.to_string().contains("1 of 3 workers have not finished"),
        "{err}"
    );
    assert!(list_shards(&out).unwrap().is_empty());
}

#[test]
fn a_worker_in_two_inputs_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    finished_run(&a);
    // Worker 2's output copied into a second folder, as a confused relaunch would.
    std::fs::create_dir_all(&b).unwrap();
    std::fs::copy(a.join(RUN_MANIFEST), b.join(RUN_MANIFEST)).unwrap();
    let m2 = read_marker(&a, 2);
    std::fs::copy(marker_path(&a, 2), marker_path(&b, 2)).unwrap();
    for s in &m2.shards {
        std::fs::copy(a.join(&s.name), b.join(&s.name)).unwrap();
    }
    let err = merge(&[a.clone(), b.clone()], dir.path().join("m"), &opts()).unwrap_err();
    match err {
        DataError::WorkersIncomplete {
            missing,
            duplicated,
            ..
        } => {
            assert!(missing.is_empty());
            assert_eq!(duplicated.len(), 1);
            assert_eq!(duplicated[0].0, 2);
            assert_eq!(
                duplicated[0].1,
                vec![a.display().to_string(), b.display().to_string()]
            );
        }
        other => panic!("expected WorkersIncomplete, got {other:?}"),
    }
}

#[test]
fn duplicate_ids_are_listed_and_nothing_is_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    finished_run(&run_dir);
    // Worker 0's marker lists one of its shards twice, under a second name.
    let mut m0 = read_marker(&run_dir, 0);
    let first = m0.shards[0].clone();
    let copy = "part-00000-of-00003-999999.parquet";
    std::fs::copy(run_dir.join(&first.name), run_dir.join(copy)).unwrap();
    m0.shards.push(svgen_data::worker::MarkerShard {
        name: copy.into(),
        rows: first.rows,
    });
    std::fs::write(marker_path(&run_dir, 0), serde_json::to_vec(&m0).unwrap()).unwrap();
    let out = dir.path().join("m");
    match merge(std::slice::from_ref(&run_dir), &out, &opts()) {
        Err(DataError::DuplicateIds { count, examples }) => {
            assert_eq!(count, first.rows);
            assert_eq!(examples.len(), first.rows);
            assert!(examples.iter().all(|id| id.starts_with("obj-")));
        }
        other => panic!("expected DuplicateIds, got {other:?}"),
    }
    assert!(list_shards(&out).unwrap().is_empty());
    assert!(!out.join("manifest.jsonl").exists());
}

#[test]
fn a_listed_shard_that_is_gone_is_named() {
    let dir = tempfile::tempdir().unwrap();
    finished_run(dir.path());
    let gone = read_marker(dir.path(), 2).shards[0].name.clone();
    std::fs::remove_file(dir.path().join(&gone)).unwrap();
    match merge(&[dir.path().to_path_buf()], dir.path().join("m"), &opts()) {
        Err(DataError::MissingShards { shards, .. }) => assert_eq!(shards, vec![gone]),
        other => panic!("expected MissingShards, got {other:?}"),
    }
}

#[test]
fn folders_without_markers_need_the_explicit_flag() {
    let dir = tempfile::tempdir().unwrap();
    finished_run(dir.path());
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name == RUN_MANIFEST || name.starts_with("done-") {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
    }
    let out = dir.path().join("m");
    match merge(&[dir.path().to_path_buf()], &out, &opts()) {
        Err(DataError::Unmarked { locations }) => {
            assert_eq!(locations, vec![dir.path().display().to_string()])
        }
        other => panic!("expected Unmarked, got {other:?}"),
    }
    let m = merge(
        &[dir.path().to_path_buf()],
        &out,
        &MergeOptions {
            allow_unmarked: true,
            ..MergeOptions::default()
        },
    )
    .unwrap();
    assert_eq!((m.written, m.duplicates, m.workers), (N, 0, None));
}

#[test]
fn inputs_of_different_runs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    finished_run(&a);
    let b = dir.path().join("b");
    let mut c = PipelineConfig::new(&b);
    c.shard = ShardSpec::new(0, 2).unwrap();
    run(
        &mut VecSource::from_pairs("n", items()),
        &disc_stages(Duration::ZERO),
        &c,
    )
    .unwrap();
    assert!(matches!(
        merge(&[a, b], dir.path().join("m"), &opts()),
        Err(DataError::ShardCountMismatch {
            run: 3,
            worker: 2,
            ..
        })
    ));
}
