//! The image layer store (issue 13) on real files, as root: layers in every
//! compression unpacked with their owners, modes, links, devices and xattrs,
//! whiteouts and opaque dirs that a real overlay mount honours, digest
//! mismatches and escaping paths refused with nothing left, layers shared
//! between images (one inode), 120 lowerdirs in one mount, a crash's
//! leftovers cleaned, one unpack for many concurrent callers, prune and gc
//! that never touch an image in use, and the import of this project's own
//! `make image` archive.

#![allow(clippy::unwrap_used)] // a test: a panic is its failure

#[path = "support/common.rs"]
mod common;
#[path = "support/image_store_layers.rs"]
mod layers;

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use layers::{DOCKER_GZIP, GZIP, Layer, Meta, ROOT_644, ROOT_755, Scratch, TAR, ZSTD};
use nix::mount::{MntFlags, MsFlags};
use rundmc::image::gc::GcThresholds;
use rundmc::image::store::{LayerBlob, Store, StoreError, short_id};
use serde_json::json;
use tar::EntryType;

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

fn diff(store: &Store, layer: &LayerBlob) -> PathBuf {
    store
        .root()
        .join("layers")
        .join(hex(&layer.digest))
        .join("diff")
}

/// A layer with one of everything a layer can hold.
fn rich_layer() -> Vec<u8> {
    let owned = Meta {
        uid: 1000,
        gid: 1001,
        mode: 0o750,
        mtime: 1_234_567_890,
    };
    Layer::new()
        .dir("etc", owned)
        .file(
            "etc/conf",
            b"key=value\n",
            Meta {
                mode: 0o640,
                ..owned
            },
        )
        .file(
            "bin/su",
            b"#!",
            Meta {
                mode: 0o4755,
                ..ROOT_755
            },
        )
        .symlink("etc/link", "conf")
        .hardlink("etc/hard", "etc/conf")
        .device(
            "dev/null",
            EntryType::Char,
            1,
            3,
            Meta {
                mode: 0o666,
                ..ROOT_644
            },
        )
        .device("run/fifo", EntryType::Fifo, 0, 0, ROOT_644)
        .file_with_xattr("etc/noted", b"n", "user.note", b"hello")
        .whiteout("etc/gone")
        .opaque("var")
        .tar()
}

