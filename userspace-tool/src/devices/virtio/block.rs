//! virtio-blk (virtio 1.2, 5.2): a disk backed by an image file, read-write or read-only.
//! Reads and writes go to the file at the sector's offset (`pread`/`pwrite`, through the host's
//! page cache, so a killed VMM loses nothing the guest wrote), and a FLUSH request is an
//! `fdatasync` of the file: what the guest synced is on the host's disk when it completes.
//! The image is locked (`flock`) so two VMs cannot write one file.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::{fd::AsRawFd, unix::fs::FileExt},
    path::{Path, PathBuf},
};

use virtio_bindings::{
    virtio_blk::{
        VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR,
        VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
        VIRTIO_BLK_T_OUT,
    },
    virtio_ids::VIRTIO_ID_BLOCK,
};
use vm_memory::GuestMemoryMmap;

use super::{Chain, Device, QUEUE_MAX};

/// virtio-blk's sectors are 512 bytes whatever the image's.
pub const SECTOR: u64 = 512;
/// The request header the driver puts first: type, reserved, sector.
const HEADER_LEN: usize = 16;
/// Data moves between guest memory and the file in pieces of at most this size.
const CHUNK: usize = 64 << 10;

/// Why a disk image cannot be used: each one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{}: {source}", path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{}: read-only: give it as --disk {},ro", path.display(), path.display())]
    ReadOnly { path: PathBuf },
    #[error("{}: in use by another process (locked)", path.display())]
    Locked { path: PathBuf },
    #[error("{}: {len} bytes, shorter than one 512-byte sector", path.display())]
    TooShort { path: PathBuf, len: u64 },
    #[error("{}: not a regular file or block device", path.display())]
    NotAFile { path: PathBuf },
}

/// A disk image, open and locked.
pub struct Disk {
    file: File,
    read_only: bool,
    /// Whole sectors (a trailing partial sector is not part of the disk).
    sectors: u64,
    /// The serial number GET_ID answers (the file name, cut to 20 bytes).
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
}

impl Disk {
    /// Opens `path` for reading and writing, or for reading only, and locks it (shared when
    /// read-only: several VMs may read one image).
    pub fn open(path: &Path, read_only: bool) -> Result<Disk, DiskError> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path).map_err(|source| {
            match (source.raw_os_error(), read_only) {
                (Some(libc::EACCES | libc::EROFS | libc::EPERM), false) => DiskError::ReadOnly { path: path.into() },
                _ => DiskError::Open { path: path.into(), source },
            }
        })?;
        let meta = file.metadata().map_err(|source| DiskError::Open { path: path.into(), source })?;
        // Root may open a file without write permission for writing: its mode still says
        // the file is not to be written.
        if !read_only && meta.permissions().readonly() {
            return Err(DiskError::ReadOnly { path: path.into() });
        }
        let len = if meta.file_type().is_file() {
            meta.len()
        } else if std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
            // A block device's size is where a seek to its end lands.
            std::io::Seek::seek(&mut &file, std::io::SeekFrom::End(0)).map_err(|source| DiskError::Open { path: path.into(), source })?
        } else {
            return Err(DiskError::NotAFile { path: path.into() });
        };
        let lock = if read_only { libc::LOCK_SH } else { libc::LOCK_EX };
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), lock | libc::LOCK_NB) } != 0 {
            let source = std::io::Error::last_os_error();
            match source.raw_os_error() {
                Some(libc::EWOULDBLOCK) => return Err(DiskError::Locked { path: path.into() }),
                // A host kernel without file locking, or a file system without it: the image
                // is used unlocked, as QEMU does where locking is not supported.
                Some(libc::ENOSYS | libc::ENOLCK | libc::EOPNOTSUPP) => {}
                _ => return Err(DiskError::Open { path: path.into(), source }),
            }
        }
        if len < SECTOR {
            return Err(DiskError::TooShort { path: path.into(), len });
        }
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let name = path.file_name().map_or_else(Vec::new, |n| n.as_encoded_bytes().to_vec());
        let n = name.len().min(id.len());
        id[..n].copy_from_slice(&name[..n]);
        Ok(Disk { file, read_only, sectors: len / SECTOR, id })
    }
}

