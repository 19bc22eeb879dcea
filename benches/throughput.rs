//! Throughput of each CPU stage and of the whole pipeline into a local directory, in bytes
//! per second. Run with `cargo bench`; the side-by-side comparison with other tools is
//! `scripts/bench-peers.sh`.

use blockvault::backup::{BackupOptions, backup};
use blockvault::chunker::{
    CdcChunker, DEFAULT_CDC_AVG, DEFAULT_CDC_MAX, DEFAULT_CDC_MIN, FixedChunker,
};
use blockvault::format::Kind;
use blockvault::keys::{Argon2Cost, Keys, MasterKey, Secret};
use blockvault::repo::{InitOptions, Repo};
use blockvault::seal;
use blockvault::source::SourceSpec;
use blockvault::store::LocalDir;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;

/// Half compressible text-like bytes, half random: closer to a disk image than either alone.
fn sample(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i / 65536) % 2 == 0 {
                b"the quick brown fox "[i % 20]
            } else {
                x as u8
            }
        })
        .collect()
}

fn stages(c: &mut Criterion) {
    let data = sample(64 << 20);
    let keys = Keys::from_master(&MasterKey::random());
    let mut g = c.benchmark_group("stages");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("chunker/fixed-4MiB", |b| {
        b.iter(|| FixedChunker::new(&data[..], 4 << 20).count())
    });
    g.bench_function("chunker/fastcdc-1MiB", |b| {
        b.iter(|| {
            CdcChunker::new(
                &data[..],
                DEFAULT_CDC_MIN,
                DEFAULT_CDC_AVG,
                DEFAULT_CDC_MAX,
                7,
            )
            .count()
        })
    });
    g.bench_function("id/keyed-blake3", |b| {
        b.iter(|| {
            for c in data.chunks(4 << 20) {
                black_box(keys.id.id_of(c));
            }
        })
    });
    g.bench_function("seal/zstd3-xchacha", |b| {
        b.iter(|| {
            data.chunks(4 << 20)
                .map(|c| seal::seal(Kind::Chunk, keys.seal.as_ref(), "chunks/x", c, Some(3)).len())
                .sum::<usize>()
        })
    });
    let sealed: Vec<Vec<u8>> = data
        .chunks(4 << 20)
        .map(|c| seal::seal(Kind::Chunk, keys.seal.as_ref(), "chunks/x", c, Some(3)))
        .collect();
    g.bench_function("open/xchacha-zstd", |b| {
        b.iter(|| {
            sealed
                .iter()
                .map(|s| {
                    seal::open(
                        Kind::Chunk,
                        keys.seal.as_ref(),
                        "chunks/x",
                        s,
                        seal::MAX_CHUNK_LEN,
                    )
                    .map(|p| p.len())
                    .unwrap_or(0)
                })
                .sum::<usize>()
        })
    });
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Runtime::new() else {
        return;
    };
    let Ok(dir) = tempfile::tempdir() else { return };
    let src = dir.path().join("image");
    let data = sample(128 << 20);
    if std::fs::write(&src, &data).is_err() {
        return;
    }
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("first-backup-local-dir", |b| {
        b.iter_batched(
            || {
                let repo_dir = dir.path().join(format!("repo-{}", rand_suffix()));
                let opts = InitOptions {
                    argon2: Argon2Cost {
                        memory_kib: 256,
                        passes: 1,
                    },
                    ..InitOptions::default()
                };
                let secret = Secret::Passphrase("bench".to_string().into());
                let repo = rt.block_on(Repo::init(
                    Arc::new(LocalDir::new(&repo_dir)),
                    opts,
                    Some(secret),
                ));
                repo.map(Arc::new).ok()
            },
            |repo| {
                let Some(repo) = repo else { return };
                let opts = BackupOptions {
                    series: "bench".into(),
                    time: None,
                    in_flight: None,
                    progress: false,
                    allow_empty: false,
                    dry_run: false,
                    zfs_required: false,
                    raw: false,
                    zfs_base: None,
                    timeout: None,
                    heal: false,
                };
                black_box(
                    rt.block_on(backup(repo, &SourceSpec::Path(src.clone()), opts))
                        .map(|s| s.size)
                        .ok(),
                );
            },
            criterion::BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

criterion_group!(benches, stages, pipeline);
criterion_main!(benches);