#[test]
fn layers_unpack_in_every_compression_with_owners_modes_links_devices_and_whiteouts() {
    let scratch = Scratch::new("rich");
    let store = Store::open(scratch.path().join("store")).unwrap();
    let tar = rich_layer();
    // Distinct blobs, so each unpacks to its own directory.
    for (blob, media_type) in [
        (tar.clone(), TAR),
        (layers::gzip(&tar), GZIP),
        (layers::zstd(&tar), ZSTD),
        (
            layers::gzip(&[tar.clone(), vec![0; 1024]].concat()),
            DOCKER_GZIP,
        ),
    ] {
        let layer = layers::unpack(&store, &blob, media_type);
        assert!(store.has_layer(&layer.digest), "{media_type}");
        let d = diff(&store, &layer);
        assert_eq!(
            fs::read(d.join("etc/conf")).unwrap(),
            b"key=value\n",
            "{media_type}"
        );
        let conf = fs::metadata(d.join("etc/conf")).unwrap();
        assert_eq!(
            (conf.uid(), conf.gid(), conf.mode() & 0o7777),
            (1000, 1001, 0o640)
        );
        assert_eq!(conf.mtime(), 1_234_567_890);
        let etc = fs::metadata(d.join("etc")).unwrap();
        assert_eq!(
            (etc.uid(), etc.mode() & 0o7777, etc.mtime()),
            (1000, 0o750, 1_234_567_890)
        );
        assert_eq!(
            fs::metadata(d.join("bin/su")).unwrap().mode() & 0o7777,
            0o4755
        );
        assert_eq!(
            fs::read_link(d.join("etc/link")).unwrap(),
            Path::new("conf")
        );
        assert_eq!(
            fs::metadata(d.join("etc/hard")).unwrap().ino(),
            conf.ino(),
            "hard link"
        );
        let null = fs::symlink_metadata(d.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
        assert!(
            fs::symlink_metadata(d.join("run/fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_eq!(
            layers::xattr(&d.join("etc/noted"), "user.note").unwrap(),
            b"hello"
        );
        let gone = fs::symlink_metadata(d.join("etc/gone")).unwrap();
        assert!(
            gone.file_type().is_char_device(),
            "whiteout as overlay's 0/0 char device"
        );
        assert_eq!(gone.rdev(), 0);
        assert!(!d.join("etc/.wh.gone").exists());
        assert_eq!(
            layers::xattr(&d.join("var"), "trusted.overlay.opaque").unwrap(),
            b"y"
        );
        assert!(!d.join("var/.wh..wh..opq").exists());
    }
    assert!(layers::entries(&store.root().join("tmp")).is_empty());
}

/// Mounts an overlay of `lowers` (top first) with its upper in `dir`;
/// the mount point.
fn mount_overlay(dir: &Path, lowers: &[PathBuf]) -> (PathBuf, String) {
    let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).unwrap();
    }
    let lower: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .unwrap_or_else(|e| panic!("mount overlay ({} bytes of options): {e}", options.len()));
    (merged, options)
}

fn unmount(merged: &Path) {
    nix::mount::umount2(merged, MntFlags::MNT_DETACH).unwrap();
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn an_overlay_of_two_layers_honours_whiteouts_and_opaque_dirs() {
    let scratch = Scratch::new("overlay");
    let store = Store::open(scratch.path().join("store")).unwrap();
    let base = Layer::new()
        .file("a/keep", b"k", ROOT_644)
        .file("a/gone", b"g", ROOT_644)
        .file("opq/old", b"o", ROOT_644)
        .file("opq/sub/deep", b"d", ROOT_644)
        .tar();
    let top = Layer::new()
        .whiteout("a/gone")
        .opaque("opq")
        .file("opq/new", b"n", ROOT_644)
        .tar();
    let image = layers::commit(
        &store,
        Some("docker.io/library/two:1"),
        &[(layers::gzip(&base), GZIP), (layers::zstd(&top), ZSTD)],
        json!({"Cmd": ["/bin/sh"]}),
    );
    let lowers = store.lowerdirs(&image).unwrap();
    assert_eq!(lowers.len(), 2);
    let (merged, _) = mount_overlay(scratch.path(), &lowers);
    let keep = fs::read(merged.join("a/keep"));
    let gone = merged.join("a/gone").exists();
    let opq = names(&merged.join("opq"));
    unmount(&merged);
    assert_eq!(keep.unwrap(), b"k");
    assert!(!gone, "the whiteout deletes the lower file");
    assert_eq!(
        opq,
        BTreeSet::from(["new".to_string()]),
        "the opaque dir shows only its own"
    );
}

#[test]
fn a_digest_mismatch_or_an_escaping_path_is_refused_and_leaves_nothing() {
    let scratch = Scratch::new("refused");
    let store = Store::open(scratch.path().join("store")).unwrap();
    let blob = layers::gzip(&Layer::new().file("f", b"x", ROOT_644).tar());
    let mut layer = layers::layer_blob(&blob, GZIP);
    let claimed = format!("sha256:{}", "0".repeat(64));
    layer.digest = claimed.clone();
    let err = store.unpack_layer(&layer, &mut &blob[..]).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&claimed), "{err}");
    // A corrupt blob (one byte flipped) is a mismatch too, not a gzip error.
    let mut corrupt = blob.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    let err = store
        .unpack_layer(&layers::layer_blob(&blob, GZIP), &mut &corrupt[..])
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    // A stream cut short is a size mismatch, not an unexpected EOF.
    let err = store
        .unpack_layer(
            &layers::layer_blob(&blob, GZIP),
            &mut &blob[..blob.len() - 8],
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::SizeMismatch { .. }), "{err}");

    let outside = scratch.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let escapes = [
        Layer::new().raw_file("../escaped", b"x").tar(),
        Layer::new()
            .symlink("out", outside.to_str().unwrap())
            .file("out/pwned", b"x", ROOT_644)
            .tar(),
        Layer::new()
            .symlink("rel", "../../../..")
            .whiteout("rel/pwned")
            .tar(),
    ];
    for tar in escapes {
        let err = store
            .unpack_layer(&layers::layer_blob(&tar, TAR), &mut &tar[..])
            .unwrap_err();
        assert!(matches!(err, StoreError::UnsafePath { .. }), "{err}");
    }
    assert!(
        layers::entries(&outside).is_empty(),
        "nothing written outside"
    );
    assert!(!scratch.path().join("store/escaped").exists());
    for dir in ["layers", "tmp", "l"] {
        assert!(
            layers::entries(&store.root().join(dir)).is_empty(),
            "{dir}: {:?}",
            layers::entries(&store.root().join(dir))
        );
    }
}

