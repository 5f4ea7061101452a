//! Runs whose home is an object store (the in-memory store: the same code path as S3, GCS
//! and Azure), and the publish semantics of the local folder and object stores. No network.

mod common;

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use svgen_data::pipeline::{run_with_hook, Event};
use svgen_data::source::VecSource;
use svgen_data::storage::ShardOptions;
use svgen_data::store::{LocalDir, ObjectOutput, OutputLocation, RunStore, WriteMode};
use svgen_data::tools::{merge_stores, MergeOptions};
use svgen_data::worker::marker_name;
use svgen_data::{run, DataError, PipelineConfig, ShardSpec};

const N: usize = 30;

fn items() -> Vec<(String, String)> {
    (0..N)
        .map(|i| (format!("id-{i:03}"), format!("a round object number {i}")))
        .collect()
}

fn config(staging: &Path, store: &Arc<ObjectOutput>, shard: ShardSpec) -> PipelineConfig {
    let mut c = PipelineConfig::new(staging);
    c.shard = shard;
    c.mirror = Some(store.clone());
    c.shard_options = ShardOptions {
        rows_per_shard: 3,
        rows_per_row_group: 3,
        ..ShardOptions::default()
    };
    c.cpu_workers = 1;
    c.network_workers = 1;
    c.channel_capacity = 2;
    c
}

fn spec(i: u32) -> ShardSpec {
    ShardSpec::new(i, 2).unwrap()
}

fn merged_ids(store: &Arc<ObjectOutput>, out: &Path) -> Vec<String> {
    let stores: Vec<Arc<dyn RunStore>> = vec![store.clone()];
    let m = merge_stores(&stores, out, &MergeOptions::default()).unwrap();
    assert_eq!(m.workers, Some(2));
    output_ids(out).0
}

#[test]
fn a_killed_worker_resumes_from_the_store_on_another_machine() {
    let store = Arc::new(ObjectOutput::in_memory("runs/r1").unwrap());
    let stages = disc_stages(Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();

    // Worker 0 finishes; worker 1 is killed after 5 rows (one shard of 3 published).
    let s0 = run(
        &mut VecSource::from_pairs("n", items()),
        &stages,
        &config(&tmp.path().join("node-a"), &store, spec(0)),
    )
    .unwrap();
    assert!(s0.marker.is_some());
    assert!(!s0.shards.is_empty());
    for p in &s0.shards {
        let p = p.to_string_lossy();
        assert!(
            p.starts_with("memory:///runs/r1/part-00000-of-00002-"),
            "{p}"
        );
    }
    let err = run_with_hook(
        &mut VecSource::from_pairs("n", items()),
        &stages,
        &config(&tmp.path().join("node-b"), &store, spec(1)),
        &mut |e| match e {
            Event::Written { total } if *total >= 5 => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        },
    )
    .unwrap_err();
    assert!(matches!(err, DataError::Interrupted(5)));
    let names = store.list().unwrap();
    assert!(names.contains(&"part-00001-of-00002-000000.parquet".to_string()));
    assert!(names.contains(&"manifest-00001-of-00002.000000.jsonl".to_string()));
    assert!(!names.contains(&marker_name(spec(1))));

    // Relaunched on a machine with an empty staging folder: only the 3 published rows are
    // skipped; the 2 unpublished ones are redone.
    let s1 = run(
        &mut VecSource::from_pairs("n", items()),
        &stages,
        &config(&tmp.path().join("node-c"), &store, spec(1)),
    )
    .unwrap();
    assert_eq!(s1.already_done, 3);
    assert!(s1.marker.is_some());
    // Published shards are not kept in staging.
    assert!(svgen_data::storage::list_shards(&tmp.path().join("node-c"))
        .unwrap()
        .is_empty());

    // A relaunch of a finished worker returns at once.
    let again = run(
        &mut VecSource::from_pairs("n", items()),
        &stages,
        &config(&tmp.path().join("node-d"), &store, spec(0)),
    )
    .unwrap();
    assert!(again.finished_before.is_some());
    assert_eq!((again.read, again.written), (0, 0));

    let names = store.list().unwrap();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    let ids = merged_ids(&store, &tmp.path().join("merged"));
    assert_eq!(ids.len(), N, "some id twice: {ids:?}");
    let expected: BTreeSet<String> = items().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), expected);
}

