//! One layer blob into one directory: decompression by media type (tar,
//! tar+gzip, tar+zstd, Docker's rootfs.diff.tar.gzip), the sha256 of the
//! compressed bytes taken as they stream and checked against the layer's
//! digest, and the tar applied in overlay's form: OCI whiteouts (`.wh.x`)
//! become 0/0 character devices, opaque markers (`.wh..wh..opq`) the
//! `trusted.overlay.opaque` xattr. Ownership, modes, mtimes, symlinks,
//! hard links, device nodes and xattrs are kept. Nothing is written through
//! a symlink or outside the destination: a path with `..` or whose parent
//! is a symlink is refused.
//!
//! It owns no locks and no store paths: [`crate::image::store`] gives it a
//! fresh temporary directory and renames it into place once this succeeds.

use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};
use tar::{Entry, EntryType};

use super::store::{LayerBlob, StoreError};

/// How a layer's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`+gzip`, Docker's `.tar.gzip`).
    Gzip,
    /// zstd (`+zstd`).
    Zstd,
}

/// The compression a layer media type names; `None` for what is no layer
/// (a config, a manifest, a foreign type).
pub fn compression(media_type: &str) -> Option<Compression> {
    let m = media_type.trim();
    if !(m.contains(".layer.") || m.contains(".rootfs.")) {
        return None;
    }
    if m.ends_with(".tar+gzip") || m.ends_with(".tar.gzip") {
        Some(Compression::Gzip)
    } else if m.ends_with(".tar+zstd") {
        Some(Compression::Zstd)
    } else if m.ends_with(".tar") {
        Some(Compression::None)
    } else {
        None
    }
}

/// The compression a blob's first bytes show (a `docker save` archive
/// names its layers by path only).
pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// What a tar entry's file name means to overlay.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout<'a> {
    /// An ordinary entry.
    No,
    /// `.wh.<name>`: `<name>` of the layers below is deleted.
    Delete(&'a [u8]),
    /// `.wh..wh..opq`: the directory hides what the layers below hold in it.
    Opaque,
    /// Another `.wh..wh.` name (AUFS's hard-link directories): skipped.
    Meta,
}

/// How `name`, a path's last component, is to be applied.
pub fn whiteout(name: &[u8]) -> Whiteout<'_> {
    const PREFIX: &[u8] = b".wh.";
    const META: &[u8] = b".wh..wh.";
    if name == b".wh..wh..opq" {
        Whiteout::Opaque
    } else if name.starts_with(META) {
        Whiteout::Meta
    } else if let Some(rest) = name.strip_prefix(PREFIX) {
        Whiteout::Delete(rest)
    } else {
        Whiteout::No
    }
}

/// `path` of a tar entry made relative to the layer's root: leading `/`
/// and `.` components dropped, `..` refused. An empty result is the root.
pub fn safe_relative(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err("a `..` component leaves the layer"),
            Component::Normal(p) => out.push(p),
        }
    }
    Ok(out)
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Unpacks `blob` (the layer's compressed bytes) into `dest`, an empty
/// directory, and checks its digest and size; the bytes of the regular
/// files written. On an error `dest` holds a part: the caller removes it.
pub fn unpack(blob: &mut dyn Read, layer: &LayerBlob, dest: &Path) -> Result<u64, StoreError> {
    let kind = compression(&layer.media_type).ok_or_else(|| StoreError::MediaType {
        digest: layer.digest.clone(),
        media_type: layer.media_type.clone(),
    })?;
    let mut hashing = Hashing {
        inner: blob,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let applied = decompress_and_apply(&mut hashing, kind, layer, dest);
    // Whatever the tar left unread, up to one byte past the declared size:
    // the digest and size are checked before any gzip or tar error is
    // reported, so a corrupt blob is reported as such.
    let rest = layer.size.saturating_sub(hashing.bytes).saturating_add(1);
    if let Err(source) = io::copy(&mut (&mut hashing).take(rest), &mut io::sink()) {
        return Err(applied.err().unwrap_or_else(|| read_error(layer, source)));
    }
    verify(layer, hashing.hasher, hashing.bytes)?;
    applied
}

fn read_error(layer: &LayerBlob, source: io::Error) -> StoreError {
    StoreError::Read {
        digest: layer.digest.clone(),
        source,
    }
}

fn decompress_and_apply(
    raw: &mut dyn Read,
    kind: Compression,
    layer: &LayerBlob,
    dest: &Path,
) -> Result<u64, StoreError> {
    let mut reader: Box<dyn Read + '_> = match kind {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(raw).map_err(|source| read_error(layer, source))?,
        ),
    };
    let bytes = apply(&mut reader, layer, dest)?;
    // The rest of the stream (tar padding, the gzip trailer and its CRC).
    io::copy(&mut reader, &mut io::sink()).map_err(|source| read_error(layer, source))?;
    Ok(bytes)
}