#[test]
fn images_sharing_a_layer_share_its_files_and_120_layers_fit_one_mount() {
    let scratch = Scratch::new("shared");
    let store = Store::open(scratch.path().join("store")).unwrap();
    let base = layers::gzip(&Layer::new().file("lib/libc.so", b"libc", ROOT_755).tar());
    let one = layers::commit(
        &store,
        Some("docker.io/library/one:1"),
        &[
            (base.clone(), GZIP),
            (Layer::new().file("one", b"1", ROOT_644).tar(), TAR),
        ],
        json!({}),
    );
    let two = layers::commit(
        &store,
        Some("docker.io/library/two:1"),
        &[
            (base, GZIP),
            (Layer::new().file("two", b"2", ROOT_644).tar(), TAR),
        ],
        json!({}),
    );
    let ino = |image| {
        let lowers = store.lowerdirs(image).unwrap();
        fs::metadata(lowers[1].join("lib/libc.so")).unwrap().ino()
    };
    assert_eq!(ino(&one), ino(&two), "one copy of the shared layer");
    assert_eq!(
        names(&store.root().join("layers")).len(),
        3,
        "three layers, not four"
    );

    // 120 layers: one overlay mount, options within a page, with the store
    // at a root as long as /var/lib/rundmc/images.
    let root = Scratch::as_long_as_the_default_root();
    let store = Store::open(root.path()).unwrap();
    let deep: Vec<(Vec<u8>, &str)> = (0..120)
        .map(|i| {
            (
                Layer::new().file(&format!("f{i}"), b"x", ROOT_644).tar(),
                TAR,
            )
        })
        .collect();
    let image = layers::commit(&store, None, &deep, json!({}));
    let lowers = store.lowerdirs(&image).unwrap();
    assert_eq!(lowers.len(), 120);
    let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let lowerdir = format!("lowerdir={}", lowerdir.join(":"));
    assert!(lowerdir.len() < 3700, "{} bytes", lowerdir.len());
    let (merged, options) = mount_overlay(&root.path().join("mnt"), &lowers);
    let seen = names(&merged).len();
    unmount(&merged);
    assert!(options.len() < 4096, "{} bytes", options.len());
    assert_eq!(seen, 120);
}

