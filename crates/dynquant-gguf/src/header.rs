//! GGUF header model and parser.
//!
//! Layout (`ggml/src/gguf.cpp`, llama.cpp's own `docs/gguf.md`; here `docs/formats.md` §6):
//! magic `GGUF`, u32 version, u64 n_tensors, u64 n_kv, the KV pairs, the tensor infos, zero
//! padding to the alignment, then the data section. The parser reads from any `Read`
//! positioned at byte 0 and checks every length against the bytes left in the file before
//! allocating, so a hostile header cannot make it allocate more than the file holds or read
//! past its end.

use std::collections::HashSet;
use std::io::Read;

use crate::error::{GgufError, Location, Result};
use crate::keys;
use crate::types::GgmlType;
use crate::value::{Array, Metadata, Value, ValueType};

/// `GGUF` read as a little-endian u32.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Longest tensor name in bytes (`GGML_MAX_NAME` is 64 including the NUL).
pub const MAX_NAME_LEN: usize = 63;
/// Sane upper bound on the tensor count.
pub const MAX_TENSORS: u64 = 1 << 24;
/// Sane upper bound on the KV count.
pub const MAX_KV: u64 = 1 << 20;
/// Sane upper bound on one string's length (1 GiB).
pub const MAX_STRING_LEN: u64 = 1 << 30;
/// Sane upper bound on one array's element count.
pub const MAX_ARRAY_LEN: u64 = 1 << 32;
/// Deepest array nesting accepted.
pub const MAX_NESTING: u32 = 8;

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Dimensions in ggml order (`ne[0]` is the contiguous row length).
    pub shape: Vec<u64>,
    /// Stored type.
    pub ggml_type: GgmlType,
    /// Offset relative to the data section.
    pub offset: u64,
    /// Bytes of data (computed from shape and type).
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Builds an info with its byte size computed and checked (offset 0 until laid out).
    pub fn new(name: impl Into<String>, shape: Vec<u64>, ggml_type: GgmlType) -> Result<Self> {
        let name = name.into();
        if name.len() > MAX_NAME_LEN {
            return Err(GgufError::NameTooLong {
                len: name.len(),
                name,
            });
        }
        if shape.len() > MAX_DIMS as usize {
            return Err(GgufError::TooManyDims {
                n_dims: shape.len() as u32,
                name,
            });
        }
        let n_bytes = checked_tensor_bytes(&name, &shape, ggml_type)?;
        Ok(TensorInfo {
            name,
            shape,
            ggml_type,
            offset: 0,
            n_bytes,
        })
    }

    /// Total elements.
    pub fn n_elements(&self) -> u64 {
        // Checked at construction: the product fits in i64.
        self.shape.iter().product()
    }

    /// Elements per row (`ne[0]`; 1 for a 0-d tensor).
    pub fn row_len(&self) -> u64 {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Matrices (for a 3-D expert tensor, its experts): the product of the dimensions past the
    /// second, at least 1.
    pub fn n_matrices(&self) -> u64 {
        self.shape.iter().skip(2).product::<u64>().max(1)
    }

    /// Number of rows (product of the dimensions after the first).
    pub fn n_rows(&self) -> u64 {
        self.shape.iter().skip(1).product()
    }

    /// Bits per weight as stored.
    pub fn bpw(&self) -> f64 {
        let n = self.n_elements();
        if n == 0 {
            0.0
        } else {
            self.n_bytes as f64 * 8.0 / n as f64
        }
    }
}

/// Computes the data size of a tensor, checking ggml's shape rules.
fn checked_tensor_bytes(name: &str, shape: &[u64], ty: GgmlType) -> Result<u64> {
    let bad = |reason| GgufError::BadShape {
        name: name.to_string(),
        shape: shape.to_vec(),
        ty,
        reason,
    };
    let mut n: u64 = 1;
    for &d in shape {
        if d > i64::MAX as u64 {
            return Err(bad("a dimension is negative as int64"));
        }
        n = n
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| bad("the element count overflows int64"))?;
    }
    let row = shape.first().copied().unwrap_or(1);
    if row % ty.block_size() != 0 {
        return Err(bad("the row length is not a multiple of the block size"));
    }
    ty.info()
        .bytes_for(n)
        .filter(|&b| b <= i64::MAX as u64)
        .ok_or_else(|| bad("the byte size overflows"))
}