/// The virtio-blk device over a [`Disk`].
pub struct Block {
    disk: Disk,
    name: String,
}

impl Block {
    /// Disk number `index` (its name in messages: virtio-blk0, ...).
    pub fn new(disk: Disk, index: usize) -> Self {
        Block { disk, name: format!("virtio-blk{index}") }
    }

    /// Serves one request: its status, and the data bytes it wrote into the chain.
    fn request(&self, header: [u8; HEADER_LEN], reader: &mut impl Source, writer: &mut impl Sink) -> (u32, usize) {
        let kind = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let sector = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        match kind {
            VIRTIO_BLK_T_IN => match self.range(sector, writer.room()) {
                Some(offset) => self.read(offset, writer),
                None => (VIRTIO_BLK_S_IOERR, 0),
            },
            VIRTIO_BLK_T_OUT if self.disk.read_only => (VIRTIO_BLK_S_IOERR, 0),
            VIRTIO_BLK_T_OUT => match self.range(sector, reader.left()) {
                Some(offset) => (self.write(offset, reader), 0),
                None => (VIRTIO_BLK_S_IOERR, 0),
            },
            VIRTIO_BLK_T_FLUSH => match self.disk.file.sync_data() {
                Ok(()) => (VIRTIO_BLK_S_OK, 0),
                Err(_) => (VIRTIO_BLK_S_IOERR, 0),
            },
            VIRTIO_BLK_T_GET_ID => {
                let n = writer.room().min(self.disk.id.len());
                match writer.put(&self.disk.id[..n]) {
                    Ok(()) => (VIRTIO_BLK_S_OK, n),
                    Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                }
            }
            _ => (VIRTIO_BLK_S_UNSUPP, 0),
        }
    }

    /// The byte offset of `len` bytes at `sector`, if they are whole sectors within the disk.
    fn range(&self, sector: u64, len: usize) -> Option<u64> {
        let sectors = (len as u64).is_multiple_of(SECTOR).then_some(len as u64 / SECTOR)?;
        (sector.checked_add(sectors)? <= self.disk.sectors).then_some(sector * SECTOR)
    }

    fn read(&self, offset: u64, writer: &mut impl Sink) -> (u32, usize) {
        let total = writer.room();
        let mut buf = vec![0u8; total.min(CHUNK)];
        let mut done = 0;
        while done < total {
            let n = (total - done).min(CHUNK);
            let piece = &mut buf[..n];
            if self.disk.file.read_exact_at(piece, offset + done as u64).is_err() || writer.put(piece).is_err() {
                return (VIRTIO_BLK_S_IOERR, done);
            }
            done += n;
        }
        (VIRTIO_BLK_S_OK, done)
    }

    fn write(&self, offset: u64, reader: &mut impl Source) -> u32 {
        let mut buf = vec![0u8; CHUNK];
        let mut done = 0u64;
        loop {
            let n = match reader.take(&mut buf) {
                Ok(0) => return VIRTIO_BLK_S_OK,
                Ok(n) => n,
                Err(_) => return VIRTIO_BLK_S_IOERR,
            };
            if self.disk.file.write_all_at(&buf[..n], offset + done).is_err() {
                return VIRTIO_BLK_S_IOERR;
            }
            done += n as u64;
        }
    }
}