#[test]
fn a_crash_mid_unpack_is_cleaned_on_open_and_the_layer_unpacks_again() {
    let scratch = Scratch::new("crash");
    let root = scratch.path().join("store");
    let store = Store::open(&root).unwrap();
    let blob = layers::gzip(&Layer::new().file("bin/app", b"app", ROOT_755).tar());
    let layer = layers::layer_blob(&blob, GZIP);
    // What a SIGKILL mid-unpack leaves: a partial tree in tmp/, the short
    // link already claimed, a half-written names file of a dead process.
    let tmp = root.join("tmp").join(hex(&layer.digest));
    fs::create_dir_all(tmp.join("diff/bin")).unwrap();
    fs::write(tmp.join("diff/bin/app"), b"ap").unwrap();
    let link = root.join("l").join(short_id(hex(&layer.digest), 0));
    std::os::unix::fs::symlink(format!("../layers/{}/diff", hex(&layer.digest)), &link).unwrap();
    let stale = root.join(".names.json.tmp-99999-0");
    fs::write(&stale, b"{").unwrap();
    assert!(
        !store.has_layer(&layer.digest),
        "a temp dir never passes for a layer"
    );

    drop(store);
    let store = Store::open(&root).unwrap();
    assert!(layers::entries(&root.join("tmp")).is_empty());
    assert!(
        fs::symlink_metadata(&link).is_err(),
        "dangling short link removed"
    );
    assert!(!stale.exists());
    assert!(!store.has_layer(&layer.digest));

    store.unpack_layer(&layer, &mut &blob[..]).unwrap();
    let image = layers::commit(&store, None, &[(blob, GZIP)], json!({}));
    let lowers = store.lowerdirs(&image).unwrap();
    assert_eq!(fs::read(lowers[0].join("bin/app")).unwrap(), b"app");

    // What a machine crash leaves of a volatile touch (an empty record)
    // reads as no image, and the rest of the store still lists.
    let lost = format!("sha256:{}", "e".repeat(64));
    fs::write(
        root.join("images").join(format!("{}.json", hex(&lost))),
        b"",
    )
    .unwrap();
    assert_eq!(store.list().unwrap(), vec![image]);
    assert!(store.resolve(&lost).unwrap().is_none());
}

/// A reader that, on its second read, says so and waits to be let go.
struct Paused<'a> {
    bytes: &'a [u8],
    reads: u32,
    started: std::sync::mpsc::Sender<()>,
    go: std::sync::mpsc::Receiver<()>,
}

impl Read for Paused<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        if self.reads == 2 {
            self.started.send(()).unwrap();
            self.go.recv().unwrap();
        }
        let n = self.bytes.len().min(buf.len()).min(512);
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

#[test]
fn opening_the_store_beside_an_unpack_leaves_that_unpack_alone() {
    // The CLI opens the store while the agent is unpacking a layer: its
    // temp dir is no crash's leftover (its digest's lock is held).
    let scratch = Scratch::new("beside");
    let root = scratch.path().join("store");
    let store = Store::open(&root).unwrap();
    let blob = Layer::new().file("big", &vec![7u8; 8192], ROOT_644).tar();
    let layer = layers::layer_blob(&blob, TAR);
    let tmp = root.join("tmp").join(hex(&layer.digest));
    let (started_tx, started) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let unpacking = s.spawn(|| {
            let mut reader = Paused {
                bytes: &blob,
                reads: 0,
                started: started_tx,
                go: go_rx,
            };
            store.unpack_layer(&layer, &mut reader)
        });
        started.recv().unwrap();
        // Nothing asserted before `go`: a panic here would leave the
        // unpacking thread waiting.
        let mid = tmp.is_dir();
        let beside = Store::open(&root);
        let survived = tmp.is_dir();
        go.send(()).unwrap();
        let unpacked = unpacking.join().unwrap();
        assert!(mid, "mid-unpack");
        assert!(survived, "another open removed a live unpack's temp dir");
        unpacked.unwrap();
        beside.unwrap();
    });
    assert_eq!(
        fs::read(diff(&store, &layer).join("big")).unwrap(),
        vec![7u8; 8192]
    );
    assert!(matches!(
        Store::open(scratch.path().join("a:b")),
        Err(StoreError::UnsafeRoot(_))
    ));
}

/// A reader that counts what is read from it, slowly enough that every
/// caller is inside unpack_layer before the first one finishes.
struct Counting<'a> {
    bytes: &'a [u8],
    read: Arc<AtomicU64>,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        std::thread::sleep(std::time::Duration::from_millis(2));
        let n = self.bytes.len().min(buf.len()).min(512);
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        self.read.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