/// A parsed GGUF header with its data layout.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Metadata,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Data alignment.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

impl GgufHeader {
    /// Whether tensors are laid out as ggml's reader requires: in info order, each starting
    /// right after the previous one padded to the alignment. llama.cpp rejects other layouts.
    pub fn layout_is_canonical(&self) -> bool {
        let mut expected = 0u64;
        for t in &self.tensors {
            if t.offset != expected {
                return false;
            }
            match align_up(t.offset.saturating_add(t.n_bytes), self.alignment) {
                Some(next) => expected = next,
                None => return false,
            }
        }
        true
    }

    /// Index of the tensor called `name`.
    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }
}

/// Rounds `n` up to a multiple of `alignment` (a power of two), `None` on overflow.
pub fn align_up(n: u64, alignment: u64) -> Option<u64> {
    debug_assert!(alignment.is_power_of_two());
    Some(n.checked_add(alignment - 1)? & !(alignment - 1))
}

/// Reads `general.alignment` from metadata: absent means 32; anything but a non-zero u32
/// power of two is an error (ggml's reader rejects the same).
pub fn alignment_of(metadata: &Metadata) -> Result<u64> {
    match metadata.get(keys::general::ALIGNMENT) {
        None => Ok(keys::DEFAULT_ALIGNMENT),
        Some(Value::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some(Value::U32(a)) => Err(GgufError::BadAlignment(format!(
            "{a} is not a power of two"
        ))),
        Some(other) => Err(GgufError::BadAlignment(format!(
            "stored as {}, expected uint32",
            other.value_type()
        ))),
    }
}

/// Byte cursor over the header with the file length known up front.
struct Cursor<R> {
    inner: R,
    pos: u64,
    file_len: u64,
    buf: Vec<u8>,
}

impl<R: Read> Cursor<R> {
    fn remaining(&self) -> u64 {
        self.file_len - self.pos
    }

    fn need(&self, n: u64, location: &dyn Fn() -> Location) -> Result<()> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                location: location(),
                offset: self.pos,
                need: n,
                file_len: self.file_len,
            });
        }
        Ok(())
    }

    /// Reads exactly `n` bytes (already checked against the file length) into `self.buf`.
    fn fill(&mut self, n: u64, location: &dyn Fn() -> Location) -> Result<&[u8]> {
        self.need(n, location)?;
        let n = n as usize; // <= remaining file bytes, which fit in memory-mapped usize
        self.buf.resize(n, 0);
        self.inner.read_exact(&mut self.buf[..n]).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                // The file shrank under us: report it as truncation at this offset.
                GgufError::Truncated {
                    location: location(),
                    offset: self.pos,
                    need: n as u64,
                    file_len: self.file_len,
                }
            } else {
                GgufError::io("read", "<gguf header>", e)
            }
        })?;
        self.pos += n as u64;
        Ok(&self.buf[..n])
    }

    fn array<const N: usize>(&mut self, loc: &dyn Fn() -> Location) -> Result<[u8; N]> {
        let b = self.fill(N as u64, loc)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, loc: &dyn Fn() -> Location) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(loc)?))
    }

    fn u64(&mut self, loc: &dyn Fn() -> Location) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(loc)?))
    }

    fn string(&mut self, loc: &dyn Fn() -> Location) -> Result<String> {
        let len = self.u64(loc)?;
        if len > MAX_STRING_LEN {
            return Err(GgufError::TooLarge {
                what: "string length",
                location: loc(),
                count: len,
                limit: MAX_STRING_LEN,
            });
        }
        let bytes = self.fill(len, loc)?.to_vec();
        String::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 { location: loc() })
    }

    /// Checks `count` against a hard limit, then that `count` elements of at least
    /// `min_size` bytes each fit in the rest of the file, so no allocation is ever driven by
    /// a count the file cannot back.
    fn check_count(
        &self,
        what: &'static str,
        count: u64,
        min_size: u64,
        hard_limit: u64,
        loc: &dyn Fn() -> Location,
    ) -> Result<()> {
        if count > hard_limit {
            return Err(GgufError::TooLarge {
                what,
                location: loc(),
                count,
                limit: hard_limit,
            });
        }
        self.need(count.saturating_mul(min_size), loc)
    }

    fn value(&mut self, ty: ValueType, depth: u32, loc: &dyn Fn() -> Location) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(loc)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(loc)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(loc)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(loc)?)),
            ValueType::U32 => Value::U32(self.u32(loc)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(loc)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(loc)?)),
            ValueType::Bool => Value::Bool(bool_of(self.array::<1>(loc)?[0], loc)?),
            ValueType::String => Value::String(self.string(loc)?),
            ValueType::Array => Value::Array(self.array_value(depth + 1, loc)?),
            ValueType::U64 => Value::U64(self.u64(loc)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(loc)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(loc)?)),
        })
    }

    fn value_type(&mut self, loc: &dyn Fn() -> Location) -> Result<ValueType> {
        let id = self.u32(loc)?;
        ValueType::from_id(id).ok_or_else(|| GgufError::InvalidValueType {
            location: loc(),
            type_id: id,
        })
    }

    fn array_value(&mut self, depth: u32, loc: &dyn Fn() -> Location) -> Result<Array> {
        if depth > MAX_NESTING {
            return Err(GgufError::NestingTooDeep {
                location: loc(),
                limit: MAX_NESTING,
            });
        }
        let ty = self.value_type(loc)?;
        let count = self.u64(loc)?;
        self.check_count(
            "array length",
            count,
            ty.min_encoded_size(),
            MAX_ARRAY_LEN,
            loc,
        )?;
        // Fixed-size elements: one bulk read (bounded by the file length), then decode.
        macro_rules! bulk {
            ($variant:ident, $t:ty) => {{
                let raw = self.fill(count * std::mem::size_of::<$t>() as u64, loc)?;
                Array::$variant(
                    raw.chunks_exact(std::mem::size_of::<$t>())
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk")))
                        .collect(),
                )
            }};
        }
        // Variable-size elements: never pre-allocate more than a small amount, so memory
        // grows only with bytes actually present in the file.
        let initial = (count as usize).min(1 << 16);
        Ok(match ty {
            ValueType::U8 => Array::U8(self.fill(count, loc)?.to_vec()),
            ValueType::I8 => Array::I8(self.fill(count, loc)?.iter().map(|&b| b as i8).collect()),
            ValueType::Bool => {
                let raw = self.fill(count, loc)?;
                let mut out = Vec::with_capacity(raw.len());
                for &b in raw {
                    out.push(match b {
                        0 => false,
                        1 => true,
                        _ => {
                            return Err(GgufError::InvalidBool {
                                location: loc(),
                                byte: b,
                            })
                        }
                    });
                }
                Array::Bool(out)
            }
            ValueType::U16 => bulk!(U16, u16),
            ValueType::I16 => bulk!(I16, i16),
            ValueType::U32 => bulk!(U32, u32),
            ValueType::I32 => bulk!(I32, i32),
            ValueType::F32 => bulk!(F32, f32),
            ValueType::U64 => bulk!(U64, u64),
            ValueType::I64 => bulk!(I64, i64),
            ValueType::F64 => bulk!(F64, f64),
            ValueType::String => {
                let mut out = Vec::with_capacity(initial);
                for _ in 0..count {
                    out.push(self.string(loc)?);
                }
                Array::String(out)
            }
            ValueType::Array => {
                let mut out = Vec::with_capacity(initial);
                for _ in 0..count {
                    out.push(self.array_value(depth + 1, loc)?);
                }
                Array::Array(out)
            }
        })
    }
}

