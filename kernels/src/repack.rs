//! Weight matrices repacked once at load into interleaved row groups, for
//! products that keep one f32 lane per weight row (llama.cpp's CPU backend
//! does the same: its `CPU_REPACK` buffer holds Q4_0 as `q4_0_8x8`).
//!
//! # Layout (Q4_0, [`GROUP`] = 8 rows)
//!
//! Rows `8g..8g+8` form group `g`; a group is `nb = cols / 32` packed blocks
//! of [`Q4_0X8_BLOCK`] bytes, groups one after the other. Packed block `b` of
//! a group holds block `b` of each of its 8 rows:
//! - bytes 0..16: the 8 rows' f16 scales `d`, row order;
//! - bytes 16..144: for `c` in 0..4, for row `i` in 0..8: bytes `4c..4c+4` of
//!   row `i`'s 16 quant bytes (low nibble: element `j`, high: `j + 16`).
//!
//! Q8_0 is laid out the same way with 32 quant bytes per row: bytes
//! 16..272 hold, for `c` in 0..8, bytes `4c..4c+4` of each row's quants
//! ([`Q8_0X8_BLOCK`] bytes per packed block).
//!
//! Q4_K ([`Q4_KX8_BLOCK`] bytes per packed super-block of 256 elements):
//! - bytes 0..16: the 8 rows' f16 `d`; 16..32: their f16 `dmin`;
//! - bytes 32..128: for `w` in 0..3, for row `i`: bytes `4w..4w+4` of row
//!   `i`'s 12 packed 6-bit scale bytes (unpacked in the kernel, shared by
//!   its tokens);
//! - bytes 128..1152: for `k` in 0..4, `c` in 0..8, row `i`: bytes
//!   `32k+4c..32k+4c+4` of row `i`'s 128 quant bytes (low nibbles: elements
//!   of sub-block `2k`, high: sub-block `2k+1`).
//!
//! Q6_K ([`Q6_KX8_BLOCK`] bytes per packed super-block): bytes 0..16 the 8
//! rows' f16 `d`; 16..144: for `w` in 0..4, row `i`: scale bytes `4w..4w+4`;
//! 144..1680: for sub-block `j` in 0..16, plane `p` in 0..3, row `i`: the 4
//! plane bytes `(j, p)` of row `i`. The planes re-encode a row's 6-bit
//! quants `u` (0..=63, the stored value plus 32) per 16-quant sub-block:
//! plane byte `(j, p, m)` (m in 0..4) is `u[16j + 4p + m]` in bits 0..6 and
//! bits `2p..2p+2` of `u[16j + 12 + m]` in bits 6..8 (`q6_k_to_planes`).
//! So a 32-byte load and one `and` give 4 quants of a sub-block for all 8
//! rows, and three loads give all 16 (the fourth 4 from the planes' top
//! bits): the 4 vectors of one sub-block share its scale, where ggml's
//! `ql` / `qh` split costs 4-5 operations per vector and mixes sub-blocks.
//!
//! So one 32-byte load gives 4 quant bytes of every row, and a product with
//! 4 activation quants broadcast to all rows puts row `i`'s sum in lane `i`:
//! no horizontal sums, one float scale and add per 8 rows (the kernel is in
//! `x86/avx2_repack.rs`). The packed matrix has exactly the size of the
//! original.
//!
//! # Activations
//!
//! [`prepare_acts`] turns Q8_0 activation rows (the quantized input every
//! Q4_0 product uses) into [`ACT_BLOCK`]-byte blocks: `d` as f32, `8 *
//! sum(q)` as i32 (the nibble offset, folded in once per block), the 32
//! quants. Prepared once per input, shared by the matrices that read it.
//! Q4_K reads Q8_K activations as they are ([`ACT_K_BLOCK`]-byte blocks:
//! `d` as f32, 256 quants, 16 sums of 16 quants as i16; [`prepare_acts_k`]
//! only checks and copies). [`Packed::act_kind`] tells which a matrix reads.
//!
//! Results equal the scalar references `dot_q4_0_q8_0` / `dot_q8_0_q8_0` /
//! `dot_q4_k_q8_k` on the original rows bit for bit (same integer sums,
//! same float operations in the same order).

use crate::dispatch::Isa;
use crate::dot::KernelError;
use crate::formats::{GgmlType, QK, QK_K};
use crate::matmul::decode_chunk_rows;
use crate::pool::ThreadPool;
use half::f16;
use std::sync::atomic::AtomicUsize;

/// Prefetch distance of the one-token products, in packed Q8_0 blocks per
/// stream (see `x86/avx2_repack_decode.rs`; 8 = 2176 bytes; Q4_0 and Q4_K
/// round it up to whole blocks of theirs; Q6_K never prefetches):
/// `[one thread, several]`, since one core alone draws more bandwidth and so
/// needs more bytes in flight for the same memory latency (Little's law)
/// than each of two cores that share the memory. Unset ([`PREFETCH_UNSET`])
/// until the first product: then env `MEKI_DECODE_PREFETCH` (`N` or
/// `N1,N2`), else [`default_prefetch_blocks`] for this CPU.
#[doc(hidden)]
pub static DECODE_PREFETCH_BLOCKS: [AtomicUsize; 2] = [
    AtomicUsize::new(PREFETCH_UNSET),
    AtomicUsize::new(PREFETCH_UNSET),
];

/// [`DECODE_PREFETCH_BLOCKS`] not chosen yet.
#[doc(hidden)]
pub const PREFETCH_UNSET: usize = usize::MAX;