#[test]
fn a_shard_uploaded_but_not_listed_is_recovered_not_redone() {
    let store = Arc::new(ObjectOutput::in_memory("runs/r2").unwrap());
    let stages = disc_stages(Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    // Worker 0 is stopped right after its second shard was published (shard + manifest chunk).
    let mut published = 0;
    let err = run_with_hook(
        &mut VecSource::from_pairs("n", items()),
        &stages,
        &config(&tmp.path().join("a"), &store, spec(0)),
        &mut |e| {
            if matches!(e, Event::Published(_)) {
                published += 1;
                if published == 2 {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        },
    )
    .unwrap_err();
    assert!(matches!(err, DataError::Interrupted(_)));
    // As if killed between the shard's upload and its manifest chunk's.
    store
        .delete("manifest-00000-of-00002.000001.jsonl")
        .unwrap();
    let s = run(
        &mut VecSource::from_pairs("n", items()),
        &stages,
        &config(&tmp.path().join("b"), &store, spec(0)),
    )
    .unwrap();
    assert_eq!(s.already_done, 6, "the orphan shard's ids count as done");
    run(
        &mut VecSource::from_pairs("n", items()),
        &stages,
        &config(&tmp.path().join("c"), &store, spec(1)),
    )
    .unwrap();
    let ids = merged_ids(&store, &tmp.path().join("merged"));
    assert_eq!(ids.len(), N);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), N);
}

/// The same contract for every [`RunStore`].
fn check_publish_semantics(store: &dyn RunStore, scratch: &Path) {
    assert!(store.put("a.json", b"one", WriteMode::CreateNew).unwrap());
    assert!(!store.put("a.json", b"two", WriteMode::CreateNew).unwrap());
    assert_eq!(store.get("a.json").unwrap().as_deref(), Some(&b"one"[..]));
    assert!(store.put("a.json", b"three", WriteMode::Overwrite).unwrap());
    assert_eq!(store.get("a.json").unwrap().as_deref(), Some(&b"three"[..]));
    assert_eq!(store.get("absent.json").unwrap(), None);

    let local = scratch.join("shard.bin");
    let content: Vec<u8> = (0..100u8).collect();
    std::fs::write(&local, &content).unwrap();
    store.publish_file(&local, "s.parquet").unwrap();
    match store.publish_file(&local, "s.parquet") {
        Err(DataError::AlreadyPublished { name, .. }) => assert_eq!(name, "s.parquet"),
        other => panic!("expected AlreadyPublished, got {other:?}"),
    }
    let fetched = store.fetch("s.parquet", scratch).unwrap();
    assert_eq!(std::fs::read(fetched.path()).unwrap(), content);
    drop(fetched);
    store.delete("s.parquet").unwrap();
    store.delete("s.parquet").unwrap();
    assert_eq!(store.list().unwrap(), vec!["a.json".to_string()]);
    assert!(matches!(
        store.put("x/y", b"", WriteMode::Overwrite),
        Err(DataError::Config(_))
    ));
}

#[test]
fn local_folders_publish_atomically_and_only_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LocalDir::new(tmp.path().join("out"));
    check_publish_semantics(&store, tmp.path());
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(tmp.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["a.json".to_string()]);
}

#[test]
fn object_stores_publish_atomically_and_only_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectOutput::in_memory("p").unwrap();
    check_publish_semantics(&store, tmp.path());
    // Above single_put_max: multipart upload to a temporary name, then rename-if-absent.
    let mut big = ObjectOutput::in_memory("q").unwrap();
    big.single_put_max = 10;
    big.part_size = 7;
    check_publish_semantics(&big, tmp.path());
    // Nothing downloaded is left in the scratch folder.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("shard.bin")]);
}

#[test]
fn output_locations() {
    assert!(matches!(
        OutputLocation::parse("relative/run").unwrap(),
        OutputLocation::Local(p) if p == Path::new("relative/run")
    ));
    assert!(matches!(
        OutputLocation::parse("memory:///x"),
        Err(DataError::Store { .. })
    ));
    #[cfg(not(feature = "cloud"))]
    for url in ["s3://bucket/run", "gs://bucket/run", "az://container/run"] {
        match OutputLocation::parse(url) {
            Err(DataError::Store { message, .. }) => {
                assert!(message.contains("`cloud` feature"), "{message}")
            }
            other => panic!("expected a Store error for {url}, got {other:?}"),
        }
    }
}
