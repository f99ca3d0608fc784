//! Layer blobs and images made in the test, for the image store's tests:
//! a tar builder with owners, modes, mtimes, links, devices, PAX xattrs,
//! whiteouts and raw (unchecked) paths; gzip and zstd; digests; and an
//! image committed from layers as a pull would (unpack each, store the
//! manifest and config, commit).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use rundmc::image::store::{ImageRecord, LayerBlob, Store};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

pub const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A scratch directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("rundmc-imgstore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// At exactly `/tmp/rundmc-i<9 digits>`: as long as `/var/lib/rundmc/images`.
    pub fn as_long_as_the_default_root() -> Self {
        let dir = PathBuf::from(format!("/tmp/rundmc-i{:09}", std::process::id()));
        assert_eq!(dir.as_os_str().len(), "/var/lib/rundmc/images".len());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A layer tar, entry by entry.
pub struct Layer {
    tar: tar::Builder<Vec<u8>>,
}

/// Owner, mode and mtime of an entry.
#[derive(Clone, Copy)]
pub struct Meta {
    pub uid: u64,
    pub gid: u64,
    pub mode: u32,
    pub mtime: u64,
}

pub const ROOT_644: Meta = Meta {
    uid: 0,
    gid: 0,
    mode: 0o644,
    mtime: 1_600_000_000,
};
pub const ROOT_755: Meta = Meta {
    uid: 0,
    gid: 0,
    mode: 0o755,
    mtime: 1_600_000_000,
};

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Self {
        Layer {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: EntryType, meta: Meta, size: u64) -> Header {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mode(meta.mode);
        h.set_mtime(meta.mtime);
        h.set_size(size);
        h
    }

    pub fn dir(mut self, path: &str, meta: Meta) -> Self {
        let mut h = Self::header(EntryType::Directory, meta, 0);
        self.tar.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    pub fn file(mut self, path: &str, contents: &[u8], meta: Meta) -> Self {
        let mut h = Self::header(EntryType::Regular, meta, contents.len() as u64);
        self.tar.append_data(&mut h, path, contents).unwrap();
        self
    }

    /// A file preceded by a PAX header carrying `SCHILY.xattr.<name>`.
    pub fn file_with_xattr(
        mut self,
        path: &str,
        contents: &[u8],
        name: &str,
        value: &[u8],
    ) -> Self {
        let mut record = Vec::new();
        let body = [b" SCHILY.xattr.", name.as_bytes(), b"=", value, b"\n"].concat();
        let mut len = body.len() + 1;
        while format!("{len}").len() + body.len() != len {
            len = format!("{len}").len() + body.len();
        }
        record.extend_from_slice(format!("{len}").as_bytes());
        record.extend_from_slice(&body);
        let mut h = Self::header(EntryType::XHeader, ROOT_644, record.len() as u64);
        self.tar
            .append_data(&mut h, format!("PaxHeaders/{path}"), &record[..])
            .unwrap();
        self.file(path, contents, ROOT_644)
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(EntryType::Symlink, ROOT_755, 0);
        self.tar.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(EntryType::Link, ROOT_644, 0);
        self.tar.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn device(
        mut self,
        path: &str,
        kind: EntryType,
        major: u32,
        minor: u32,
        meta: Meta,
    ) -> Self {
        let mut h = Self::header(kind, meta, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.tar.append_data(&mut h, path, &[][..]).unwrap();
        self
    }

    /// `.wh.<name>` beside `path`'s name: deletes `path` of the layers below.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, b"", ROOT_644)
    }

    /// `<dir>/.wh..wh..opq`: `dir` hides what the layers below hold in it.
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", ROOT_644)
    }

    /// A regular file whose name is written as is, unchecked (`../x`).
    pub fn raw_file(mut self, name: &str, contents: &[u8]) -> Self {
        let mut h = Self::header(EntryType::Regular, ROOT_644, contents.len() as u64);
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        self.tar.append(&h, contents).unwrap();
        self
    }

    pub fn tar(self) -> Vec<u8> {
        self.tar.into_inner().unwrap()
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 1).unwrap()
}

pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The descriptor of `blob` as `media_type`.
pub fn layer_blob(blob: &[u8], media_type: &str) -> LayerBlob {
    LayerBlob {
        digest: digest(blob),
        media_type: media_type.into(),
        size: blob.len() as u64,
    }
}

/// Unpacks `blob` into the store.
pub fn unpack(store: &Store, blob: &[u8], media_type: &str) -> LayerBlob {
    let layer = layer_blob(blob, media_type);
    store.unpack_layer(&layer, &mut &blob[..]).unwrap();
    layer
}

/// An image of `layers` (blob, media type; base first) whose config has
/// `config` (the `config` object), committed under `name` as a pull does.
pub fn commit(
    store: &Store,
    name: Option<&str>,
    layers: &[(Vec<u8>, &str)],
    config: serde_json::Value,
) -> ImageRecord {
    let descriptors: Vec<serde_json::Value> = layers
        .iter()
        .map(|(blob, media_type)| {
            let l = unpack(store, blob, media_type);
            serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})
        })
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(&config), "size": config.len()},
        "layers": descriptors,
    }))
    .unwrap();
    store.put_blob(&digest(&config), &config).unwrap();
    store.put_blob(&digest(&manifest), &manifest).unwrap();
    store
        .commit(name, &digest(&manifest), &digest(&config))
        .unwrap()
}

/// The bytes of every entry (recursively) under `dir`, for "nothing left".
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(read) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in read {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            out.extend(entries(&path));
        }
    }
    out
}

/// The value of xattr `name` on `path` itself; `None` when absent.
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let c_name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of its length.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}