/// The measured best distances, `[one thread, several]`. 28 layers of a
/// shape, DRAM-bound (weights on huge pages), the decode speed test in
/// kernels/tests/repack.rs (REPACK_PF sweeps it to tune another machine):
/// - Zen 3 / Zen 4 (AMD family 25; s22's EPYC, 2 vCPUs): the hardware
///   prefetchers alone, `[0, 0]`. 0.6B, distances 0 / 4 / 8 / 16 blocks,
///   one thread: Q4_0 step 12.2 / 13.7 / 12.7 / 13.0 ms, Q8_0 22.9 / 25.2 /
///   23.4 / 25.1, Q4_K 12.4 / 15.1 / 14.4 / 15.2; two threads 0 equal or
///   best (Q4_K 10.6 / 10.9 / 10.9 / 11.1). (s17 on this family had 8 ahead
///   of 4 by 5-9%; 0 was not tried.)
/// - Others `[16, 8]`, from s19's Zen 5 EPYC (family 26): one thread 16
///   ahead of 8 by 10-12% (0.6B Q4_0, Q8_0, Q4_K) and 11-14% (1.7B), 24 no
///   better, 0 behind 16; two threads 8 and 12 within 2%, 16 2-5% behind.
pub fn default_prefetch_blocks() -> [usize; 2] {
    if crate::dispatch::zen3_or_zen4() {
        [0, 0]
    } else {
        [16, 8]
    }
}

/// The one-token products' prefetch distance in blocks when `threads`
/// threads share the memory ([`DECODE_PREFETCH_BLOCKS`], chosen on the
/// first call).
pub fn decode_prefetch_blocks(threads: usize) -> usize {
    use std::sync::atomic::Ordering::Relaxed;
    let i = (threads > 1) as usize;
    let v = DECODE_PREFETCH_BLOCKS[i].load(Relaxed);
    if v != PREFETCH_UNSET {
        return v;
    }
    let chosen = match std::env::var("MEKI_DECODE_PREFETCH") {
        Ok(text) => {
            let v: Vec<usize> = text
                .split(',')
                .filter_map(|d| d.trim().parse().ok())
                .collect();
            match v.as_slice() {
                [n] => [*n, *n],
                [a, b] => [*a, *b],
                _ => {
                    eprintln!(
                        "meki-kernels: MEKI_DECODE_PREFETCH={text:?} is not N or N1,N2 (blocks); using the default"
                    );
                    default_prefetch_blocks()
                }
            }
        }
        Err(_) => default_prefetch_blocks(),
    };
    // Races store the same values.
    for (d, c) in DECODE_PREFETCH_BLOCKS.iter().zip(chosen) {
        let _ = d.compare_exchange(PREFETCH_UNSET, c.min(1 << 20), Relaxed, Relaxed);
    }
    DECODE_PREFETCH_BLOCKS[i].load(Relaxed)
}

/// [`decode_prefetch_blocks`] in bytes.
pub(crate) fn decode_prefetch_bytes(threads: usize) -> usize {
    decode_prefetch_blocks(threads) * Q8_0X8_BLOCK
}

/// Bit set: one token of Q4_0 (bit 0) / Q4_K (bit 1) / Q6_K (bit 2) runs
/// through the two-stream decode kernel (`x86/avx2_repack_decode.rs`, the
/// default), else through the prefill tile with one token; Q8_0 always
/// takes the two-stream one. For A/B timing in one process (the decode
/// speed test in tests/repack.rs, REPACK_AB=1). EPYC, 1 thread, 0.6B-shape
/// decode groups: from DRAM Q4_K 1.21x and Q4_0 1.5-1.9x the tile, from L3
/// 1.01x and 1.08x; Q6_K from DRAM 1.4-1.8x the tile.
#[doc(hidden)]
pub static DECODE_TWO_STREAMS: AtomicUsize = AtomicUsize::new(7);

/// Weight rows per interleaved group.
pub const GROUP: usize = 8;
/// Bytes of one packed Q4_0 block (8 rows x 18 bytes).
pub const Q4_0X8_BLOCK: usize = GROUP * 18;
/// Bytes of one packed Q8_0 block (8 rows x 34 bytes).
pub const Q8_0X8_BLOCK: usize = GROUP * 34;
/// Bytes of one packed Q4_K super-block (8 rows x 144 bytes).
pub const Q4_KX8_BLOCK: usize = GROUP * 144;
/// Bytes of one packed Q6_K super-block (8 rows x 210 bytes).
pub const Q6_KX8_BLOCK: usize = GROUP * 210;

/// Where the bytes of an original block go in a packed block: each piece
/// `(src, dst, len)` moves bytes `src..src+len` of row `i`'s block to
/// `dst + len * i..` of the packed block (see the module docs), after
/// `encode` (if any) has re-encoded the block in place of its bytes.
struct Layout {
    /// Bytes of one original block.
    bytes: usize,
    /// Elements of one block.
    elems: usize,
    pieces: Vec<(usize, usize, usize)>,
    /// A block's re-encoding before the pieces move, and its inverse:
    /// `(from, to)`, both `bytes` long.
    encode: Option<(BlockCode, BlockCode)>,
}

/// Re-encodes one block (`from` to `to`, equal lengths).
type BlockCode = fn(&[u8], &mut [u8]);

/// Largest original block of a packed type (Q6_K's 210 bytes).
const MAX_BLOCK: usize = 210;

/// The 256 6-bit quants `u` (0..=63) of the Q6_K block `b`, from ggml's
/// `ql` (low 4 bits) and `qh` (high 2 bits): element `128n + 32k + t` has
/// `ql[64n + 32(k % 2) + t]`'s low (k < 2) or high nibble and bits `2k..2k+2`
/// of `qh[32n + t]`.
fn q6_k_quants(b: &[u8]) -> [u8; QK_K] {
    let (ql, qh) = (&b[..128], &b[128..192]);
    std::array::from_fn(|e| {
        let (n, k, t) = (e / 128, e % 128 / 32, e % 32);
        let lo = ql[64 * n + 32 * (k % 2) + t] >> (4 * (k / 2)) & 0xF;
        let hi = qh[32 * n + t] >> (2 * k) & 3;
        lo | hi << 4
    })
}

/// A Q6_K block with its quants as planes (module docs): bytes 0..192 the
/// planes, `(j, p, m)` at `12j + 4p + m`; 192..210 as in `b` (scales, d).
fn q6_k_to_planes(b: &[u8], out: &mut [u8]) {
    let u = q6_k_quants(b);
    for j in 0..16 {
        for p in 0..3 {
            for m in 0..4 {
                let top = u[16 * j + 12 + m] >> (2 * p) & 3;
                out[12 * j + 4 * p + m] = u[16 * j + 4 * p + m] | top << 6;
            }
        }
    }
    out[192..210].copy_from_slice(&b[192..210]);
}

