//! Read-only file maps, and the process signals that concern files: the only
//! `unsafe` code of meki outside the SIMD kernels.
//!
//! - [`FileMap`]: a read-only map of a whole file. A mapped file that shrinks
//!   afterwards (truncated by another process, a full disk during a copy...)
//!   makes reads past its new end raise SIGBUS; the handler installed by the
//!   first map prints which file it was and exits with status 1 instead of
//!   dying silently of the signal.
//! - [`cleanup_on_signal`]: SIGINT, SIGTERM and SIGHUP remove the temporary
//!   files of unfinished [`super::GgufWriter`]s before the process dies of the
//!   signal, and SIGXFSZ (file size limit, `ulimit -f`) is turned into an
//!   ordinary write error (EFBIG), which the writer cleans up after.

use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A read-only map of a whole file (empty files are not mapped).
pub struct FileMap {
    map: Option<Mmap>,
    id: u64,
}

impl std::ops::Deref for FileMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl std::fmt::Debug for FileMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileMap({} bytes)", self.len())
    }
}

impl FileMap {
    /// Maps `file` (opened from `path`, which names it in messages).
    pub fn map(file: &File, path: &Path) -> std::io::Result<FileMap> {
        let len = file.metadata()?.len();
        if len == 0 {
            return Ok(FileMap { map: None, id: 0 });
        }
        // SAFETY: the map is read-only and private to this process, and every
        // slice handed out borrows the `FileMap`, so no slice outlives the map.
        // What memory safety cannot cover is the file shrinking underneath
        // us: reads past the new end raise SIGBUS, which `sigbus::install`
        // turns into a clear message and exit status 1 (never a read of
        // unmapped memory that continues).
        let map = unsafe { Mmap::map(file) }?;
        let id = sigbus::register(map.as_ptr() as usize, map.len(), path);
        Ok(FileMap { map: Some(map), id })
    }

    /// Whether `offset..offset + len` lies inside the map (no overflow).
    fn in_range(&self, offset: usize, len: usize) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.len())
    }

    /// `madvise(WILLNEED)` over `offset..offset + len` (ignored when out of range).
    pub fn advise_willneed(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        if let Some(map) = &self.map {
            if len > 0 && self.in_range(offset, len) {
                let _ = map.advise_range(memmap2::Advice::WillNeed, offset, len);
            }
        }
        #[cfg(not(unix))]
        let _ = (offset, len);
    }

    /// Maps the pages of `offset..offset + len` into this process's page
    /// tables now (`madvise(MADV_POPULATE_READ)`, Linux 5.14+: reading them
    /// from storage first if they are not cached), so later reads take no
    /// page faults; llama.cpp maps its models with `MAP_POPULATE` for the
    /// same reason. Elsewhere (older kernels, Android, other systems) it
    /// falls back to `WILLNEED`; out-of-range requests are ignored.
    pub fn populate(&self, offset: usize, len: usize) {
        #[cfg(target_os = "linux")]
        if let Some(map) = &self.map {
            let advice = memmap2::Advice::PopulateRead;
            if len > 0
                && self.in_range(offset, len)
                && map.advise_range(advice, offset, len).is_ok()
            {
                return;
            }
        }
        self.advise_willneed(offset, len);
    }

    /// Makes `offset..offset + len` cold again, for benchmarks of reading
    /// from storage: drops the range from this process's map and asks the
    /// kernel to drop its pages from the page cache (`file` is the mapped
    /// file; pages that other processes map stay). The next read of the
    /// range faults its pages in from the file. Unix only; elsewhere an
    /// `Unsupported` error.
    pub fn evict(&self, file: &File, offset: usize, len: usize) -> std::io::Result<()> {
        if !self.in_range(offset, len) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "evict: {offset}+{len} is outside the {}-byte map",
                    self.len()
                ),
            ));
        }
        #[cfg(unix)]
        if let Some(map) = &self.map {
            use std::os::fd::AsRawFd;
            // SAFETY: the map is private, read-only and never written, so
            // MADV_DONTNEED only drops its page-table entries: the memory stays
            // mapped, and the next read of the range sees the same bytes again
            // (faulted in from the file), so slices borrowed from it stay valid.
            unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) }?;
            let (off, n) = (offset as libc::off_t, len as libc::off_t);
            // SAFETY: a plain system call on an open descriptor; it reads no
            // memory of ours.
            let rc =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), off, n, libc::POSIX_FADV_DONTNEED) };
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            return Ok(());
        }
        #[cfg(not(unix))]
        let _ = file;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "evicting pages needs a Unix map",
        ))
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        if self.map.is_some() {
            sigbus::unregister(self.id);
        }
    }
}

