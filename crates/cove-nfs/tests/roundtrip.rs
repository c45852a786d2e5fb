//! End to end: the server on a loopback port over a temporary directory,
//! the client mounted through FUSE at another, and files going both ways.
//! Needs root and /dev/fuse; without them each test says so and passes.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cove_nfs::{bind, mount, tcp_connector, Export, MountError, MountOptions, Mounted};
use tempfile::TempDir;

fn skip() -> bool {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: /dev/fuse is missing");
        return true;
    }
    if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
        eprintln!("skipped: mounting FUSE needs root");
        return true;
    }
    false
}

/// A server on 127.0.0.1 over a temporary directory, stopped on drop.
struct Server {
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    export: TempDir,
}

impl Server {
    fn start(read_only: bool) -> Self {
        let export = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let export_spec = Export::new(export.path()).read_only(read_only);
        let bound = runtime
            .block_on(bind("127.0.0.1:0".parse().unwrap(), export_spec))
            .unwrap();
        let addr = bound.local_addr();
        runtime.spawn(async move {
            if let Err(e) = bound.serve().await {
                panic!("serve failed: {e}");
            }
        });
        Self {
            runtime: Some(runtime),
            addr,
            export,
        }
    }

    fn dir(&self) -> &Path {
        self.export.path()
    }

    /// Stops the server (its connections close) and starts a new one on
    /// the same address and export, as a restart of Cove does.
    fn restart(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let bound = runtime
            .block_on(bind(self.addr, Export::new(self.export.path())))
            .unwrap();
        runtime.spawn(bound.serve());
        self.runtime = Some(runtime);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A client mount; dropped (unmounted) before the server and directories.
struct Client {
    mounted: Option<Mounted>,
    dir: TempDir,
}

impl Client {
    fn mount(server: &Server, path: &str, options: &MountOptions) -> Result<Self, MountError> {
        Self::mount_with(
            tcp_connector(server.addr, Duration::from_secs(5)),
            path,
            options,
        )
    }

    fn mount_with(
        connect: impl Fn() -> std::io::Result<TcpStream> + Send + Sync + 'static,
        path: &str,
        options: &MountOptions,
    ) -> Result<Self, MountError> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = mount(connect, path, dir.path(), options)?;
        Ok(Self {
            mounted: Some(mounted),
            dir,
        })
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mounted) = self.mounted.take() {
            mounted.unmount().unwrap();
        }
    }
}