/// The inverse of [`q6_k_to_planes`]: ggml's Q6_K block.
fn q6_k_from_planes(b: &[u8], out: &mut [u8]) {
    let mut u = [0u8; QK_K];
    for j in 0..16 {
        for p in 0..3 {
            for m in 0..4 {
                let v = b[12 * j + 4 * p + m];
                u[16 * j + 4 * p + m] = v & 0x3F;
                u[16 * j + 12 + m] |= (v >> 6) << (2 * p);
            }
        }
    }
    out[..192].fill(0);
    for (e, &v) in u.iter().enumerate() {
        let (n, k, t) = (e / 128, e % 128 / 32, e % 32);
        out[64 * n + 32 * (k % 2) + t] |= (v & 0xF) << (4 * (k / 2));
        out[128 + 32 * n + t] |= (v >> 4) << (2 * k);
    }
    out[192..210].copy_from_slice(&b[192..210]);
}

/// Row `i`'s original block from the packed block `pb` into `out`
/// (`l.bytes` long).
fn unpack_block(l: &Layout, pb: &[u8], i: usize, out: &mut [u8]) {
    let mut coded = [0u8; MAX_BLOCK];
    let dst = match l.encode {
        Some(_) => &mut coded[..l.bytes],
        None => &mut *out,
    };
    for &(to, from, len) in &l.pieces {
        let from = from + len * i;
        dst[to..to + len].copy_from_slice(&pb[from..from + len]);
    }
    if let Some((_, decode)) = l.encode {
        decode(&coded[..l.bytes], out);
    }
}

/// Bytes and elements of one block of a type that has a packed layout.
/// Allocation-free: the products ask for it on every call, the piece list
/// of [`layout`] is only for packing and unpacking.
fn block_shape(ty: GgmlType) -> Option<(usize, usize)> {
    match ty {
        GgmlType::Q4_0 => Some((18, QK)),
        GgmlType::Q8_0 => Some((34, QK)),
        GgmlType::Q4K => Some((144, QK_K)),
        GgmlType::Q6K => Some((210, QK_K)),
        _ => None,
    }
}

/// The packed layout of `ty`, if it has one.
fn layout(ty: GgmlType) -> Option<Layout> {
    let runs =
        |src: usize, dst: usize, n: usize| (0..n).map(move |c| (src + 4 * c, dst + 32 * c, 4));
    let (bytes, elems) = block_shape(ty)?;
    let pieces: Vec<_> = match ty {
        GgmlType::Q4_0 => std::iter::once((0, 0, 2)).chain(runs(2, 16, 4)).collect(),
        GgmlType::Q8_0 => std::iter::once((0, 0, 2)).chain(runs(2, 16, 8)).collect(),
        GgmlType::Q4K => [(0, 0, 2), (2, 16, 2)]
            .into_iter()
            .chain(runs(4, 32, 3))
            .chain(runs(16, 128, 32))
            .collect(),
        GgmlType::Q6K => std::iter::once((208, 0, 2))
            .chain(runs(192, 16, 4))
            .chain(runs(0, 144, 48))
            .collect(),
        _ => return None,
    };
    let encode = (ty == GgmlType::Q6K)
        .then_some((q6_k_to_planes as BlockCode, q6_k_from_planes as BlockCode));
    Some(Layout {
        bytes,
        elems,
        pieces,
        encode,
    })
}

/// Bytes of one prepared Q8_0 activation block: f32 d, i32 8*sum(q), 32 x i8.
pub const ACT_BLOCK: usize = 40;
/// Bytes of one prepared Q8_K activation block: the Q8_K block itself (f32
/// d, 256 x i8, 16 x i16 sums of 16 quants).
pub const ACT_K_BLOCK: usize = 4 + QK_K + 32;

/// Weight bytes per unit of work at least (as in `matmul`).
const MIN_CHUNK_BYTES: usize = 32 << 10;
/// Work units per thread at least, for balance.
const CHUNKS_PER_THREAD: usize = 4;
/// Prepared activation bytes per token tile (kept in L2 while a chunk of
/// groups runs over them).
const TOKEN_TILE_BYTES: usize = 192 << 10;

/// A weight matrix in an interleaved layout (see the module docs).
pub struct Packed {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: PackedBytes,
}

/// A region of memory that many packed matrices share (a model's weight
/// arena): it must return the same bytes on every call.
pub type SharedRegion = std::sync::Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Where a packed matrix's bytes live: its own buffer, or a range of a
/// region shared with other matrices. Reads as a plain `&[u8]` (exactly
/// [`Packed::byte_len`] bytes).
enum PackedBytes {
    Owned(Vec<u8>),
    Shared {
        region: SharedRegion,
        start: usize,
        len: usize,
    },
}

impl std::ops::Deref for PackedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            PackedBytes::Owned(v) => v,
            PackedBytes::Shared { region, start, len } => {
                &(**region).as_ref()[*start..*start + *len]
            }
        }
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} {}x{})", self.ty, self.rows, self.cols)
    }
}