/// One mapped range, for naming the file in the SIGBUS message.
struct Mapped {
    id: u64,
    start: usize,
    len: usize,
    /// The message printed when a read in this range faults, built at map
    /// time: the signal handler may not allocate.
    message: Vec<u8>,
}

static MAPPED: Mutex<Vec<Mapped>> = Mutex::new(Vec::new());

/// Temporary files of unfinished writers, as NUL-terminated paths (built
/// ahead: the signal handler may not allocate).
static TEMP_FILES: Mutex<Vec<(PathBuf, Vec<u8>)>> = Mutex::new(Vec::new());

/// Records a writer's temporary file, removed if a signal ends the process.
pub(crate) fn register_temp_file(path: &Path) {
    let mut c = path.as_os_str().as_encoded_bytes().to_vec();
    c.push(0);
    if let Ok(mut v) = TEMP_FILES.lock() {
        v.push((path.to_path_buf(), c));
    }
}

/// Forgets a temporary file (renamed into place, or removed).
pub(crate) fn unregister_temp_file(path: &Path) {
    if let Ok(mut v) = TEMP_FILES.lock() {
        v.retain(|(p, _)| p != path);
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP remove unfinished output files before the
/// process ends (with the signal's usual status), and makes a file-size limit
/// (SIGXFSZ) an EFBIG write error instead of a kill. For programs that write
/// GGUF files (`meki-convert`); call once at startup.
pub fn cleanup_on_signal() {
    #[cfg(unix)]
    signals::install_cleanup();
}

#[cfg(unix)]
mod signals {
    use super::TEMP_FILES;

    extern "C" fn on_terminate(sig: libc::c_int) {
        // Only async-signal-safe calls here: try_lock (an atomic swap, no
        // waiting), unlink, signal, raise.
        if let Ok(files) = TEMP_FILES.try_lock() {
            for (_, c) in files.iter() {
                // SAFETY: `c` is a NUL-terminated path built at registration.
                unsafe { libc::unlink(c.as_ptr().cast()) };
            }
        }
        // SAFETY: restoring the default action and re-raising ends the
        // process with the signal's own status, as if never caught.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }

    pub(super) fn install_cleanup() {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: `on_terminate` is an `extern "C" fn(c_int)` that only
            // makes async-signal-safe calls; `sigaction` is given a zeroed,
            // fully initialized struct.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_terminate as *const () as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        // SAFETY: ignoring SIGXFSZ makes write(2) past RLIMIT_FSIZE fail with
        // EFBIG, an ordinary io::Error the writer reports and cleans up after.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
    }
}

mod sigbus {
    use super::{Mapped, MAPPED};
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Once;

    static NEXT_ID: AtomicU64 = AtomicU64::new(1);

    pub(super) fn register(start: usize, len: usize, path: &Path) -> u64 {
        #[cfg(unix)]
        {
            static INSTALL: Once = Once::new();
            INSTALL.call_once(install);
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let message = format!(
            "meki: {}: the file was truncated or changed while in use (SIGBUS reading it); stopping\n",
            path.display()
        )
        .into_bytes();
        if let Ok(mut v) = MAPPED.lock() {
            v.push(Mapped {
                id,
                start,
                len,
                message,
            });
        }
        id
    }

    pub(super) fn unregister(id: u64) {
        if let Ok(mut v) = MAPPED.lock() {
            v.retain(|m| m.id != id);
        }
    }

    #[cfg(unix)]
    extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers.
        let addr = unsafe { (*info).si_addr() } as usize;
        let write = |b: &[u8]| {
            // SAFETY: write(2) of a live buffer to stderr, async-signal-safe.
            unsafe { libc::write(2, b.as_ptr().cast(), b.len()) };
        };
        // try_lock: never wait in a signal handler (the lock may be held by
        // the very thread that faulted).
        if let Ok(maps) = MAPPED.try_lock() {
            if let Some(m) = maps
                .iter()
                .find(|m| addr >= m.start && addr - m.start < m.len)
            {
                write(&m.message);
                // SAFETY: _exit is async-signal-safe and ends the process now.
                unsafe { libc::_exit(1) };
            }
        } else {
            write(
                b"meki: a mapped file was truncated or changed while in use (SIGBUS); stopping\n",
            );
            // SAFETY: as above.
            unsafe { libc::_exit(1) };
        }
        // Not a mapped file of ours: restore the default action; returning
        // re-runs the faulting access, which then ends the process as usual.
        // SAFETY: resetting a signal's disposition is async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }

    #[cfg(unix)]
    fn install() {
        // SAFETY: `on_sigbus` has the SA_SIGINFO handler signature and only
        // makes async-signal-safe calls; the struct is zeroed then filled.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FileMap;
    use std::path::PathBuf;

    /// A temporary file of `len` patterned bytes (`tag` names it), opened and
    /// mapped.
    fn mapped_temp(tag: &str, len: usize) -> (PathBuf, std::fs::File, FileMap, Vec<u8>) {
        let path = std::env::temp_dir().join(format!("meki-{tag}-{}.bin", std::process::id()));
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let map = FileMap::map(&file, &path).unwrap();
        (path, file, map, data)
    }

    #[test]
    fn evicted_range_reads_back_the_same_bytes() {
        let (path, file, map, data) = mapped_temp("evict", 3 * 4096 + 100);
        assert_eq!(&map[..], &data[..]);
        // An unaligned range inside the map: dropped, then read back.
        #[cfg(unix)]
        {
            map.evict(&file, 100, 2 * 4096).unwrap();
            assert_eq!(&map[..], &data[..]);
        }
        // Out of range (and overflowing) ranges are errors, not UB.
        assert!(map.evict(&file, data.len() - 10, 11).is_err());
        assert!(map.evict(&file, usize::MAX, 2).is_err());
        drop(map);
        std::fs::remove_file(&path).unwrap();
    }

    /// Resident KiB of the mapping that starts at `start` (`/proc/self/smaps`).
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    fn mapping_rss_kib(start: usize) -> Option<usize> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let head = format!("{start:x}-");
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head)).skip(1);
        let rss = lines.find(|l| l.starts_with("Rss:"))?;
        rss.split_whitespace().nth(1)?.parse().ok()
    }

    #[test]
    fn populate_maps_the_range_and_checks_it() {
        let (path, _file, map, data) = mapped_temp("populate", 4 * 4096 + 100);
        // Ranges past the end or overflowing: ignored, never a fault or a
        // panic.
        map.populate(data.len() - 10, 11);
        map.populate(usize::MAX, 2);
        map.populate(5, usize::MAX);
        // An unaligned range inside the map: its pages (the file was just
        // written, so cached) are mapped without being read.
        map.populate(100, 2 * 4096);
        // Judged on x86_64 Linux only: the aarch64 tests run under qemu-user,
        // which accepts the advice without acting on it (the pages appear
        // only once read).
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        if let Some(kib) = mapping_rss_kib(map.as_ptr() as usize) {
            assert!(kib >= 12, "{kib} KiB resident after populating 3 pages");
        }
        assert_eq!(&map[..], &data[..]);
        drop(map);
        std::fs::remove_file(&path).unwrap();
    }
}
