//! Sequential throughput of a file through a cove-nfs mount against the same
//! file on local disk: write (with fsync), read with cold caches, and read
//! again with warm ones. Needs root and /dev/fuse.
//!
//! `cargo run --release -p cove-nfs --example throughput`; the file size in
//! MiB can be set with `COVE_NFS_BENCH_MIB` (default 256) and the size of
//! each read and write call in KiB with `COVE_NFS_BENCH_KIB` (default 1024);
//! `COVE_NFS_BENCH_THREADS` sets the mount's FUSE threads.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use cove_nfs::{bind, mount, tcp_connector, Export, MountOptions};

fn main() {
    let setting = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mib = setting("COVE_NFS_BENCH_MIB", 256);
    let chunk = setting("COVE_NFS_BENCH_KIB", 1024) * 1024;
    let data: Vec<u8> = (0..chunk)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();

    let local = tempfile::tempdir().expect("tempdir");
    let export = tempfile::tempdir().expect("tempdir");
    let mountpoint = tempfile::tempdir().expect("tempdir");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let bound = runtime
        .block_on(bind(
            "127.0.0.1:0".parse().expect("an address"),
            Export::new(export.path()),
        ))
        .expect("bind");
    let addr = bound.local_addr();
    runtime.spawn(bound.serve());
    let mounted = mount(
        tcp_connector(addr, Duration::from_secs(5)),
        "/",
        mountpoint.path(),
        &MountOptions {
            threads: setting("COVE_NFS_BENCH_THREADS", MountOptions::default().threads),
            ..MountOptions::default()
        },
    )
    .expect("mount");

    let local_file = local.path().join("bench.bin");
    let nfs_file = mountpoint.path().join("bench.bin");
    let can_drop = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();

    let rows = [
        (
            "write + fsync",
            write(&local_file, &data, mib),
            write(&nfs_file, &data, mib),
        ),
        (
            if can_drop {
                "read (cold)"
            } else {
                "read (caches not dropped)"
            },
            {
                drop_caches(can_drop);
                read(&local_file, chunk)
            },
            {
                drop_caches(can_drop);
                read(&nfs_file, chunk)
            },
        ),
        (
            "read (warm)",
            read(&local_file, chunk),
            read(&nfs_file, chunk),
        ),
    ];

    println!("{mib} MiB sequential, {} KiB per call", chunk / 1024);
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "", "local MB/s", "nfs MB/s", "nfs/local"
    );
    for (what, local, nfs) in rows {
        let (l, n) = (mb_per_s(mib, local), mb_per_s(mib, nfs));
        println!("{what:<28} {l:>12.0} {n:>12.0} {:>8.2}", n / l);
    }

    mounted.unmount().expect("unmount");
    runtime.shutdown_background();
}

fn write(path: &Path, chunk: &[u8], mib: usize) -> Duration {
    let started = Instant::now();
    let mut file = std::fs::File::create(path).expect("create");
    for _ in 0..(mib << 20) / chunk.len() {
        file.write_all(chunk).expect("write");
    }
    file.sync_all().expect("fsync");
    drop(file);
    started.elapsed()
}

fn read(path: &Path, chunk: usize) -> Duration {
    let started = Instant::now();
    let mut file = std::fs::File::open(path).expect("open");
    let mut buf = vec![0; chunk];
    while file.read(&mut buf).expect("read") > 0 {}
    started.elapsed()
}

fn drop_caches(can: bool) {
    if can {
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    }
}

fn mb_per_s(mib: usize, took: Duration) -> f64 {
    (mib as f64 * 1.048_576) / took.as_secs_f64()
}