#[test]
fn concurrent_unpacks_of_one_digest_unpack_it_once() {
    let scratch = Scratch::new("concurrent");
    let store = Store::open(scratch.path().join("store")).unwrap();
    let contents: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    let blob = Layer::new().file("big", &contents, ROOT_644).tar();
    let layer = layers::layer_blob(&blob, TAR);
    let read = Arc::new(AtomicU64::new(0));
    let threads = 6;
    let barrier = Arc::new(Barrier::new(threads));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (store, layer, blob, read, barrier) = (
                    store.clone(),
                    layer.clone(),
                    &blob,
                    read.clone(),
                    barrier.clone(),
                );
                s.spawn(move || {
                    barrier.wait();
                    let mut reader = Counting { bytes: blob, read };
                    store.unpack_layer(&layer, &mut reader)
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    });
    assert_eq!(
        read.load(Ordering::SeqCst),
        blob.len() as u64,
        "read once, by one caller"
    );
    assert_eq!(
        fs::read(diff(&store, &layer).join("big")).unwrap(),
        contents
    );
}

#[test]
fn prune_and_gc_never_remove_an_image_in_use_or_its_layers() {
    let scratch = Scratch::new("gc");
    let store = Store::open(scratch.path().join("store")).unwrap();
    let base = Layer::new().file("base", b"b", ROOT_644).tar();
    let layer = |name: &str| Layer::new().file(name, name.as_bytes(), ROOT_644).tar();
    let used = layers::commit(
        &store,
        Some("docker.io/library/used:1"),
        &[(base.clone(), TAR), (layer("u"), TAR)],
        json!({}),
    );
    let other = layers::commit(
        &store,
        Some("docker.io/library/other:1"),
        &[(base.clone(), TAR), (layer("o"), TAR)],
        json!({}),
    );
    let in_use: BTreeSet<String> = [used.id.clone()].into();

    let err = store
        .remove("docker.io/library/used:1", &in_use)
        .unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    // A second name: removing it removes only the name.
    let alias = store
        .commit(
            Some("docker.io/library/alias:1"),
            &other.id,
            &other.config_digest,
        )
        .unwrap();
    assert_eq!(alias.names.len(), 2);
    assert_eq!(
        store.remove("alias:1", &in_use).unwrap(),
        vec!["docker.io/library/alias:1"]
    );
    assert_eq!(
        store.resolve(&other.id).unwrap().unwrap().names,
        vec!["docker.io/library/other:1"]
    );

    // gc below its high-water mark removes nothing.
    let quiet = GcThresholds {
        high_percent: 100,
        low_percent: 100,
    };
    assert!(store.gc(&in_use, quiet).unwrap().images.is_empty());
    assert_eq!(store.list().unwrap().len(), 2);

    // Past it (any usage is over 0%), everything unused goes.
    let eager = GcThresholds {
        high_percent: 0,
        low_percent: 0,
    };
    let report = store.gc(&in_use, eager).unwrap();
    assert_eq!(report.images, vec![other.id.clone()]);
    assert_eq!(report.layers, 1, "only the other image's own layer");
    assert!(
        store
            .resolve("docker.io/library/other:1")
            .unwrap()
            .is_none()
    );
    let lowers = store.lowerdirs(&used).unwrap();
    assert_eq!(fs::read(lowers[0].join("u")).unwrap(), b"u");
    assert_eq!(fs::read(lowers[1].join("base")).unwrap(), b"b");

    let third = layers::commit(&store, None, &[(layer("t"), TAR)], json!({}));
    let report = store.prune(&in_use).unwrap();
    assert_eq!(report.images, vec![third.id]);
    assert_eq!(store.list().unwrap().len(), 1);
    let lowers = store.lowerdirs(&used).unwrap();
    assert_eq!(fs::read(lowers[1].join("base")).unwrap(), b"b");

    // Once nothing uses it, it goes with its layers and links.
    let report = store.prune(&BTreeSet::new()).unwrap();
    assert_eq!(report.images, vec![used.id]);
    assert_eq!(report.layers, 2);
    for dir in ["layers", "l", "images"] {
        assert!(layers::entries(&store.root().join(dir)).is_empty(), "{dir}");
    }
    assert_eq!(
        names(&store.root().join("locks")),
        BTreeSet::from(["names".to_string()])
    );
}