/// A request's data from the driver: the chain's device-readable buffers after the header.
trait Source {
    /// Bytes left.
    fn left(&self) -> usize;
    /// Reads up to `buf.len()` bytes; 0 at the end.
    fn take(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
}

/// Where a request's results go: the chain's device-writable buffers before the status byte.
trait Sink {
    /// Bytes left.
    fn room(&self) -> usize;
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()>;
}

impl<B: vm_memory::bitmap::BitmapSlice> Source for virtio_queue::Reader<'_, B> {
    fn left(&self) -> usize {
        self.available_bytes()
    }

    fn take(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.read(buf)
    }
}

impl<B: vm_memory::bitmap::BitmapSlice> Sink for virtio_queue::Writer<'_, B> {
    fn room(&self) -> usize {
        self.available_bytes()
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_all(bytes)
    }
}

impl Device for Block {
    fn id(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn features(&self) -> u64 {
        let ro = if self.disk.read_only { 1 << VIRTIO_BLK_F_RO } else { 0 };
        1 << VIRTIO_BLK_F_FLUSH | 1 << VIRTIO_BLK_F_SEG_MAX | ro
    }

    fn queues(&self) -> usize {
        1
    }

    /// `capacity` (sectors), `size_max` (not offered), `seg_max`: the header and the status
    /// take two of a chain's descriptors, as QEMU counts.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 16];
        config[..8].copy_from_slice(&self.disk.sectors.to_le_bytes());
        config[12..].copy_from_slice(&(u32::from(QUEUE_MAX) - 2).to_le_bytes());
        super::read_bytes(&config, offset, data);
    }

    fn handle(&self, _queue: usize, chain: Chain<'_>, mem: &GuestMemoryMmap) -> u32 {
        let (Ok(mut reader), Ok(mut writer)) = (chain.clone().reader(mem), chain.writer(mem)) else { return 0 };
        // The status byte is the last device-writable byte; without one, no answer is possible.
        let Some(data_len) = writer.available_bytes().checked_sub(1) else { return 0 };
        let Ok(mut status) = writer.split_at(data_len) else { return 0 };
        let mut header = [0u8; HEADER_LEN];
        let (code, written) = match reader.read_exact(&mut header) {
            Ok(()) => self.request(header, &mut reader, &mut writer),
            Err(_) => (VIRTIO_BLK_S_IOERR, 0),
        };
        if status.write_all(&[code as u8]).is_err() {
            return 0;
        }
        written as u32 + 1
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Bytes in memory, as both ends of a request.
    struct Bytes(Vec<u8>, usize);

    impl Source for Bytes {
        fn left(&self) -> usize {
            self.0.len() - self.1
        }
        fn take(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.left());
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    impl Sink for Bytes {
        fn room(&self) -> usize {
            self.0.len() - self.1
        }
        fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            assert!(bytes.len() <= self.room());
            self.0[self.1..self.1 + bytes.len()].copy_from_slice(bytes);
            self.1 += bytes.len();
            Ok(())
        }
    }

    fn header(kind: u32, sector: u64) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        h
    }

    fn image(name: &str, len: usize) -> PathBuf {
        let path = std::env::temp_dir().join(format!("rvmx-test-{}-{name}", std::process::id()));
        std::fs::write(&path, vec![0u8; len]).unwrap();
        path
    }