impl Packed {
    /// Whether repacking pays off by default: Q4_0, Q4_K and Q8_0. Measured
    /// on the Qwen3-0.6B shape: Q4_0 prefill ~2x; Q4_K kernel prefill
    /// ~1.8-2.2x the row kernels at 1 thread (see the ignored speed tests in
    /// tests/repack.rs). Decode of both through the two-stream kernels
    /// (EPYC, 1 thread, the layer products of a decode step): Q4_0 1.4-2.0x
    /// and Q4_K 1.25-1.5x the row kernels from DRAM, ~2x and ~1.35-2x from
    /// L3 (the row kernels' times vary with load). Q8_0: prefill 1.42x llama.cpp
    /// packed vs 0.95x plain (2 threads, Xeon); decode through the
    /// two-stream kernel (`x86/avx2_repack_decode.rs`), on the loaded
    /// 2-core EPYC: the layer products of a decode step (`matvec_multi`
    /// groups, 0.6B shapes, weights from DRAM) 1.25x (2 threads) / 1.38x (1
    /// thread) the plain tiles, 1.16-1.40x with the weights in L3; end to
    /// end (1 thread, load 6-9) its layer kernels took 0.88x the plain
    /// ones' CPU time and decode ran 1.09x (before: 0.89x, Xeon).
    /// Q6_K (since s22, in quant planes, see the module docs): from cache
    /// the one-token kernel reads 42 GB/s where the row kernels read 26
    /// (`meki-bench kernels -t 1 --formats q6_K --shapes 512x1024`, Zen 4
    /// EPYC), so a core's decode of the 151936x1024 head is no longer
    /// bound by the unpacking: 0.6B Q4_0 decode's head stage 22.9-23.6 ->
    /// 31.2-32.3 GB/s; prefill 1.45-1.5x the row kernels (135-145 vs 91-99
    /// GFLOP/s at 512 tokens). Until s21 the packed Q6_K kept ggml's `ql` /
    /// `qh` split, cost as much per quant as the rows, and was opt-in.
    pub fn preferred(isa: Isa, ty: GgmlType, rows: usize, cols: usize) -> bool {
        matches!(
            ty,
            GgmlType::Q4_0 | GgmlType::Q4K | GgmlType::Q8_0 | GgmlType::Q6K
        ) && Packed::supported(isa, ty, rows, cols)
    }

    /// Whether `isa` has a packed kernel for this type and shape
    /// ([`Packed::new`] and [`matmul`] work on any family).
    pub fn supported(isa: Isa, ty: GgmlType, rows: usize, cols: usize) -> bool {
        isa == Isa::Avx2
            && isa.is_available()
            && block_shape(ty).is_some_and(|(_, elems)| cols.is_multiple_of(elems))
            && rows > 0
            && rows.is_multiple_of(GROUP)
            && cols > 0
    }

    /// Repacks `rows` rows of `cols` elements of `ty` (raw GGUF bytes).
    pub fn new(ty: GgmlType, w: &[u8], rows: usize, cols: usize) -> Result<Packed, KernelError> {
        let mut p = Packed::zeroed(ty, rows, cols)?;
        let need = p.n_bytes();
        if w.len() < need {
            return Err(KernelError::BufferTooSmall {
                what: "weight matrix",
                need,
                have: w.len(),
            });
        }
        p.fill(0, &w[..need])?;
        Ok(p)
    }

    /// An all-zero packed matrix of this type and shape, to [`Packed::fill`]
    /// piece by piece (the source then never has to be in memory at once).
    pub fn zeroed(ty: GgmlType, rows: usize, cols: usize) -> Result<Packed, KernelError> {
        let need = Packed::byte_len(ty, rows, cols)?;
        Ok(Packed {
            ty,
            rows,
            cols,
            data: PackedBytes::Owned(vec![0u8; need]),
        })
    }

    /// Bytes of a packed matrix of this type and shape (the same as the
    /// original matrix), or why it cannot be packed.
    pub fn byte_len(ty: GgmlType, rows: usize, cols: usize) -> Result<usize, KernelError> {
        let (bytes, elems) = block_shape(ty).ok_or(KernelError::Unsupported(ty))?;
        if cols == 0 || !cols.is_multiple_of(elems) || !rows.is_multiple_of(GROUP) {
            return Err(KernelError::BadLength { ty, n: cols });
        }
        rows.checked_mul(cols / elems * bytes)
            .ok_or(KernelError::BadLength { ty, n: cols })
    }

    /// A packed matrix whose bytes are `region[start..start + byte_len]`,
    /// already packed there with [`Packed::fill_into`]. Shared matrices
    /// are read-only ([`Packed::fill`] refuses them).
    pub fn from_shared(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        region: SharedRegion,
        start: usize,
    ) -> Result<Packed, KernelError> {
        let len = Packed::byte_len(ty, rows, cols)?;
        let have = (*region).as_ref().len();
        if start.checked_add(len).is_none_or(|end| end > have) {
            return Err(KernelError::BufferTooSmall {
                what: "shared region (packed matrix past its end)",
                need: start.saturating_add(len),
                have,
            });
        }
        Ok(Packed {
            ty,
            rows,
            cols,
            data: PackedBytes::Shared { region, start, len },
        })
    }

    /// Packs the original rows `src` (whole groups: a multiple of 8 rows of
    /// raw GGUF bytes) as rows `first_row..` of the matrix.
    pub fn fill(&mut self, first_row: usize, src: &[u8]) -> Result<(), KernelError> {
        let (ty, rows, cols) = (self.ty, self.rows, self.cols);
        match &mut self.data {
            PackedBytes::Owned(data) => Packed::fill_into(ty, rows, cols, data, first_row, src),
            PackedBytes::Shared { len, .. } => Err(KernelError::BufferTooSmall {
                what: "shared packed matrix (read-only; fill its region first)",
                need: *len,
                have: 0,
            }),
        }
    }