fn bool_of(b: u8, loc: &dyn Fn() -> Location) -> Result<bool> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        byte => Err(GgufError::InvalidBool {
            location: loc(),
            byte,
        }),
    }
}

/// Parses a GGUF header from `input` positioned at byte 0 of a file of `file_len` bytes, and
/// validates every tensor's data range against `file_len`.
pub fn parse_header<R: Read>(input: R, file_len: u64) -> Result<GgufHeader> {
    let mut c = Cursor {
        inner: input,
        pos: 0,
        file_len,
        buf: Vec::new(),
    };
    let at_header = || Location::FileHeader;
    let magic: [u8; 4] = c.array(&at_header)?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32(&at_header)?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = c.u64(&at_header)?;
    let n_kv = c.u64(&at_header)?;
    // Smallest encodings: a KV is key length (8) + type (4) + a 1-byte value; a tensor info
    // is name length (8) + n_dims (4) + type (4) + offset (8).
    c.check_count("metadata entry count", n_kv, 13, MAX_KV, &at_header)?;
    c.check_count("tensor count", n_tensors, 24, MAX_TENSORS, &at_header)?;

    let mut metadata = Metadata::new();
    let mut seen_keys = HashSet::with_capacity(n_kv as usize);
    for index in 0..n_kv {
        let key_loc = || Location::KeyOf { index };
        let key = c.string(&key_loc)?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey { index });
        }
        if !seen_keys.insert(key.clone()) {
            return Err(GgufError::DuplicateKey(key));
        }
        let val_loc = || Location::ValueOf { key: key.clone() };
        let ty = c.value_type(&val_loc)?;
        let value = c.value(ty, 0, &val_loc)?;
        metadata.push_unchecked(key, value);
    }
    let alignment = alignment_of(&metadata)?;

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut seen_names = HashSet::with_capacity(n_tensors as usize);
    for index in 0..n_tensors {
        let loc = || Location::TensorInfo { index, name: None };
        let name_len = c.u64(&loc)?;
        if name_len > MAX_NAME_LEN as u64 {
            // Read what we can of it for the message, without trusting the length.
            let shown = c
                .fill(name_len.min(64), &loc)
                .map(|b| String::from_utf8_lossy(b).into_owned());
            return Err(GgufError::NameTooLong {
                name: shown.unwrap_or_default(),
                len: usize::try_from(name_len).unwrap_or(usize::MAX),
            });
        }
        let raw = c.fill(name_len, &loc)?.to_vec();
        let name =
            String::from_utf8(raw).map_err(|_| GgufError::InvalidUtf8 { location: loc() })?;
        let loc = || Location::TensorInfo {
            index,
            name: Some(name.clone()),
        };
        let n_dims = c.u32(&loc)?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::TooManyDims { name, n_dims });
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            shape.push(c.u64(&loc)?);
        }
        let type_id = c.u32(&loc)?;
        let offset = c.u64(&loc)?;
        let ggml_type = GgmlType::try_from(type_id).map_err(|_| GgufError::UnknownTensorType {
            name: name.clone(),
            type_id,
        })?;
        if !seen_names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor(name));
        }
        let mut info = TensorInfo::new(name, shape, ggml_type)?;
        info.offset = offset;
        tensors.push(info);
    }

    // The data section starts after the infos, padded to the alignment. A file with no
    // tensors may end before that padding.
    let data_offset = align_up(c.pos, alignment)
        .ok_or_else(|| GgufError::BadAlignment("data section offset overflows".into()))?;
    validate_layout(&tensors, alignment, data_offset, file_len)?;
    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// Checks alignment, bounds and overlap of every tensor's data range.