fn verify(layer: &LayerBlob, hasher: Sha256, bytes: u64) -> Result<(), StoreError> {
    if bytes != layer.size {
        return Err(StoreError::SizeMismatch {
            digest: layer.digest.clone(),
            expected: layer.size,
            actual: bytes,
        });
    }
    let actual = format!("sha256:{}", hex(&hasher.finalize()));
    if actual != layer.digest {
        return Err(StoreError::DigestMismatch {
            digest: layer.digest.clone(),
            actual,
        });
    }
    Ok(())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Applies every entry of the tar in `reader` to `dest`; the bytes of the
/// regular files written.
fn apply(reader: &mut dyn Read, layer: &LayerBlob, dest: &Path) -> Result<u64, StoreError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(false);
    archive.set_unpack_xattrs(false);
    archive.set_mask(0);
    let mut dirs = Vec::new();
    let mut bytes = 0;
    let entries = archive
        .entries()
        .map_err(|source| read_error(layer, source))?;
    for entry in entries {
        let mut entry = entry.map_err(|source| read_error(layer, source))?;
        let raw = entry.path_bytes().into_owned();
        let raw = Path::new(std::ffi::OsStr::from_bytes(&raw));
        let rel = safe_relative(raw).map_err(|reason| StoreError::UnsafePath {
            digest: layer.digest.clone(),
            path: raw.into(),
            reason,
        })?;
        let ctx = EntryCtx { layer, dest, rel };
        if let Some(dir) = ctx.apply_entry(&mut entry)? {
            dirs.push(dir);
        }
        if entry.header().entry_type().is_file() {
            bytes += entry.size();
        }
    }
    // Last, as writing into a directory changes its mtime.
    for (path, mtime) in dirs {
        set_mtime(&path, mtime).map_err(|source| entry_error(layer, &path, source))?;
    }
    Ok(bytes)
}

fn entry_error(layer: &LayerBlob, path: &Path, source: io::Error) -> StoreError {
    StoreError::Entry {
        digest: layer.digest.clone(),
        path: path.into(),
        source,
    }
}

/// One entry being applied: the layer, its destination, the entry's path
/// relative to it.
struct EntryCtx<'a> {
    layer: &'a LayerBlob,
    dest: &'a Path,
    rel: PathBuf,
}

/// A directory and the mtime to give it once everything is in it.
type DirMtime = (PathBuf, i64);

impl EntryCtx<'_> {
    fn err(&self, source: io::Error) -> StoreError {
        entry_error(self.layer, &self.rel, source)
    }

    fn unsafe_path(&self, reason: &'static str) -> StoreError {
        StoreError::UnsafePath {
            digest: self.layer.digest.clone(),
            path: self.rel.clone(),
            reason,
        }
    }

    fn apply_entry<R: Read>(
        &self,
        entry: &mut Entry<'_, R>,
    ) -> Result<Option<DirMtime>, StoreError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            return Ok(None);
        }
        let Some(name) = self.rel.file_name() else {
            return Ok(None); // the layer's root itself
        };
        let parent = self.parent()?;
        match whiteout(name.as_bytes()) {
            Whiteout::Meta => Ok(None),
            Whiteout::Opaque => set_xattr(&parent, "trusted.overlay.opaque", b"y")
                .map(|()| None)
                .map_err(|e| self.err(e)),
            Whiteout::Delete(target) => self.whiteout(&parent, target).map(|()| None),
            Whiteout::No => self.write(entry, &parent.join(name)),
        }
    }

    /// The entry's parent directory under `dest`, made where missing,
    /// refused where a component is a symlink or no directory.
    fn parent(&self) -> Result<PathBuf, StoreError> {
        let mut dir = self.dest.to_path_buf();
        for part in self.rel.parent().into_iter().flat_map(Path::components) {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.unsafe_path("its parent is a symlink"));
                }
                Ok(_) => return Err(self.unsafe_path("its parent is not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&dir).map_err(|e| self.err(e))?;
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                        .map_err(|e| self.err(e))?;
                }
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(dir)
    }

    fn whiteout(&self, parent: &Path, target: &[u8]) -> Result<(), StoreError> {
        let target = Path::new(std::ffi::OsStr::from_bytes(target));
        if target.components().count() != 1
            || !matches!(target.components().next(), Some(Component::Normal(_)))
        {
            return Err(self.unsafe_path("a whiteout must name one entry"));
        }
        let path = parent.join(target);
        remove_existing(&path).map_err(|e| self.err(e))?;
        mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(|e| self.err(e.into()))
    }

    /// An ordinary entry; a directory comes back to have its mtime set last.
    fn write<R: Read>(
        &self,
        entry: &mut Entry<'_, R>,
        path: &Path,
    ) -> Result<Option<DirMtime>, StoreError> {
        let header = entry.header();
        let kind = header.entry_type();
        let mtime = header.mtime().unwrap_or(0).min(i64::MAX as u64) as i64;
        let xattrs = xattrs(entry).map_err(|e| self.err(e))?;
        match kind {
            // The inode is the target's, with its owner, mode and mtime.
            EntryType::Link => return self.hard_link(entry, path).map(|()| None),
            EntryType::Char | EntryType::Block | EntryType::Fifo => self.node(entry, path)?,
            _ => {
                if !kind.is_dir() {
                    remove_existing_non_dir(path).map_err(|e| self.err(e))?;
                }
                // Owner, then mode (so set-id bits stay), by the tar crate.
                entry.unpack(path).map_err(|e| self.err(e))?;
            }
        }
        for (name, value) in xattrs {
            set_xattr(path, &name, &value).map_err(|e| self.err(e))?;
        }
        if kind.is_dir() {
            return Ok(Some((path.into(), mtime)));
        }
        set_mtime(path, mtime).map_err(|e| self.err(e))?;
        Ok(None)
    }

    /// A hard link to an entry of this layer, never through a symlink.
    fn hard_link<R: Read>(&self, entry: &Entry<'_, R>, path: &Path) -> Result<(), StoreError> {
        let target = entry
            .link_name()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| self.unsafe_path("a hard link without a target"))?;
        let rel = safe_relative(&target).map_err(|reason| self.unsafe_path(reason))?;
        let source = EntryCtx {
            layer: self.layer,
            dest: self.dest,
            rel,
        };
        let Some(name) = source.rel.file_name() else {
            return Err(self.unsafe_path("a hard link to the layer's root"));
        };
        let source = source.parent()?.join(name);
        remove_existing_non_dir(path).map_err(|e| self.err(e))?;
        fs::hard_link(&source, path).map_err(|e| self.err(e))
    }

    /// A device node or fifo, with its owner and mode.
    fn node<R: Read>(&self, entry: &Entry<'_, R>, path: &Path) -> Result<(), StoreError> {
        let header = entry.header();
        let kind = match header.entry_type() {
            EntryType::Char => SFlag::S_IFCHR,
            EntryType::Block => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        remove_existing_non_dir(path).map_err(|e| self.err(e))?;
        mknod(
            path,
            kind,
            Mode::empty(),
            makedev(major.into(), minor.into()),
        )
        .map_err(|e| self.err(e.into()))?;
        chown(path, entry).map_err(|e| self.err(e))?;
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| self.err(e))
    }
}