    /// [`Packed::fill`] on the bytes of a `rows x cols` packed matrix of
    /// `ty` held elsewhere (`data`: exactly [`Packed::byte_len`] bytes), to
    /// be shared with [`Packed::from_shared`].
    pub fn fill_into(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &mut [u8],
        first_row: usize,
        src: &[u8],
    ) -> Result<(), KernelError> {
        let need = Packed::byte_len(ty, rows, cols)?;
        if data.len() != need {
            return Err(KernelError::BufferTooSmall {
                what: "packed matrix bytes (exactly the packed size)",
                need,
                have: data.len(),
            });
        }
        let l = layout(ty).ok_or(KernelError::Unsupported(ty))?;
        let bs = l.bytes;
        let nb = cols / l.elems;
        let rb = nb * bs;
        let n_rows = src.len() / rb;
        if !first_row.is_multiple_of(GROUP)
            || src.len() != n_rows * rb
            || !n_rows.is_multiple_of(GROUP)
            || first_row + n_rows > rows
        {
            return Err(KernelError::BufferTooSmall {
                what: "rows to pack (whole 8-row groups inside the matrix)",
                need: n_rows.next_multiple_of(GROUP) * rb,
                have: src.len(),
            });
        }
        let pbs = GROUP * bs;
        let mut coded = [0u8; MAX_BLOCK];
        let out = &mut data[first_row * rb..(first_row + n_rows) * rb];
        for (g, out) in out.chunks_exact_mut(nb * pbs).enumerate() {
            for (b, pb) in out.chunks_exact_mut(pbs).enumerate() {
                for i in 0..GROUP {
                    let mut s = &src[(GROUP * g + i) * rb + bs * b..][..bs];
                    if let Some((encode, _)) = l.encode {
                        encode(s, &mut coded[..bs]);
                        s = &coded[..bs];
                    }
                    for &(from, to, len) in &l.pieces {
                        let to = to + len * i;
                        pb[to..to + len].copy_from_slice(&s[from..from + len]);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Bytes held (the same as the original matrix).
    pub fn n_bytes(&self) -> usize {
        self.data.len()
    }
    /// The packed bytes (what the kernels read).
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
    /// Whether the bytes live in a shared region ([`Packed::from_shared`]).
    pub fn is_shared(&self) -> bool {
        matches!(self.data, PackedBytes::Shared { .. })
    }

    /// Row `r` in its original GGUF layout (tests, debugging).
    pub fn row(&self, r: usize) -> Vec<u8> {
        let l = layout(self.ty).expect("packed types only");
        let (bs, nb) = (l.bytes, self.cols / l.elems);
        let (g, i) = (r / GROUP, r % GROUP);
        let pbs = GROUP * bs;
        let mut out = vec![0u8; nb * bs];
        for (b, ob) in out.chunks_exact_mut(bs).enumerate() {
            let pb = &self.data[(g * nb + b) * pbs..][..pbs];
            unpack_block(&l, pb, i, ob);
        }
        out
    }
}

/// Bytes of one prepared activation row of `cols` elements.
pub fn act_row_bytes(cols: usize) -> usize {
    cols / QK * ACT_BLOCK
}

/// Converts `n_tokens` Q8_0 rows of `cols` elements (`xq`) into prepared
/// activation rows in `out` (resized).
pub fn prepare_acts(
    xq: &[u8],
    n_tokens: usize,
    cols: usize,
    out: &mut Vec<u8>,
) -> Result<(), KernelError> {
    let ty = GgmlType::Q8_0;
    if !cols.is_multiple_of(QK) {
        return Err(KernelError::BadLength { ty, n: cols });
    }
    let nb = cols / QK;
    let need = n_tokens * nb * 34;
    if xq.len() < need {
        return Err(KernelError::BufferTooSmall {
            what: "quantized activations",
            need,
            have: xq.len(),
        });
    }
    out.resize(n_tokens * nb * ACT_BLOCK, 0);
    for (src, dst) in xq[..need]
        .chunks_exact(34)
        .zip(out.chunks_exact_mut(ACT_BLOCK))
    {
        let d = f16::from_le_bytes([src[0], src[1]]).to_f32();
        let sum: i32 = src[2..].iter().map(|&q| q as i8 as i32).sum();
        dst[..4].copy_from_slice(&d.to_le_bytes());
        dst[4..8].copy_from_slice(&(8 * sum).to_le_bytes());
        dst[8..].copy_from_slice(&src[2..]);
    }
    Ok(())
}

/// Copies `n_tokens` Q8_K rows of `cols` elements (`xq`) into `out`
/// (resized): prepared Q8_K rows are the Q8_K blocks themselves.
pub fn prepare_acts_k(
    xq: &[u8],
    n_tokens: usize,
    cols: usize,
    out: &mut Vec<u8>,
) -> Result<(), KernelError> {
    if !cols.is_multiple_of(QK_K) {
        return Err(KernelError::BadLength {
            ty: GgmlType::Q8K,
            n: cols,
        });
    }
    let need = n_tokens * cols / QK_K * ACT_K_BLOCK;
    if xq.len() < need {
        return Err(KernelError::BufferTooSmall {
            what: "quantized activations",
            need,
            have: xq.len(),
        });
    }
    out.clear();
    out.extend_from_slice(&xq[..need]);
    Ok(())
}

/// A shared output pointer; each chunk of groups is written by one thread.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: threads write disjoint elements (distinct row groups), see `matmul`.
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

impl Packed {
    /// Activation format of the prepared input ([`Packed::prepare_input`]):
    /// Q8_0 for Q4_0 and Q8_0, Q8_K for Q4_K. Matrices with equal
    /// `act_kind` (and columns) can share one prepared input.
    pub fn act_kind(&self) -> GgmlType {
        match self.ty {
            GgmlType::Q4K | GgmlType::Q6K => GgmlType::Q8K,
            _ => GgmlType::Q8_0,
        }
    }

    /// Bytes of one prepared activation row of this matrix.
    pub fn act_row_bytes(&self) -> usize {
        match self.act_kind() {
            GgmlType::Q8K => self.cols / QK_K * ACT_K_BLOCK,
            _ => act_row_bytes(self.cols),
        }
    }

    /// Quantizes and prepares `n_tokens` f32 rows of `cols` elements (`x`,
    /// at least `n_tokens * cols` long) into `out` (resized).
    pub fn prepare_input(
        &self,
        isa: Isa,
        x: &[f32],
        n_tokens: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), KernelError> {
        out.resize(n_tokens * self.act_row_bytes(), 0);
        self.prepare_rows(isa, x, out)
    }

    /// [`Packed::prepare_input`] into a slice: `out.len() / act_row_bytes()`
    /// rows (callers split a long input over threads with it).
    pub fn prepare_rows(&self, isa: Isa, x: &[f32], out: &mut [u8]) -> Result<(), KernelError> {
        let (cols, ab) = (self.cols, self.act_row_bytes());
        let n = out.len() / ab;
        if out.len() != n * ab || x.len() < n * cols {
            return Err(KernelError::BufferTooSmall {
                what: "input rows (whole prepared rows of f32 inputs)",
                need: n * cols,
                have: x.len(),
            });
        }
        let kind = self.act_kind();
        let qb = kind
            .row_bytes(cols as u64)
            .ok_or(KernelError::Unsupported(kind))? as usize;
        if kind == GgmlType::Q8K {
            for (xr, dst) in x.chunks_exact(cols).zip(out.chunks_exact_mut(ab)) {
                crate::quantize_activations(isa, kind, xr, dst)?;
            }
            return Ok(());
        }
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx2 && isa.is_available() {
            // Lengths checked above: `n` rows of `cols` (a multiple of 32,
            // `Packed::new`) inputs and of `ab` prepared bytes.
            for (xr, dst) in x.chunks_exact(cols).zip(out.chunks_exact_mut(ab)) {
                // SAFETY: AVX2 is available; `xr` holds `cols` values and
                // `dst` `cols / 32` prepared blocks.
                unsafe { crate::x86::avx2::quantize_q8_0_prepared(xr, dst) };
            }
            return Ok(());
        }
        let mut q = vec![0u8; qb];
        let mut row = Vec::with_capacity(ab);
        for (xr, dst) in x.chunks_exact(cols).zip(out.chunks_exact_mut(ab)) {
            crate::quantize_activations(isa, kind, xr, &mut q)?;
            prepare_acts(&q, 1, cols, &mut row)?;
            dst.copy_from_slice(&row);
        }
        Ok(())
    }

    /// Groups of [`GROUP`] rows.
    pub fn n_groups(&self) -> usize {
        self.rows / GROUP
    }

    /// Weight bytes of one group (for chunk sizing).
    pub fn group_bytes(&self) -> usize {
        let (bytes, elems) = block_shape(self.ty).expect("packed types only");
        self.cols / elems * GROUP * bytes
    }

    /// Rows of groups `g0..g1` times `toks` prepared rows at `acts` (row
    /// stride [`Packed::act_row_bytes`]), written to `ys[t * ldy + r]` for
    /// every token `t < toks` and row `r` in `8 * g0..8 * g1`. One thread;
    /// long inputs run in token tiles that stay in L2. One token runs
    /// through the decode kernels, prefetching `pf_bytes` ahead per stream
    /// ([`decode_prefetch_bytes`]).
    ///
    /// # Safety
    /// `isa` must be available; `g0 <= g1 <= n_groups()`; `acts` must be
    /// readable for `toks * act_row_bytes()` bytes and `ys` writable at
    /// every index named above, and no other thread may access those
    /// outputs meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn run_groups(
        &self,
        isa: Isa,
        g0: usize,
        g1: usize,
        acts: *const u8,
        toks: usize,
        ys: *mut f32,
        ldy: usize,
        pf_bytes: usize,
    ) {
        // Only the AVX2 decode kernels prefetch.
        #[cfg(not(target_arch = "x86_64"))]
        let _ = pf_bytes;
        let ab = self.act_row_bytes();
        // Blocks per row (the AVX2 kernels walk them; the plain code
        // slices whole groups).
        #[cfg(target_arch = "x86_64")]
        let nb = self.cols / block_shape(self.ty).expect("packed types only").1;
        let gb = self.group_bytes();
        let ty = self.ty;
        let token_tile = (TOKEN_TILE_BYTES / ab.max(1)).clamp(4, 64) / 4 * 4;
        for t0 in (0..toks).step_by(token_tile) {
            let n = (t0 + token_tile).min(toks) - t0;
            let (x, y) = (acts.add(t0 * ab), ys.add(t0 * ldy + GROUP * g0));
            match isa {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => {
                    // SAFETY: the caller's contract; `data` holds `n_groups *
                    // nb` packed blocks (built by `Packed::zeroed`).
                    use crate::x86::avx2_repack as k;
                    let w = self.data.as_ptr().add(g0 * gb);
                    if n == 1 {
                        // One token: the two-stream decode kernels.
                        use crate::x86::avx2_repack_decode as d;
                        use std::sync::atomic::Ordering::Relaxed;
                        let two = DECODE_TWO_STREAMS.load(Relaxed);
                        let gemv = match ty {
                            GgmlType::Q8_0 => Some(d::gemv_q8_0x8 as d::Gemv),
                            GgmlType::Q4K if two & 2 != 0 => Some(d::gemv_q4_kx8 as d::Gemv),
                            GgmlType::Q4_0 if two & 1 != 0 => Some(d::gemv_q4_0x8 as d::Gemv),
                            GgmlType::Q6K if two & 4 != 0 => Some(d::gemv_q6_kx8 as d::Gemv),
                            _ => None,
                        };
                        if let Some(gemv) = gemv {
                            // Q6_K streams on the hardware prefetchers
                            // alone (see `block_q6_k`).
                            let pf = if ty == GgmlType::Q6K { 0 } else { pf_bytes };
                            gemv(nb, w, g1 - g0, x, y, pf);
                            continue;
                        }
                    }
                    let gemm = match ty {
                        GgmlType::Q4_0 => k::gemm_q4_0x8,
                        GgmlType::Q4K => k::gemm_q4_kx8,
                        GgmlType::Q6K => k::gemm_q6_kx8,
                        _ => k::gemm_q8_0x8,
                    };
                    gemm(nb, w, g1 - g0, x, ab, n, y, ldy)
                }
                _ => {
                    for t in 0..n {
                        // SAFETY: the caller's contract (row `t0 + t` of `acts`).
                        let xr = std::slice::from_raw_parts(x.add(t * ab), ab);
                        for g in g0..g1 {
                            let group = &self.data[g * gb..(g + 1) * gb];
                            let v = match ty {
                                GgmlType::Q4K => group_dot_q4_k(group, xr),
                                GgmlType::Q6K => group_dot_rows(ty, group, xr),
                                _ => group_dot(ty == GgmlType::Q4_0, group, xr),
                            };
                            for (i, &e) in v.iter().enumerate() {
                                // SAFETY: the caller's contract (token t0 + t,
                                // row 8g + i).
                                *y.add(t * ldy + GROUP * (g - g0) + i) = e;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `ys[t][r] = w[r] . x[t]` for `n_tokens` prepared activation rows `acts`
/// ([`Packed::prepare_input`]); `ys` is `n_tokens x rows`. Split over the
/// pool's threads by chunks of row groups.
pub fn matmul(
    isa: Isa,
    pool: &ThreadPool,
    w: &Packed,
    n_tokens: usize,
    acts: &[u8],
    ys: &mut [f32],
) -> Result<(), KernelError> {
    if !isa.is_available() {
        return Err(KernelError::IsaUnavailable(isa));
    }
    let rows = w.rows;
    let need = n_tokens * w.act_row_bytes();
    if acts.len() < need {
        return Err(KernelError::BufferTooSmall {
            what: "prepared activations",
            need,
            have: acts.len(),
        });
    }
    if ys.len() < n_tokens * rows {
        return Err(KernelError::BufferTooSmall {
            what: "outputs",
            need: n_tokens * rows,
            have: ys.len(),
        });
    }
    let groups = w.n_groups();
    let threads = pool.n_threads();
    let split = if n_tokens == 1 {
        // One token (the output head in decode): `matvec_multi`'s long
        // chunks. The two-stream kernels restart their prefetch at each
        // call, and 32 KiB chunks left the 151936-row Q8_0 head at 13 GB/s
        // where the plain rows read 19 (1 thread, EPYC).
        let row_bytes = w.group_bytes() / GROUP;
        let chunk = (decode_chunk_rows(rows, row_bytes, rows * row_bytes, threads) / GROUP).max(1);
        Split::groups_only(groups, chunk, 1)
    } else {
        Split::prefill(groups, w.group_bytes(), n_tokens, threads)
    };
    let pf = decode_prefetch_bytes(threads);
    let ab = w.act_row_bytes();
    let out = SyncPtr(ys.as_mut_ptr());
    pool.run_chunks(split.chunks(), &|c| {
        let ((g0, g1), (t0, t1)) = split.chunk(c, groups, n_tokens);
        let dst = out;
        // SAFETY: `isa` is available, `acts` holds `n_tokens` prepared rows
        // of `ab` bytes and `ys` `n_tokens x rows` outputs (checked above);
        // chunk `c` (run by this thread alone) is groups g0..g1 of tokens
        // t0..t1 (`Split::chunk`: the chunks tile groups x tokens without
        // overlap), so its writes (rows 8*g0..8*g1 of those tokens) are
        // disjoint from other threads'.
        unsafe {
            w.run_groups(
                isa,
                g0,
                g1,
                acts.as_ptr().add(t0 * ab),
                t1 - t0,
                dst.0.add(t0 * rows),
                rows,
                pf,
            )
        };
    });
    Ok(())
}

/// How [`matmul`] cuts a product into work units: runs of `group_chunk`
/// groups times runs of `token_chunk` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Split {
    group_chunk: usize,
    group_chunks: usize,
    token_chunk: usize,
    token_chunks: usize,
}

/// Tokens per piece of a token split at least (the prefill tiles run 4 at
/// a time; fewer per piece would leave more set-up than work).
const MIN_SPLIT_TOKENS: usize = 16;

impl Split {
    /// Every token in one piece; groups in runs of `chunk`.
    fn groups_only(groups: usize, chunk: usize, tokens: usize) -> Split {
        Split {
            group_chunk: chunk,
            group_chunks: groups.div_ceil(chunk),
            token_chunk: tokens.max(1),
            token_chunks: 1,
        }
    }

    /// Prefill of `tokens` tokens: group runs of at least
    /// [`MIN_CHUNK_BYTES`] of weights, [`CHUNKS_PER_THREAD`] units per
    /// thread. A large matrix gets them from its groups alone, every unit
    /// running all tokens over its groups (as before s21). A small one
    /// (MeKi's 128 x 1024 projections: 16 groups, 74 KB of Q4_0) is also
    /// split by tokens: cut into runs of groups only, its units held two
    /// groups each and each read every token's activations from L3 for
    /// them, running at half the big products' rate (0.6B Q4_0, 570
    /// tokens, 2 threads: MeKi's W_gate took 0.8 ms a layer for 1.5% of
    /// the layer's multiply-adds); a unit of all its groups over a piece of
    /// the tokens reads them once.
    fn prefill(groups: usize, group_bytes: usize, tokens: usize, threads: usize) -> Split {
        let want = threads * CHUNKS_PER_THREAD;
        let by_bytes = MIN_CHUNK_BYTES.div_ceil(group_bytes.max(1)).max(1);
        if groups >= by_bytes * want || tokens < 2 * MIN_SPLIT_TOKENS {
            let by_balance = groups.div_ceil(want);
            return Split::groups_only(groups, by_bytes.min(by_balance).max(1), tokens);
        }
        // Runs of about equal size.
        let group_chunk = groups.div_ceil(groups.div_ceil(by_bytes));
        let group_chunks = groups.div_ceil(group_chunk);
        let pieces = want
            .div_ceil(group_chunks)
            .min(tokens / MIN_SPLIT_TOKENS)
            .max(1);
        // Pieces of a multiple of 4 tokens (whole tiles).
        let token_chunk = tokens.div_ceil(pieces).div_ceil(4) * 4;
        Split {
            group_chunk,
            group_chunks,
            token_chunk,
            token_chunks: tokens.div_ceil(token_chunk),
        }
    }

    fn chunks(&self) -> usize {
        self.group_chunks * self.token_chunks
    }

    /// Unit `c`'s groups and tokens, as half-open ranges.
    fn chunk(&self, c: usize, groups: usize, tokens: usize) -> ((usize, usize), (usize, usize)) {
        let (gi, ti) = (c % self.group_chunks, c / self.group_chunks);
        let g0 = gi * self.group_chunk;
        let t0 = ti * self.token_chunk;
        (
            (g0, (g0 + self.group_chunk).min(groups)),
            (t0, (t0 + self.token_chunk).min(tokens)),
        )
    }
}

/// The 8 rows of one packed group (Q4_0 if `q4`, else Q8_0) times one
/// prepared activation row, in plain code: the scalar reference's
/// operations and order.
fn group_dot(q4: bool, group: &[u8], x: &[u8]) -> [f32; GROUP] {
    let mut out = [0f32; GROUP];
    let pbs = if q4 { Q4_0X8_BLOCK } else { Q8_0X8_BLOCK };
    for (pb, xb) in group.chunks_exact(pbs).zip(x.chunks_exact(ACT_BLOCK)) {
        let dy = f32::from_le_bytes([xb[0], xb[1], xb[2], xb[3]]);
        let y = |k: usize| xb[8 + k] as i8 as i32;
        for (i, o) in out.iter_mut().enumerate() {
            let dw = f16::from_le_bytes([pb[2 * i], pb[2 * i + 1]]).to_f32();
            // Byte k of row i's 4-byte run c.
            let q = |c: usize, k: usize| pb[16 + 32 * c + 4 * i + k];
            let mut isum = 0i32;
            for c in 0..if q4 { 4 } else { 8 } {
                for k in 0..4 {
                    let e = 4 * c + k;
                    if q4 {
                        isum += ((q(c, k) & 0x0F) as i32 - 8) * y(e);
                        isum += ((q(c, k) >> 4) as i32 - 8) * y(e + 16);
                    } else {
                        isum += q(c, k) as i8 as i32 * y(e);
                    }
                }
            }
            *o += isum as f32 * (dw * dy);
        }
    }
    out
}

/// The 8 rows of one packed Q4_K group times one prepared Q8_K activation
/// row, in plain code: `dot_q4_k_q8_k`'s integer sums and float operations
/// in its order.
fn group_dot_q4_k(group: &[u8], x: &[u8]) -> [f32; GROUP] {
    let mut out = [0f32; GROUP];
    for (pb, xb) in group
        .chunks_exact(Q4_KX8_BLOCK)
        .zip(x.chunks_exact(ACT_K_BLOCK))
    {
        let dy = f32::from_le_bytes([xb[0], xb[1], xb[2], xb[3]]);
        let bsum = |k: usize| i16::from_le_bytes([xb[260 + 2 * k], xb[261 + 2 * k]]) as i32;
        let ysum = |j: usize| bsum(2 * j) + bsum(2 * j + 1);
        let y = |e: usize| xb[4 + e] as i8 as i32;
        for (i, o) in out.iter_mut().enumerate() {
            let f16_at = |at: usize| f16::from_le_bytes([pb[at], pb[at + 1]]).to_f32();
            let (dw, dmin) = (f16_at(2 * i), f16_at(16 + 2 * i));
            // Row i's 12 scale bytes, from the three 4-byte runs.
            let sb = |b: usize| pb[32 + 32 * (b / 4) + 4 * i + b % 4];
            let (mut sumi, mut summ) = (0i32, 0i32);
            for j in 0..QK_K / 32 {
                let (sc, m) = if j < 4 {
                    (sb(j) & 63, sb(j + 4) & 63)
                } else {
                    (
                        (sb(j + 4) & 0x0F) | ((sb(j - 4) >> 6) << 4),
                        (sb(j + 4) >> 4) | ((sb(j) >> 6) << 4),
                    )
                };
                let (k, hi) = (j / 2, j % 2 == 1);
                let mut isum = 0i32;
                for e in 0..32 {
                    let byte = pb[128 + 256 * k + 32 * (e / 4) + 4 * i + e % 4];
                    let u = if hi { byte >> 4 } else { byte & 0x0F };
                    isum += u as i32 * y(32 * j + e);
                }
                sumi += sc as i32 * isum;
                summ += m as i32 * ysum(j);
            }
            *o += (dw * dy) * sumi as f32 - (dmin * dy) * summ as f32;
        }
    }
    out
}

/// The 8 rows of one packed group of a k-quant type times one Q8_K row: each
/// row unpacked to its original blocks and run through the scalar reference
/// dot (plain fallback of types without a plain group kernel).
fn group_dot_rows(ty: GgmlType, group: &[u8], x: &[u8]) -> [f32; GROUP] {
    let l = layout(ty).expect("packed types only");
    let pbs = GROUP * l.bytes;
    let nb = group.len() / pbs;
    let dot = match ty {
        GgmlType::Q6K => crate::scalar::dot::dot_q6_k_q8_k,
        _ => crate::scalar::dot::dot_q4_k_q8_k,
    };
    let mut row = vec![0u8; nb * l.bytes];
    let mut out = [0f32; GROUP];
    for (i, o) in out.iter_mut().enumerate() {
        for (pb, ob) in group.chunks_exact(pbs).zip(row.chunks_exact_mut(l.bytes)) {
            unpack_block(&l, pb, i, ob);
        }
        *o = dot(nb * l.elems, &row, x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (group, token) pair in exactly one unit, no unit empty.
    fn covers_once(s: Split, groups: usize, tokens: usize) {
        let mut seen = vec![0u8; groups * tokens];
        for c in 0..s.chunks() {
            let ((g0, g1), (t0, t1)) = s.chunk(c, groups, tokens);
            assert!(g0 < g1 && t0 < t1, "{s:?} unit {c} is empty");
            for g in g0..g1 {
                for t in t0..t1 {
                    seen[g * tokens + t] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{s:?}");
    }

    #[test]
    fn prefill_split_tiles_groups_and_tokens() {
        // Q4_0 groups of 1024 and 3072 columns, Q8_0 of 1024.
        for gb in [4608, 13824, 8704] {
            for groups in [1, 2, 5, 16, 128, 384, 19000] {
                for tokens in [1, 2, 7, 31, 32, 33, 512, 570] {
                    for threads in [1, 2, 3, 8] {
                        let s = Split::prefill(groups, gb, tokens, threads);
                        covers_once(s, groups, tokens);
                        if s.token_chunks > 1 {
                            assert_eq!(s.token_chunk % 4, 0, "{s:?}");
                            assert!(s.token_chunk >= MIN_SPLIT_TOKENS, "{s:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn small_matrices_split_by_tokens_large_ones_not() {
        // MeKi's W_gate, 128 x 1024 Q4_0, 570 tokens, 2 threads: all 16
        // groups in one run of groups, the tokens in pieces.
        let s = Split::prefill(16, 4608, 570, 2);
        assert_eq!((s.group_chunks, s.token_chunks), (2, 4), "{s:?}");
        // The FFN up projection (3072 rows): groups only, as before.
        let s = Split::prefill(384, 4608, 570, 2);
        assert_eq!((s.group_chunk, s.token_chunks), (8, 1), "{s:?}");
    }
}