fn validate_layout(
    tensors: &[TensorInfo],
    alignment: u64,
    data_offset: u64,
    file_len: u64,
) -> Result<()> {
    for t in tensors {
        if t.offset % alignment != 0 {
            return Err(GgufError::MisalignedOffset {
                name: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    name: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                })
            }
        }
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        // Bounds were checked above, so offset + n_bytes cannot overflow.
        if pair[0].offset + pair[0].n_bytes > pair[1].offset {
            return Err(GgufError::OverlappingTensors {
                first: pair[0].name.clone(),
                second: pair[1].name.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_up_rounds_and_detects_overflow() {
        assert_eq!(align_up(0, 32), Some(0));
        assert_eq!(align_up(1, 32), Some(32));
        assert_eq!(align_up(64, 32), Some(64));
        assert_eq!(align_up(u64::MAX - 3, 32), None);
    }

    #[test]
    fn tensor_info_checks_shape() {
        assert!(TensorInfo::new("a", vec![576, 10], GgmlType::Q4_K).is_err());
        let t = TensorInfo::new("a", vec![512, 10], GgmlType::Q4_K).unwrap();
        assert_eq!(t.n_bytes, 2 * 144 * 10);
        assert!(TensorInfo::new("a", vec![1 << 40, 1 << 40], GgmlType::F32).is_err());
        assert!(TensorInfo::new("x".repeat(64), vec![1], GgmlType::F32).is_err());
        assert!(TensorInfo::new("x".repeat(63), vec![1], GgmlType::F32).is_ok());
    }
}