    #[test]
    fn writes_then_reads_back_whole_sectors() {
        let path = image("rw", 4096);
        let blk = Block::new(Disk::open(&path, false).unwrap(), 0);
        let data: Vec<u8> = (0..1024).map(|i| i as u8).collect();
        let mut none = Bytes(vec![], 0);
        assert_eq!(blk.request(header(VIRTIO_BLK_T_OUT, 2), &mut Bytes(data.clone(), 0), &mut none), (VIRTIO_BLK_S_OK, 0));
        let mut back = Bytes(vec![0; 1024], 0);
        assert_eq!(blk.request(header(VIRTIO_BLK_T_IN, 2), &mut Bytes(vec![], 0), &mut back), (VIRTIO_BLK_S_OK, 1024));
        assert_eq!(back.0, data);
        assert_eq!(std::fs::read(&path).unwrap()[1024..2048], data[..]);
        assert_eq!(blk.request(header(VIRTIO_BLK_T_FLUSH, 0), &mut Bytes(vec![], 0), &mut none), (VIRTIO_BLK_S_OK, 0));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn refuses_what_lies_outside_the_disk_or_is_not_whole_sectors() {
        let path = image("range", 4096 + 100); // the partial sector is not part of the disk
        let blk = Block::new(Disk::open(&path, false).unwrap(), 0);
        let io = |kind, sector, len| blk.request(header(kind, sector), &mut Bytes(vec![7; len], 0), &mut Bytes(vec![0; len], 0)).0;
        assert_eq!(io(VIRTIO_BLK_T_IN, 7, 512), VIRTIO_BLK_S_OK);
        assert_eq!(io(VIRTIO_BLK_T_IN, 8, 512), VIRTIO_BLK_S_IOERR);
        assert_eq!(io(VIRTIO_BLK_T_OUT, 7, 1024), VIRTIO_BLK_S_IOERR);
        assert_eq!(io(VIRTIO_BLK_T_OUT, u64::MAX, 512), VIRTIO_BLK_S_IOERR);
        assert_eq!(io(VIRTIO_BLK_T_IN, 0, 100), VIRTIO_BLK_S_IOERR);
        assert_eq!(io(99, 0, 512), VIRTIO_BLK_S_UNSUPP);
        assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 4196], "nothing written");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_read_only_disk_refuses_writes_and_says_so() {
        let path = image("ro", 1024);
        let blk = Block::new(Disk::open(&path, true).unwrap(), 1);
        assert_ne!(blk.features() & 1 << VIRTIO_BLK_F_RO, 0);
        let r = blk.request(header(VIRTIO_BLK_T_OUT, 0), &mut Bytes(vec![1; 512], 0), &mut Bytes(vec![], 0));
        assert_eq!(r, (VIRTIO_BLK_S_IOERR, 0));
        assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 1024]);
        let mut id = Bytes(vec![0; 20], 0);
        assert_eq!(blk.request(header(VIRTIO_BLK_T_GET_ID, 0), &mut Bytes(vec![], 0), &mut id).0, VIRTIO_BLK_S_OK);
        let name = format!("rvmx-test-{}-ro", std::process::id());
        assert_eq!(id.0[..name.len().min(20)], name.as_bytes()[..name.len().min(20)]);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn bad_images_are_refused_with_one_line() {
        let short = image("short", 100);
        let e = Disk::open(&short, false).err().unwrap().to_string();
        assert!(e.ends_with("100 bytes, shorter than one 512-byte sector"), "{e}");
        let path = image("locked", 1024);
        let first = Disk::open(&path, false).unwrap();
        let e = Disk::open(&path, false).err().unwrap().to_string();
        assert!(e.ends_with("in use by another process (locked)"), "{e}");
        assert!(Disk::open(&path, true).is_err(), "not even shared while written");
        drop(first);
        let a = Disk::open(&path, true).unwrap();
        let _b = Disk::open(&path, true).expect("readers share an image");
        drop(a);
        let ro = image("mode", 1024);
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o444)).unwrap();
        let e = Disk::open(&ro, false).err().unwrap().to_string();
        assert!(e.ends_with(&format!("read-only: give it as --disk {},ro", ro.display())), "{e}");
        Disk::open(&ro, true).expect("read-only is fine with ,ro");
        std::fs::remove_file(ro).unwrap();
        let e = Disk::open(Path::new("/nonexistent/disk.img"), false).err().unwrap().to_string();
        assert!(e.contains("No such file"), "{e}");
        let e = Disk::open(Path::new("/"), true).err().unwrap().to_string();
        assert!(e.ends_with("not a regular file or block device"), "{e}");
        for p in [short, path] {
            std::fs::remove_file(p).unwrap();
        }
    }
}