/// Removes what is at `path` unless it is a directory.
fn remove_existing_non_dir(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes what is at `path`, a directory with everything in it too.
fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The entry's owner, numerically, on `path` itself (not a symlink's target).
fn chown<R: Read>(path: &Path, entry: &Entry<'_, R>) -> io::Result<()> {
    let header = entry.header();
    let (uid, gid) = (header.uid()?, header.gid()?);
    let uid = u32::try_from(uid).map_err(|_| invalid("uid out of range"))?;
    let gid = u32::try_from(gid).map_err(|_| invalid("gid out of range"))?;
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn set_mtime(path: &Path, mtime: i64) -> io::Result<()> {
    let t = TimeSpec::new(mtime, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// The entry's xattrs (PAX `SCHILY.xattr.*`), without overlay's own: a
/// layer must not forge whiteouts or redirects in another form.
fn xattrs<R: Read>(entry: &mut Entry<'_, R>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let Some(pax) = entry.pax_extensions()? else {
        return Ok(out);
    };
    for ext in pax {
        let ext = ext?;
        let Ok(key) = ext.key() else { continue };
        if let Some(name) = key.strip_prefix("SCHILY.xattr.")
            && !name.starts_with("trusted.overlay.")
        {
            out.push((name.to_string(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

/// Sets xattr `name` on `path` itself (never a symlink's target).
fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let c_name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: valid NUL-terminated strings and a buffer of `value.len()` bytes.
    let r = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // A filesystem without this namespace (user.* on a symlink).
        Some(libc::ENOTSUP) if name != "trusted.overlay.opaque" => Ok(()),
        _ => Err(io::Error::new(e.kind(), format!("setxattr {name}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_map_to_compression() {
        let cases = [
            (
                "application/vnd.oci.image.layer.v1.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            ("application/vnd.oci.image.config.v1+json", None),
            ("application/vnd.oci.image.layer.v1.tar+bzip2", None),
            ("", None),
        ];
        for (media_type, want) in cases {
            assert_eq!(compression(media_type), want, "{media_type}");
        }
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(b"etc/"), Compression::None);
    }

    #[test]
    fn whiteout_names_map_to_overlay() {
        assert_eq!(whiteout(b".wh.gone"), Whiteout::Delete(b"gone"));
        assert_eq!(whiteout(b".wh..wh..opq"), Whiteout::Opaque);
        assert_eq!(whiteout(b".wh..wh.plnk"), Whiteout::Meta);
        assert_eq!(whiteout(b"file.wh.x"), Whiteout::No);
        assert_eq!(whiteout(b"plain"), Whiteout::No);
    }

    #[test]
    fn paths_stay_in_the_layer() {
        assert_eq!(safe_relative(Path::new("./a/b")).unwrap(), Path::new("a/b"));
        assert_eq!(
            safe_relative(Path::new("/etc/passwd")).unwrap(),
            Path::new("etc/passwd")
        );
        assert_eq!(safe_relative(Path::new("./")).unwrap(), Path::new(""));
        assert!(safe_relative(Path::new("a/../../etc")).is_err());
        assert!(safe_relative(Path::new("../x")).is_err());
    }
}
