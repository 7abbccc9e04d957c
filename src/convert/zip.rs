//! The ZIP container of torch checkpoints (`torch.save`): central directory
//! (with ZIP64 for files past 4 GiB), stored (uncompressed) entries only,
//! served as slices of the mapped file. Every offset and size is checked
//! against the file; nothing is allocated from an unchecked count.

use std::collections::HashMap;
use std::ops::Range;

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD64_LOCATOR_SIG: u32 = 0x0706_4b50;
const EOCD64_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

/// Entry name -> byte range of its (stored) data in the archive.
#[derive(Debug, Default)]
pub struct ZipIndex {
    pub entries: HashMap<String, Range<usize>>,
}

fn u16_at(b: &[u8], off: usize, what: &str) -> Result<u16, String> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("zip: {what} at offset {off} past the end of the file"))
}

fn u32_at(b: &[u8], off: usize, what: &str) -> Result<u32, String> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("zip: {what} at offset {off} past the end of the file"))
}

fn u64_at(b: &[u8], off: usize, what: &str) -> Result<u64, String> {
    b.get(off..off + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| format!("zip: {what} at offset {off} past the end of the file"))
}

fn to_usize(v: u64, what: &str, len: usize) -> Result<usize, String> {
    usize::try_from(v)
        .ok()
        .filter(|&v| v <= len)
        .ok_or_else(|| format!("zip: {what} {v} exceeds the file size {len}"))
}

impl ZipIndex {
    pub fn parse(b: &[u8]) -> Result<ZipIndex, String> {
        let len = b.len();
        if len < 22 {
            return Err("zip: file too short for an end-of-central-directory record".into());
        }
        // The EOCD record is the last 22 bytes plus a comment of up to 64 KiB.
        let lowest = len.saturating_sub(22 + 0xffff);
        let eocd = (lowest..=len - 22)
            .rev()
            .find(|&i| u32_at(b, i, "eocd").ok() == Some(EOCD_SIG))
            .ok_or("zip: no end-of-central-directory record (not a zip archive)")?;
        let mut n_entries = u64::from(u16_at(b, eocd + 10, "entry count")?);
        let mut cd_size = u64::from(u32_at(b, eocd + 12, "central directory size")?);
        let mut cd_off = u64::from(u32_at(b, eocd + 16, "central directory offset")?);
        if eocd >= 20 && u32_at(b, eocd - 20, "zip64 locator")? == EOCD64_LOCATOR_SIG {
            let z = to_usize(
                u64_at(b, eocd - 12, "zip64 eocd offset")?,
                "zip64 eocd offset",
                len,
            )?;
            if u32_at(b, z, "zip64 eocd")? != EOCD64_SIG {
                return Err(format!(
                    "zip: no zip64 end-of-central-directory record at offset {z}"
                ));
            }
            n_entries = u64_at(b, z + 32, "zip64 entry count")?;
            cd_size = u64_at(b, z + 40, "zip64 central directory size")?;
            cd_off = u64_at(b, z + 48, "zip64 central directory offset")?;
        }
        let cd_off = to_usize(cd_off, "central directory offset", len)?;
        let cd_end = to_usize(cd_size, "central directory size", len)?
            .checked_add(cd_off)
            .filter(|&e| e <= len)
            .ok_or("zip: central directory runs past the end of the file")?;
        // Each central entry takes at least 46 bytes: bounds the count.
        if n_entries > (cd_end - cd_off) as u64 / 46 {
            return Err(format!(
                "zip: {n_entries} entries cannot fit a {}-byte central directory",
                cd_end - cd_off
            ));
        }
        let mut entries = HashMap::with_capacity(n_entries as usize);
        let mut p = cd_off;
        for i in 0..n_entries {
            if u32_at(b, p, "central entry")? != CENTRAL_SIG {
                return Err(format!(
                    "zip: central entry {i} at offset {p}: bad signature"
                ));
            }
            let method = u16_at(b, p + 10, "method")?;
            let mut comp = u64::from(u32_at(b, p + 20, "compressed size")?);
            let mut uncomp = u64::from(u32_at(b, p + 24, "size")?);
            let name_len = usize::from(u16_at(b, p + 28, "name length")?);
            let extra_len = usize::from(u16_at(b, p + 30, "extra length")?);
            let comment_len = usize::from(u16_at(b, p + 32, "comment length")?);
            let mut local = u64::from(u32_at(b, p + 42, "local header offset")?);
            let name_bytes = b
                .get(p + 46..p + 46 + name_len)
                .ok_or_else(|| format!("zip: central entry {i}: name past the end"))?;
            let name = String::from_utf8_lossy(name_bytes).into_owned();
            // ZIP64 extended information: the 0xffffffff fields, in order.
            let mut e = p + 46 + name_len;
            let extra_end = e + extra_len;
            while e + 4 <= extra_end {
                let id = u16_at(b, e, "extra id")?;
                let sz = usize::from(u16_at(b, e + 2, "extra size")?);
                if id == 0x0001 {
                    let mut q = e + 4;
                    for field in [&mut uncomp, &mut comp, &mut local] {
                        if *field == 0xffff_ffff && q + 8 <= e + 4 + sz {
                            *field = u64_at(b, q, "zip64 field")?;
                            q += 8;
                        }
                    }
                }
                e += 4 + sz;
            }
            p = extra_end + comment_len;
            if p > cd_end {
                return Err(format!(
                    "zip: central entry {i} ({name:?}) runs past the directory"
                ));
            }
            if method != 0 || comp != uncomp {
                return Err(format!(
                    "zip: entry {name:?} is compressed (method {method}); torch.save stores entries uncompressed"
                ));
            }
            let local = to_usize(local, "local header offset", len)?;
            if u32_at(b, local, "local header")? != LOCAL_SIG {
                return Err(format!(
                    "zip: entry {name:?}: no local header at offset {local}"
                ));
            }
            let start = local
                + 30
                + usize::from(u16_at(b, local + 26, "local name length")?)
                + usize::from(u16_at(b, local + 28, "local extra length")?);
            let end = to_usize(uncomp, "entry size", len)?
                .checked_add(start)
                .filter(|&e| e <= len)
                .ok_or_else(|| format!("zip: entry {name:?} data runs past the end of the file"))?;
            entries.insert(name, start..end);
        }
        Ok(ZipIndex { entries })
    }
}
