//! A weight arena: one anonymous memory region holding the matrices a model
//! copies out of its file at load (repacked matrices, and the output head).
//!
//! One region instead of one heap allocation per matrix: it starts on a
//! 2 MiB boundary and is advised `MADV_HUGEPAGE` (Linux, Android), so that
//! with transparent huge pages in `madvise` mode (the usual default) decode
//! streams its weights through 2 MiB pages: fewer TLB misses (costly under
//! nested paging), hardware prefetchers not stopped at every 4 KiB, and the
//! same placement for two models with the same matrices. `MEKI_HUGEPAGES=0`
//! skips the advice (A/B in one binary). The region is sized exactly: the
//! sum of the matrices, each at a 64-byte aligned offset; its whole 2 MiB
//! pages are advised, and the last, partial one only when at least half of
//! it is used, so the resident set grows less than 1 MiB past the sum (the
//! mapping has 4 MiB of untouched, never-resident slack for alignment). The
//! partial page matters for small arenas: MeKi's projections, in an arena
//! of their own until s21 (28 x 147 KiB = 3.9 MiB at the 0.6B shape), were
//! half on 4 KiB pages.
//!
//! Use: [`ArenaPlan::push`] every matrix's size, [`Arena::allocate`],
//! fill the disjoint slices of [`Arena::split_mut`] (in parallel), then
//! share the region ([`std::sync::Arc`]) with the matrices that read it.

use memmap2::MmapMut;
use std::ops::Range;
use std::sync::Arc;

/// Offsets of the matrices in the arena.
const MATRIX_ALIGN: usize = 64;
/// Start of the arena: a huge page.
const HUGE_PAGE: usize = 2 << 20;

/// Bytes of an arena of `len` bytes advised huge pages: its whole huge
/// pages, and the last partial one if at least half of it is used.
fn advised_bytes(len: usize) -> usize {
    let whole = len / HUGE_PAGE * HUGE_PAGE;
    if len - whole >= HUGE_PAGE / 2 {
        whole + HUGE_PAGE
    } else {
        whole
    }
}

/// The ranges of the matrices to be placed in an arena, in order.
#[derive(Default, Debug)]
pub struct ArenaPlan {
    ranges: Vec<Range<usize>>,
    len: usize,
}

impl ArenaPlan {
    /// Reserves `bytes` at the next 64-byte aligned offset; returns the range.
    pub fn push(&mut self, bytes: usize) -> Result<Range<usize>, String> {
        let start = self
            .len
            .checked_next_multiple_of(MATRIX_ALIGN)
            .ok_or("weight arena size overflows")?;
        let end = start
            .checked_add(bytes)
            .filter(|&e| e <= isize::MAX as usize - 2 * HUGE_PAGE)
            .ok_or("weight arena size overflows")?;
        self.ranges.push(start..end);
        self.len = end;
        Ok(start..end)
    }

    /// Bytes of the arena (the end of the last matrix).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn ranges(&self) -> &[Range<usize>] {
        &self.ranges
    }
}

/// Whether arenas are advised huge pages (env `MEKI_HUGEPAGES`, default on).
pub fn huge_pages_wanted() -> bool {
    crate::env_switch("MEKI_HUGEPAGES")
}

/// The region: an anonymous map with `len` bytes used from `start` (2 MiB
/// aligned in the address space).
pub struct Arena {
    map: MmapMut,
    start: usize,
    len: usize,
    /// Bytes advised `MADV_HUGEPAGE` (0 if not advised).
    huge_bytes: usize,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Arena({} bytes, {} advised huge)",
            self.len, self.huge_bytes
        )
    }
}

impl Arena {
    /// A zeroed arena for `plan` (`what` names it in errors); huge pages
    /// as `huge` says. An allocation failure is an error, not a panic.
    pub fn allocate(plan: &ArenaPlan, huge: bool, what: &str) -> Result<Arena, String> {
        let len = plan.len();
        // Slack: up to one huge page to align the start, half of one
        // advised past the end.
        let map_len = len + 2 * HUGE_PAGE;
        let map = MmapMut::map_anon(map_len).map_err(|e| {
            format!(
                "{what}: cannot allocate the {:.1} MiB weight arena: {e}",
                len as f64 / (1 << 20) as f64
            )
        })?;
        let base = map.as_ptr() as usize;
        let start = base.next_multiple_of(HUGE_PAGE) - base;
        let mut arena = Arena {
            map,
            start,
            len,
            huge_bytes: 0,
        };
        if huge {
            arena.advise_huge();
        }
        Ok(arena)
    }

    /// Advises the used range's huge pages ([`advised_bytes`])
    /// `MADV_HUGEPAGE`; a kernel without THP refuses it, which only costs
    /// speed.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn advise_huge(&mut self) {
        let bytes = advised_bytes(self.len);
        if bytes == 0 {
            return;
        }
        // SAFETY: `start..start + bytes` lies inside the live mapping owned
        // by `self.map` (mapped `len + 2 * HUGE_PAGE` bytes, `start <
        // HUGE_PAGE`, `bytes < len + HUGE_PAGE`)
        // and starts on a page boundary; MADV_HUGEPAGE changes how pages are
        // backed, never their contents, and no reference into the map is
        // handed out yet.
        let r = unsafe {
            libc::madvise(
                self.map.as_mut_ptr().add(self.start).cast(),
                bytes,
                libc::MADV_HUGEPAGE,
            )
        };
        if r == 0 {
            self.huge_bytes = bytes;
        }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn advise_huge(&mut self) {}

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes advised huge pages (0 when not advised or refused).
    pub fn huge_bytes(&self) -> usize {
        self.huge_bytes
    }