fn read_write() -> MountOptions {
    MountOptions::default()
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64: cheap bytes that catch misplaced blocks.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn errno(e: &std::io::Error) -> Option<rustix::io::Errno> {
    e.raw_os_error().map(rustix::io::Errno::from_raw_os_error)
}

#[test]
fn files_go_both_ways() {
    if skip() {
        return;
    }
    let server = Server::start(false);
    let client = Client::mount(&server, "/", &read_write()).unwrap();
    let (disk, mnt) = (server.dir(), client.dir());

    std::fs::write(mnt.join("from-client.txt"), b"written through the mount").unwrap();
    assert_eq!(
        std::fs::read(disk.join("from-client.txt")).unwrap(),
        b"written through the mount"
    );

    std::fs::write(disk.join("from-disk.txt"), b"written on the server").unwrap();
    assert_eq!(
        std::fs::read(mnt.join("from-disk.txt")).unwrap(),
        b"written on the server"
    );

    std::fs::create_dir(mnt.join("made")).unwrap();
    assert!(disk.join("made").is_dir());
    std::fs::write(mnt.join("made/inner"), b"x").unwrap();
    std::fs::rename(mnt.join("made"), mnt.join("renamed")).unwrap();
    assert!(!disk.join("made").exists());
    assert_eq!(std::fs::read(disk.join("renamed/inner")).unwrap(), b"x");
    assert_eq!(std::fs::read(mnt.join("renamed/inner")).unwrap(), b"x");
    std::fs::rename(mnt.join("from-client.txt"), mnt.join("renamed/moved.txt")).unwrap();
    assert!(disk.join("renamed/moved.txt").is_file());

    let mut names: Vec<_> = std::fs::read_dir(mnt.join("renamed"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["inner", "moved.txt"]);

    std::fs::remove_file(mnt.join("renamed/inner")).unwrap();
    std::fs::remove_file(mnt.join("renamed/moved.txt")).unwrap();
    assert!(!disk.join("renamed/inner").exists());
    std::fs::remove_dir(mnt.join("renamed")).unwrap();
    assert!(!disk.join("renamed").exists());

    // Modes, truncation and symlinks reach the disk too.
    let file = mnt.join("from-disk.txt");
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    assert_eq!(
        std::fs::metadata(disk.join("from-disk.txt"))
            .unwrap()
            .mode()
            & 0o777,
        0o640
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(7)
        .unwrap();
    assert_eq!(
        std::fs::read(disk.join("from-disk.txt")).unwrap(),
        b"written"
    );
    std::os::unix::fs::symlink("from-disk.txt", mnt.join("link")).unwrap();
    assert_eq!(
        std::fs::read_link(disk.join("link")).unwrap(),
        Path::new("from-disk.txt")
    );
    assert_eq!(std::fs::read(mnt.join("link")).unwrap(), b"written");
    // Inode numbers are the server's.
    assert_eq!(
        std::fs::metadata(&file).unwrap().ino(),
        std::fs::metadata(disk.join("from-disk.txt")).unwrap().ino()
    );
    assert!(matches!(
        std::fs::read(mnt.join("missing")).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::NotFound)
    ));
}

#[test]
fn reopening_sees_changes_made_on_the_server() {
    if skip() {
        return;
    }
    let server = Server::start(false);
    let client = Client::mount(&server, "/", &read_write()).unwrap();
    let (disk, mnt) = (server.dir().join("f"), client.dir().join("f"));
    std::fs::write(&disk, b"first version").unwrap();
    assert_eq!(std::fs::read(&mnt).unwrap(), b"first version");
    // Cached pages are kept while the file is unchanged...
    assert_eq!(std::fs::read(&mnt).unwrap(), b"first version");
    // ...and dropped once it changes, even at the same size.
    std::fs::write(&disk, b"other version").unwrap();
    assert_eq!(std::fs::read(&mnt).unwrap(), b"other version");
    // Growing and shrinking on the server show too, once the kernel's
    // attribute cache has expired.
    std::fs::write(&disk, b"a longer version of the file").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        std::fs::read(&mnt).unwrap(),
        b"a longer version of the file"
    );
    std::fs::write(&disk, b"short").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(std::fs::read(&mnt).unwrap(), b"short");
    // This client's own writes keep its cache valid and visible.
    std::fs::write(&mnt, b"client version").unwrap();
    assert_eq!(std::fs::read(&mnt).unwrap(), b"client version");
    assert_eq!(std::fs::read(&disk).unwrap(), b"client version");
}

#[test]
fn a_read_only_mount_refuses_writes() {
    if skip() {
        return;
    }
    let server = Server::start(false);
    std::fs::write(server.dir().join("kept.txt"), b"data").unwrap();
    let options = MountOptions {
        read_only: true,
        ..MountOptions::default()
    };
    let client = Client::mount(&server, "/", &options).unwrap();
    let mnt = client.dir();
    assert_eq!(std::fs::read(mnt.join("kept.txt")).unwrap(), b"data");
    for attempt in [
        std::fs::write(mnt.join("new.txt"), b"x"),
        std::fs::write(mnt.join("kept.txt"), b"x"),
        std::fs::create_dir(mnt.join("dir")),
        std::fs::remove_file(mnt.join("kept.txt")),
    ] {
        let e = attempt.unwrap_err();
        assert_eq!(errno(&e), Some(rustix::io::Errno::ROFS), "{e}");
    }
    assert_eq!(
        std::fs::read(server.dir().join("kept.txt")).unwrap(),
        b"data"
    );
}

#[test]
fn a_read_only_export_refuses_writes_from_a_read_write_mount() {
    if skip() {
        return;
    }
    let server = Server::start(true);
    std::fs::write(server.dir().join("kept.txt"), b"data").unwrap();
    let client = Client::mount(&server, "/", &read_write()).unwrap();
    let e = std::fs::write(client.dir().join("new.txt"), b"x").unwrap_err();
    assert_eq!(errno(&e), Some(rustix::io::Errno::ROFS), "{e}");
    assert_eq!(
        std::fs::read(client.dir().join("kept.txt")).unwrap(),
        b"data"
    );
}

#[test]
fn a_subdirectory_mounts_as_the_root_and_a_missing_one_does_not() {
    if skip() {
        return;
    }
    let server = Server::start(false);
    std::fs::create_dir_all(server.dir().join("data/train")).unwrap();
    std::fs::write(server.dir().join("data/train/x"), b"train").unwrap();
    std::fs::write(server.dir().join("top"), b"top").unwrap();

    let client = Client::mount(&server, "/data/train", &read_write()).unwrap();
    assert_eq!(std::fs::read(client.dir().join("x")).unwrap(), b"train");
    assert!(!client.dir().join("top").exists());
    // No way up from the mount's root.
    assert!(!client.dir().join("../top").exists());

    match Client::mount(&server, "/data/missing", &read_write()) {
        Err(MountError::NoSuchDirectory(path)) => assert_eq!(path, "/data/missing"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("mounted a missing directory"),
    }
    match Client::mount(&server, "/top", &read_write()) {
        Err(MountError::NoSuchDirectory(_)) => {}
        Err(other) => panic!("wrong error for a file: {other}"),
        Ok(_) => panic!("mounted a file"),
    }
    assert!(matches!(
        Client::mount(&server, "/data/../etc", &read_write()),
        Err(MountError::InvalidPath(_))
    ));
}

#[test]
fn nobody_listening_is_cannot_connect_within_the_timeout() {
    if skip() {
        return;
    }
    let options = MountOptions {
        connect_timeout: Duration::from_secs(2),
        ..MountOptions::default()
    };

    // Refused: a port that was just free.
    let addr = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = Instant::now();
    let result = Client::mount_with(tcp_connector(addr, Duration::from_secs(60)), "/", &options);
    assert!(
        matches!(result, Err(MountError::CannotConnect(_))),
        "{:?}",
        result.err()
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // A closure that never returns is cut off by the mount's timeout.
    let started = Instant::now();
    let result = Client::mount_with(
        || {
            std::thread::sleep(Duration::from_secs(30));
            Err(std::io::ErrorKind::TimedOut.into())
        },
        "/",
        &options,
    );
    assert!(
        matches!(result, Err(MountError::CannotConnect(_))),
        "{:?}",
        result.err()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Connected, but nothing answers: the kernel accepts into the backlog.
    let silent = StdListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let result = Client::mount_with(
        tcp_connector(silent.local_addr().unwrap(), Duration::from_secs(60)),
        "/",
        &options,
    );
    assert!(
        matches!(result, Err(MountError::CannotConnect(_))),
        "{:?}",
        result.err()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn sixty_four_mebibytes_round_trip() {
    if skip() {
        return;
    }
    let server = Server::start(false);
    let client = Client::mount(&server, "/", &read_write()).unwrap();
    let data = pattern(64 << 20, 0x5eed);
    let path = client.dir().join("big.bin");
    let mut file = std::fs::File::create(&path).unwrap();
    for chunk in data.chunks(1 << 20) {
        file.write_all(chunk).unwrap();
    }
    file.sync_all().unwrap();
    drop(file);

    let mut back = Vec::with_capacity(data.len());
    std::fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == data, "bytes read through the mount differ");
    let on_disk = std::fs::read(server.dir().join("big.bin")).unwrap();
    assert!(on_disk == data, "bytes on disk differ");
}

#[test]
fn small_writes_are_gathered_and_seen_before_close() {
    if skip() {
        return;
    }
    let server = Server::start(false);
    let client = Client::mount(&server, "/", &read_write()).unwrap();
    let path = client.dir().join("small.bin");
    let data = pattern(3 << 20, 7);
    let mut file = std::fs::File::create(&path).unwrap();
    for (i, chunk) in data.chunks(4000).enumerate() {
        file.write_all(chunk).unwrap();
        if i % 97 == 0 {
            // Still open: size and contents already show through the mount.
            let so_far = (i + 1) * 4000;
            let so_far = so_far.min(data.len());
            assert_eq!(std::fs::metadata(&path).unwrap().len(), so_far as u64);
            let mut reader = std::fs::File::open(&path).unwrap();
            let mut back = Vec::new();
            reader.read_to_end(&mut back).unwrap();
            if back != data[..so_far] {
                let first = back.iter().zip(&data).position(|(a, b)| a != b);
                let disk = std::fs::read(server.dir().join("small.bin")).unwrap();
                let disk_first = disk.iter().zip(&data).position(|(a, b)| a != b);
                panic!(
                    "contents differ after {so_far} bytes: read {} bytes, first difference at {first:?}; disk has {} bytes, first difference at {disk_first:?}",
                    back.len(),
                    disk.len()
                );
            }
        }
    }
    drop(file);
    assert!(std::fs::read(server.dir().join("small.bin")).unwrap() == data);
}

#[test]
fn unmounting_does_not_wait_for_a_dead_server() {
    if skip() {
        return;
    }
    let server = Server::start(false);
    std::fs::write(server.dir().join("f"), b"x").unwrap();
    let mut client = Client::mount(&server, "/", &read_write()).unwrap();
    let path = client.dir().join("f");
    assert_eq!(std::fs::read(&path).unwrap(), b"x");
    drop(server);
    // This read retries (for two minutes by default) while the server is
    // down...
    let reader = std::thread::spawn(move || std::fs::read(path));
    std::thread::sleep(Duration::from_millis(500));
    // ...and unmounting ends it.
    let started = Instant::now();
    client.mounted.take().unwrap().unmount().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(reader.join().unwrap().is_err());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// Forwards connections to the server and can cut them all at once, as a
/// network blip or a restarted middlebox would.
struct Proxy {
    addr: SocketAddr,
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Self {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let live = Arc::new(Mutex::new(Vec::new()));
        let tracked = Arc::clone(&live);
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { return };
                let Ok(outbound) = TcpStream::connect(target) else {
                    return;
                };
                let mut tracked = tracked.lock().unwrap();
                tracked.push(inbound.try_clone().unwrap());
                tracked.push(outbound.try_clone().unwrap());
                for (mut from, mut to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { addr, live }
    }

    fn cut(&self) {
        for stream in self.live.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn a_broken_connection_is_replaced() {
    if skip() {
        return;
    }
    let server = Server::start(false);
    let proxy = Proxy::start(server.addr);
    let client = Client::mount_with(
        tcp_connector(proxy.addr, Duration::from_secs(5)),
        "/",
        &read_write(),
    )
    .unwrap();
    std::fs::write(client.dir().join("before"), b"1").unwrap();
    proxy.cut();
    std::fs::write(client.dir().join("after"), b"2").unwrap();
    assert_eq!(std::fs::read(server.dir().join("after")).unwrap(), b"2");
    assert_eq!(std::fs::read(client.dir().join("before")).unwrap(), b"1");
}

#[test]
fn handles_survive_a_restart_of_the_server() {
    use std::io::Read;
    if skip() {
        return;
    }
    let mut server = Server::start(false);
    std::fs::create_dir(server.dir().join("d")).unwrap();
    std::fs::write(server.dir().join("d/f"), b"before").unwrap();
    let client = Client::mount(&server, "/", &read_write()).unwrap();
    let mut open = std::fs::File::open(client.dir().join("d/f")).unwrap();
    server.restart();
    // The client's handles of the directory and the open file still work.
    std::fs::write(client.dir().join("d/g"), b"after").unwrap();
    assert_eq!(std::fs::read(server.dir().join("d/g")).unwrap(), b"after");
    let mut text = String::new();
    open.read_to_string(&mut text).unwrap();
    assert_eq!(text, "before");
    assert_eq!(
        std::fs::read_dir(client.dir().join("d")).unwrap().count(),
        2
    );
}
