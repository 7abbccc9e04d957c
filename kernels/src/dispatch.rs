//! Which instruction set the kernels use: detected once at run time, overridable
//! with the env var `MEKI_KERNELS` (`scalar` | `avx2` | `neon` | `neon-nodotprod`)
//! or [`set_isa`] (tests, benchmarks).
//!
//! Every kernel entry point takes or looks up an [`Isa`]; an `Isa` value other
//! than `Scalar` is only ever used after [`Isa::is_available`] said yes, which is
//! what makes the `unsafe` calls into `#[target_feature]` functions sound.

use std::sync::atomic::{AtomicU8, Ordering};

/// A kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust, the reference every other path is tested against.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// AArch64 NEON with the `dotprod` extension (`sdot`).
    Neon,
    /// AArch64 NEON without `dotprod` (widening multiplies instead of `sdot`).
    NeonNoDotprod,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Neon, Isa::NeonNoDotprod];

    /// The value of `MEKI_KERNELS` that selects this family.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Neon => "neon",
            Isa::NeonNoDotprod => "neon-nodotprod",
        }
    }

    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.iter().copied().find(|i| i.name() == s.trim())
    }

    /// Whether this CPU can run the family.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => avx2_available(),
            Isa::Neon => neon_available() && dotprod_available(),
            Isa::NeonNoDotprod => neon_available(),
        }
    }

    /// The families this CPU can run, scalar first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .iter()
            .copied()
            .filter(|i| i.is_available())
            .collect()
    }

    /// The fastest family this CPU can run.
    pub fn detect() -> Isa {
        [Isa::Avx2, Isa::Neon, Isa::NeonNoDotprod]
            .into_iter()
            .find(|i| i.is_available())
            .unwrap_or(Isa::Scalar)
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}
#[cfg(not(target_arch = "x86_64"))]
fn avx2_available() -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn neon_available() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}
#[cfg(not(target_arch = "aarch64"))]
fn neon_available() -> bool {
    false
}

#[cfg(target_arch = "aarch64")]
fn dotprod_available() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}
#[cfg(not(target_arch = "aarch64"))]
fn dotprod_available() -> bool {
    false
}

/// Error of [`set_isa`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsaUnavailable(pub Isa);

impl std::fmt::Display for IsaUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kernel family `{}` is not supported by this CPU (available: {})",
            self.0,
            Isa::available()
                .iter()
                .map(|i| i.name())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

impl std::error::Error for IsaUnavailable {}

const UNSET: u8 = u8::MAX;
static ACTIVE: AtomicU8 = AtomicU8::new(UNSET);

fn to_u8(i: Isa) -> u8 {
    Isa::ALL.iter().position(|x| *x == i).unwrap_or(0) as u8
}

/// The family chosen from `MEKI_KERNELS`, or detected. An unknown or
/// unavailable value is reported on stderr and replaced by the detected one.
fn initial() -> Isa {
    let detected = Isa::detect();
    match std::env::var("MEKI_KERNELS") {
        Err(_) => detected,
        Ok(v) if v.trim().is_empty() || v.trim() == "auto" => detected,
        Ok(v) => match Isa::from_name(&v) {
            Some(i) if i.is_available() => i,
            Some(i) => {
                eprintln!(
                    "meki-kernels: MEKI_KERNELS: {}; using `{detected}`",
                    IsaUnavailable(i)
                );
                detected
            }
            None => {
                eprintln!(
                    "meki-kernels: MEKI_KERNELS={v:?} is not one of scalar, avx2, neon, neon-nodotprod, auto; using `{detected}`"
                );
                detected
            }
        },
    }
}

/// The family the kernels currently use.
pub fn isa() -> Isa {
    Isa::ALL[setting(&ACTIVE, || to_u8(initial())) as usize]
}

/// Forces a kernel family for the whole process (tests, benchmarks).
pub fn set_isa(i: Isa) -> Result<(), IsaUnavailable> {
    if !i.is_available() {
        return Err(IsaUnavailable(i));
    }
    ACTIVE.store(to_u8(i), Ordering::Relaxed);
    Ok(())
}

/// How the AVX2 kernels decode float (F32/F16/BF16) weight matrices, i.e.
/// multiply them by fewer than [`crate::matmul::FLOAT_BLOCKED_MIN_TOKENS`]
/// tokens; the prefill from that count on is the same for both.
///
/// The two read memory differently and each CPU family prefers one
/// (measured, F16 decode, same binary): `Rows` reads one weight row at a
/// time, front to back (one sequential stream, four FMA chains per row),
/// 1.2-1.4x faster than `Tiles` on a Zen 4 EPYC (0.6B and 1.7B shapes);
/// `Tiles` reads 4 rows at once (4 x 1 register tiles, one chain per row,
/// the prefill's order), 1.4-1.5x faster than `Rows` on a Xeon (0.6B). `auto` (the default) picks `Rows`
/// on AMD CPUs and `Tiles` elsewhere; env `MEKI_FLOAT_DECODE` (`rows`,
/// `tiles`, `auto`) or [`set_float_decode`] override it.
///
/// With `Tiles` (and [`FloatPrefill::F32`]) a decoded token's products
/// equal the prefill's bit for bit; with `Rows` they may differ in the last
/// bits (the chains sum in another order), as llama.cpp's single-token and
/// batched products do, and F16 rows longer than
/// [`crate::matmul::F16_DECODE_F32_ACTS_MAX_COLS`] read the activations
/// rounded to f16, as llama.cpp reads them for every F16 product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatDecode {
    Tiles = 0,
    Rows = 1,
}