fn mkimage(out: &Path) {
    // As tests/image.rs builds it: the shim and init beside rundmc.
    let bin_dir = common::binary("rundmc-shim").parent().unwrap().to_owned();
    let run = Command::new(common::workspace().join("scripts/mkimage.py"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(out)
        .args(["--tag", "rundmc/rundmc:test"])
        .output()
        .unwrap();
    assert!(run.status.success(), "mkimage: {run:?}");
}

#[test]
fn make_images_archive_imports_as_oci_archive_layout_and_docker_archive() {
    let scratch = Scratch::new("import");
    let archive = scratch.path().join("rundmc.tar");
    mkimage(&archive);
    let store = Store::open(scratch.path().join("store")).unwrap();

    let images = store.import(&archive).unwrap();
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert_eq!(image.names, vec!["docker.io/rundmc/rundmc:test"]);
    assert_eq!(image.defaults.entrypoint, vec!["/usr/local/bin/rundmc"]);
    assert_eq!(image.defaults.cmd, vec!["agent"]);
    assert!(
        image.defaults.env.iter().any(|e| e.starts_with("PATH=")),
        "{:?}",
        image.defaults
    );
    let lowers = store.lowerdirs(image).unwrap();
    assert_eq!(lowers.len(), 1);
    assert!(lowers[0].join("usr/local/bin/rundmc-init").is_file());
    assert_eq!(
        fs::metadata(lowers[0].join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        store.resolve("rundmc/rundmc:test").unwrap().as_ref(),
        Some(image)
    );
    assert_eq!(
        store.resolve(&image.id[7..19]).unwrap().as_ref(),
        Some(image)
    );

    // The same archive extracted: an OCI layout directory, the same image.
    let layout = scratch.path().join("layout");
    fs::create_dir_all(&layout).unwrap();
    let tar = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(tar.success());
    assert_eq!(
        store.import(&layout).unwrap(),
        vec![store.resolve(&image.id).unwrap().unwrap()]
    );

    // Its docker-archive view alone: the same layer (already there), the
    // same defaults, and the name moves to the image it makes.
    fs::remove_file(layout.join("index.json")).unwrap();
    let docker = store.import(&layout).unwrap();
    assert_eq!(docker.len(), 1);
    assert_eq!(docker[0].layers, image.layers);
    assert_eq!(docker[0].defaults, image.defaults);
    assert_eq!(docker[0].names, vec!["docker.io/rundmc/rundmc:test"]);
    assert_eq!(store.lowerdirs(&docker[0]).unwrap(), lowers);

    // A corrupted layer blob is refused, naming its digest.
    let fresh = Store::open(scratch.path().join("fresh")).unwrap();
    let blob = layout.join("blobs/sha256").join(hex(&image.layers[0]));
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::set_permissions(&blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&blob, &bytes).unwrap();
    let err = fresh.import(&layout).unwrap_err().to_string();
    assert!(
        err.contains(&image.layers[0]) && err.contains("mismatch"),
        "{err}"
    );
    assert!(!fresh.has_layer(&image.layers[0]));
}

/// A `docker save` archive of the classic form: `<id>/layer.tar` (plain
/// tars, one a symlink to another's), `<hex>.json` configs whose diff_ids
/// are the layers' digests, and manifest.json.
fn docker_save(out: &Path, base: &[u8], top: &[u8], config_of: impl Fn(&[String]) -> Vec<u8>) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(bytes.len() as u64);
        tar.append_data(&mut h, name, bytes).unwrap();
    };
    add("base1/layer.tar", base);
    add("top1/layer.tar", top);
    let plain = config_of(&[layers::digest(base)]);
    let app = config_of(&[layers::digest(base), layers::digest(top)]);
    let plain_json = format!("{}.json", hex(&layers::digest(&plain)));
    let app_json = format!("{}.json", hex(&layers::digest(&app)));
    add(&plain_json, &plain);
    add(&app_json, &app);
    let manifest = json!([
        {"Config": plain_json, "RepoTags": ["busybox:latest"], "Layers": ["base1/layer.tar"]},
        {"Config": app_json, "RepoTags": ["app:1", "registry:5000/team/app:1"],
         "Layers": ["base2/layer.tar", "top1/layer.tar"]},
    ]);
    add("manifest.json", manifest.to_string().as_bytes());
    let mut link = tar::Header::new_ustar();
    link.set_entry_type(EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    tar.append_link(&mut link, "base2/layer.tar", "../base1/layer.tar")
        .unwrap();
    fs::write(out, tar.into_inner().unwrap()).unwrap();
}

#[test]
fn a_classic_docker_save_archive_imports_with_its_tags_and_shared_layers() {
    let scratch = Scratch::new("docker-save");
    let store = Store::open(scratch.path().join("store")).unwrap();
    let base = Layer::new().file("bin/busybox", b"bb", ROOT_755).tar();
    let top = Layer::new().file("app/run", b"run", ROOT_755).tar();
    let config_of = |diff_ids: &[String]| {
        serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/app/run"], "WorkingDir": "/app", "User": "1000:1000",
                       "Env": ["A=1"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap()
    };
    let archive = scratch.path().join("save.tar");
    docker_save(&archive, &base, &top, config_of);

    let images = store.import(&archive).unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].names, vec!["docker.io/library/busybox:latest"]);
    let app = &images[1];
    assert_eq!(
        app.names,
        vec!["docker.io/library/app:1", "registry:5000/team/app:1"]
    );
    assert_eq!(
        app.layers,
        vec![layers::digest(&base), layers::digest(&top)]
    );
    assert_eq!(app.defaults.cmd, vec!["/app/run"]);
    assert_eq!(app.defaults.working_dir.as_deref(), Some("/app"));
    assert_eq!(app.defaults.user.as_deref(), Some("1000:1000"));
    let lowers = store.lowerdirs(app).unwrap();
    assert_eq!(fs::read(lowers[0].join("app/run")).unwrap(), b"run");
    let shared = store.lowerdirs(&images[0]).unwrap();
    assert_eq!(
        fs::metadata(shared[0].join("bin/busybox")).unwrap().ino(),
        fs::metadata(lowers[1].join("bin/busybox")).unwrap().ino()
    );
    assert_eq!(store.resolve("app:1").unwrap().as_ref(), Some(app));

    // A layer whose bytes are not its diff_id is refused, naming it.
    let fresh = Store::open(scratch.path().join("fresh")).unwrap();
    let mut tampered = base.clone();
    tampered[600] ^= 0x01;
    let bad = scratch.path().join("bad.tar");
    docker_save(&bad, &tampered, &top, |_| {
        config_of(&[layers::digest(&base)])
    });
    let err = fresh.import(&bad).unwrap_err().to_string();
    assert!(
        err.contains(&layers::digest(&base)) && err.contains("mismatch"),
        "{err}"
    );
    assert!(fresh.list().unwrap().is_empty());
}

/// A collection asks what is in use only once it holds the store: a create
/// under way (holding the shared lock until its record names the image)
/// is counted, so its image is never collected under it.
#[test]
fn what_is_in_use_is_asked_under_the_stores_lock() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let scratch = Scratch::new("in-use-lock");
    let store = Arc::new(Store::open(scratch.path().join("store")).unwrap());
    let create = store.shared_lock().unwrap();
    let recorded = Arc::new(AtomicBool::new(false));
    let (collector, seen) = {
        let (store, recorded) = (Arc::clone(&store), Arc::clone(&recorded));
        let seen = Arc::new(AtomicBool::new(false));
        let saw = Arc::clone(&seen);
        let collector = std::thread::spawn(move || {
            let in_use = || {
                saw.store(recorded.load(Ordering::SeqCst), Ordering::SeqCst);
                Ok(BTreeSet::new())
            };
            store.prune_in_use(&in_use).unwrap();
        });
        (collector, seen)
    };
    // Let the collector reach the lock (scheduling, not an assertion).
    std::thread::sleep(std::time::Duration::from_millis(300));
    recorded.store(true, Ordering::SeqCst);
    drop(create);
    collector.join().unwrap();
    assert!(
        seen.load(Ordering::SeqCst),
        "in use was read before the create had recorded its image"
    );
}