    /// The disjoint slices of `plan`'s ranges, to fill (in parallel).
    pub fn split_mut(&mut self, plan: &ArenaPlan) -> Result<Vec<&mut [u8]>, String> {
        let mut rest = &mut self.map[self.start..self.start + self.len];
        let mut at = 0;
        let mut out = Vec::with_capacity(plan.ranges.len());
        for r in &plan.ranges {
            if r.start < at || r.end > self.len {
                return Err(format!("weight arena: range {r:?} outside the plan"));
            }
            let tail = std::mem::take(&mut rest);
            let (_, tail) = tail.split_at_mut(r.start - at);
            let (piece, tail) = tail.split_at_mut(r.len());
            out.push(piece);
            rest = tail;
            at = r.end;
        }
        Ok(out)
    }
}

impl AsRef<[u8]> for Arena {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }
}

/// A range of a shared arena: a copied (not repacked) matrix.
#[derive(Clone)]
pub struct ArenaSlice {
    arena: Arc<Arena>,
    range: Range<usize>,
}

impl std::fmt::Debug for ArenaSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArenaSlice({:?})", self.range)
    }
}

impl ArenaSlice {
    /// `range` of `arena`; `None` if it lies outside.
    pub fn new(arena: Arc<Arena>, range: Range<usize>) -> Option<ArenaSlice> {
        (range.start <= range.end && range.end <= arena.len())
            .then_some(ArenaSlice { arena, range })
    }

    pub fn bytes(&self) -> &[u8] {
        &(*self.arena).as_ref()[self.range.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_aligns_offsets_and_sums_exactly() {
        let mut p = ArenaPlan::default();
        assert_eq!(p.push(100).unwrap(), 0..100);
        assert_eq!(p.push(10).unwrap(), 128..138);
        assert_eq!(p.push(0).unwrap(), 192..192);
        assert_eq!(p.push(64).unwrap(), 192..256);
        assert_eq!(p.len(), 256);
        assert!(p.push(usize::MAX).is_err());
    }

    #[test]
    fn arena_is_huge_page_aligned_and_slices_are_disjoint() {
        let mut p = ArenaPlan::default();
        for n in [3 << 20, 5, 1 << 20] {
            p.push(n).unwrap();
        }
        let mut a = Arena::allocate(&p, true, "test").unwrap();
        assert_eq!(a.len(), p.len());
        let base = a.as_ref().as_ptr() as usize;
        assert_eq!(base % HUGE_PAGE, 0);
        for (i, s) in a.split_mut(&p).unwrap().into_iter().enumerate() {
            s.fill(i as u8 + 1);
        }
        let a = Arc::new(a);
        for (i, r) in p.ranges().iter().enumerate() {
            let s = ArenaSlice::new(a.clone(), r.clone()).unwrap();
            assert_eq!(s.bytes().len(), r.len());
            assert!(s.bytes().iter().all(|&b| b == i as u8 + 1));
        }
        // The 64-byte gaps stay zero.
        assert!((*a).as_ref()[(3 << 20) + 5..(3 << 20) + 64]
            .iter()
            .all(|&b| b == 0));
        if cfg!(target_os = "linux") && huge_pages_wanted() {
            // Refused only without THP support; then nothing is advised.
            assert!(a.huge_bytes() == 4 << 20 || a.huge_bytes() == 0);
        }
        assert!(ArenaSlice::new(a, 0..p.len() + 1).is_none());
    }

    #[test]
    fn partial_last_huge_page_is_advised_when_half_used() {
        let mib = 1 << 20;
        assert_eq!(advised_bytes(0), 0);
        assert_eq!(advised_bytes(mib - 1), 0);
        assert_eq!(advised_bytes(mib), 2 * mib);
        assert_eq!(advised_bytes(4 * mib + 64), 4 * mib);
        // MeKi's 0.6B-shape projections: 56 x 72 KiB.
        assert_eq!(advised_bytes(4032 << 10), 4 * mib);
        for len in [mib, 3 * mib + 1, (4032 << 10) + 7] {
            let mut p = ArenaPlan::default();
            p.push(len).unwrap();
            let mut a = Arena::allocate(&p, true, "test").unwrap();
            // The advised range is inside the mapping: every used byte
            // can be written.
            for s in a.split_mut(&p).unwrap() {
                s.fill(7);
            }
            if cfg!(target_os = "linux") && huge_pages_wanted() {
                let h = a.huge_bytes();
                assert!(h == advised_bytes(len) || h == 0, "{len}: {h}");
            }
        }
    }

    #[test]
    fn allocation_failure_is_an_error() {
        let mut p = ArenaPlan::default();
        // 4 EiB: larger than any address space.
        p.push(1 << 62).unwrap();
        let e = Arena::allocate(&p, true, "huge model").unwrap_err();
        assert!(e.contains("huge model: cannot allocate"), "{e}");
    }
}