static FLOAT_DECODE: AtomicU8 = AtomicU8::new(UNSET);

/// Whether the CPU is AMD's (or Hygon's, the same cores).
fn amd_cpu() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // Leaf 0: the vendor string in ebx, edx, ecx.
        let r = std::arch::x86_64::__cpuid(0);
        let vendor: Vec<u8> = [r.ebx, r.edx, r.ecx]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        vendor == b"AuthenticAMD" || vendor == b"HygonGenuine"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The CPU family of an AMD (or Hygon) CPU (CPUID leaf 1: base family plus
/// extended family when the base is 15; 25 = Zen 3 / Zen 4, 26 = Zen 5).
pub(crate) fn amd_family() -> Option<u32> {
    #[cfg(target_arch = "x86_64")]
    {
        if !amd_cpu() {
            return None;
        }
        let eax = std::arch::x86_64::__cpuid(1).eax;
        let base = (eax >> 8) & 0xF;
        Some(if base == 0xF {
            base + ((eax >> 20) & 0xFF)
        } else {
            base
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Whether the CPU is an AMD family 25 core (Zen 3 / Zen 4), whose decode
/// streams want other software prefetch distances than s19's Zen 5 and
/// other CPUs (measured on s22's Zen 4 EPYC): none in the packed one-token
/// products (`repack::default_prefetch_blocks`), one row ahead in the
/// attention tiles (`x86::avx2_vec::attn_prefetch_bytes`).
pub(crate) fn zen3_or_zen4() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| amd_family() == Some(25))
}

/// The choice named by env `var` (one of `names`, or `auto`/unset/empty
/// for `auto`), as an index into `names`.
fn env_choice(var: &str, names: &[&str], auto: usize) -> usize {
    match std::env::var(var).as_deref().map(str::trim) {
        Err(_) | Ok("") | Ok("auto") => auto,
        Ok(v) => names.iter().position(|n| *n == v).unwrap_or_else(|| {
            eprintln!(
                "meki-kernels: {var}={v:?} is not one of {}, auto; using auto",
                names.join(", ")
            );
            auto
        }),
    }
}

/// The value of a process-wide setting: `cell`, or on first use `init()`
/// (if another thread set it meanwhile, theirs).
fn setting(cell: &AtomicU8, init: impl FnOnce() -> u8) -> u8 {
    let v = cell.load(Ordering::Relaxed);
    if v != UNSET {
        return v;
    }
    let i = init();
    match cell.compare_exchange(UNSET, i, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => i,
        Err(other) => other,
    }
}

/// A two-way setting chosen per CPU (`names[1]` on AMD CPUs, `names[0]`
/// elsewhere, unless env `var` names one), kept in `cell`: its index.
fn per_cpu_setting(cell: &AtomicU8, var: &str, names: &[&str; 2]) -> u8 {
    setting(cell, || {
        let auto = if amd_cpu() { 1 } else { 0 };
        env_choice(var, names, auto) as u8
    })
}

/// The float decode the AVX2 kernels currently use.
pub fn float_decode() -> FloatDecode {
    match per_cpu_setting(&FLOAT_DECODE, "MEKI_FLOAT_DECODE", &["tiles", "rows"]) {
        1 => FloatDecode::Rows,
        _ => FloatDecode::Tiles,
    }
}

/// Forces the float decode for the whole process (tests, benchmarks).
pub fn set_float_decode(d: FloatDecode) {
    FLOAT_DECODE.store(d as u8, Ordering::Relaxed);
}

/// How the AVX2 kernels multiply F16 matrices by
/// [`crate::matmul::FLOAT_BLOCKED_MIN_TOKENS`] tokens or more (prefill; both
/// through the cache-blocked product, in the same order: one 8-lane FMA
/// chain per output over the row, then its horizontal sum).
///
/// `F32`: each stretch of weight rows is converted to f32 once per block of
/// tokens, and the register tile reads f32 weights and f32 activations.
/// `F16`: the activations are rounded to f16 once per product (ggml's
/// activation type for F16 weights) and the tile converts both f16 weights
/// and f16 activations as it loads them, as llama.cpp's tinyBLAS does: half
/// the bytes through the caches. Zen 4 converts on other pipes than its
/// FMAs, and `F16` ran its prefill 1.03-1.30x faster (0.6B F16, 1 and 2
/// threads, same binary); Intel cores convert on an FMA port, and a Xeon
/// ran `F32` 1.07-1.40x faster. `auto` (the default) picks `F16` on AMD
/// CPUs and `F32` elsewhere; env `MEKI_FLOAT_PREFILL` (`f32`, `f16`, `auto`)
/// or [`set_float_prefill`] override it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatPrefill {
    F32 = 0,
    F16 = 1,
}

static FLOAT_PREFILL: AtomicU8 = AtomicU8::new(UNSET);

/// The F16 prefill the AVX2 kernels currently use.
pub fn float_prefill() -> FloatPrefill {
    match per_cpu_setting(&FLOAT_PREFILL, "MEKI_FLOAT_PREFILL", &["f32", "f16"]) {
        1 => FloatPrefill::F16,
        _ => FloatPrefill::F32,
    }
}

/// Forces the F16 prefill for the whole process (tests, benchmarks).
pub fn set_float_prefill(p: FloatPrefill) {
    FLOAT_PREFILL.store(p as u8, Ordering::Relaxed);
}
