//! GGUF header encoding and the streaming tensor-data encoder.
//!
//! [`layout`] assigns ggml's canonical offsets (tensors in order, each padded to the
//! alignment); [`encode_header`] produces the header bytes including the padding before the
//! data section; [`StreamEncoder`] then accepts tensor data strictly in header order, in
//! chunks of any size, and pads after every tensor as ggml's writer does.

use std::io::Write;

use crate::error::{GgufError, Result};
use crate::header::{align_up, alignment_of, GgufHeader, TensorInfo, MAGIC};
use crate::value::{with_array, Array, Metadata, Value};

/// Assigns canonical offsets to `tensors` and returns the data section size (padded).
pub fn layout(tensors: &mut [TensorInfo], alignment: u64) -> Result<u64> {
    let mut offset = 0u64;
    for t in tensors.iter_mut() {
        t.offset = offset;
        offset = t
            .offset
            .checked_add(t.n_bytes)
            .and_then(|end| align_up(end, alignment))
            .ok_or_else(|| GgufError::BadShape {
                name: t.name.clone(),
                shape: t.shape.clone(),
                ty: t.ggml_type,
                reason: "the data section size overflows",
            })?;
    }
    Ok(offset)
}

/// Builds a version-3 header for `metadata` and `tensors`, laying the tensors out
/// canonically. The data offset is computed from the encoded size.
pub fn build_header(metadata: Metadata, mut tensors: Vec<TensorInfo>) -> Result<GgufHeader> {
    let alignment = alignment_of(&metadata)?;
    layout(&mut tensors, alignment)?;
    let mut header = GgufHeader {
        version: 3,
        metadata,
        tensors,
        alignment,
        data_offset: 0,
    };
    let unpadded = encode_header_unpadded(&header).len() as u64;
    header.data_offset = align_up(unpadded, alignment)
        .ok_or_else(|| GgufError::BadAlignment("header size overflows".into()))?;
    Ok(header)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&(a.element_type() as u32).to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::Bool(v) => out.extend(v.iter().map(|&x| x as u8)),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::Array(v) => v.iter().for_each(|inner| put_array(out, inner)),
        // Remaining variants are fixed-size little-endian numbers.
        other => with_array!(other, v => put_numbers(out, v)),
    }
}

/// Little-endian encoding of fixed-size numbers.
trait LeBytes {
    fn put(&self, out: &mut Vec<u8>);
}
macro_rules! le_bytes {
    ($($t:ty),*) => {$(
        impl LeBytes for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le_bytes!(u8, i8, u16, i16, u32, i32, f32, u64, i64, f64);
impl LeBytes for bool {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
}
impl LeBytes for String {
    fn put(&self, out: &mut Vec<u8>) {
        put_str(out, self);
    }
}
impl LeBytes for Array {
    fn put(&self, out: &mut Vec<u8>) {
        put_array(out, self);
    }
}

fn put_numbers<T: LeBytes>(out: &mut Vec<u8>, v: &[T]) {
    v.iter().for_each(|x| x.put(out));
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(&(v.value_type() as u32).to_le_bytes());
    match v {
        Value::U8(x) => x.put(out),
        Value::I8(x) => x.put(out),
        Value::U16(x) => x.put(out),
        Value::I16(x) => x.put(out),
        Value::U32(x) => x.put(out),
        Value::I32(x) => x.put(out),
        Value::F32(x) => x.put(out),
        Value::Bool(x) => x.put(out),
        Value::String(x) => x.put(out),
        Value::Array(x) => x.put(out),
        Value::U64(x) => x.put(out),
        Value::I64(x) => x.put(out),
        Value::F64(x) => x.put(out),
    }
}

/// Encodes the header without the padding before the data section.
pub fn encode_header_unpadded(h: &GgufHeader) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 << 16);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&h.version.to_le_bytes());
    out.extend_from_slice(&(h.tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(h.metadata.len() as u64).to_le_bytes());
    for (k, v) in h.metadata.entries() {
        put_str(&mut out, k);
        put_value(&mut out, v);
    }
    for t in &h.tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in &t.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    out
}

/// Encodes the header and the zero padding up to `header.data_offset`.
pub fn encode_header(h: &GgufHeader) -> Vec<u8> {
    let mut out = encode_header_unpadded(h);
    // data_offset was computed by build_header from this very encoding, or read from a file
    // whose header encodes to the same bytes; never shrink the header.
    let target = (h.data_offset as usize).max(out.len());
    out.resize(target, 0);
    out
}

/// Writes tensor data in header order with padding, to any `Write`.
pub struct StreamEncoder<W: Write> {
    out: W,
    tensors: Vec<(String, u64)>,
    alignment: u64,
    next: usize,
    written: u64,
    bytes_out: u64,
}

impl<W: Write> StreamEncoder<W> {
    /// Writes the header to `out` and prepares to accept tensor data.
    pub fn new(mut out: W, header: &GgufHeader, io_path: &std::path::Path) -> Result<Self> {
        let bytes = encode_header(header);
        out.write_all(&bytes)
            .map_err(|e| GgufError::io("write", io_path, e))?;
        Ok(StreamEncoder {
            out,
            tensors: header
                .tensors
                .iter()
                .map(|t| (t.name.clone(), t.n_bytes))
                .collect(),
            alignment: header.alignment,
            next: 0,
            written: 0,
            bytes_out: bytes.len() as u64,
        })
    }

    /// Name of the next tensor that still needs data (zero-sized tensors need none).
    pub fn expected(&self) -> Option<&str> {
        let rest = self.tensors.get(self.next..).unwrap_or_default();
        rest.iter().find(|t| t.1 > 0).map(|(n, _)| n.as_str())
    }

    /// Appends `data` to tensor `name`, which must be the next tensor in header order. May be
    /// called repeatedly with consecutive chunks; the tensor is complete (and padded) once
    /// all its bytes are in.
    pub fn write(&mut self, name: &str, data: &[u8], io_path: &std::path::Path) -> Result<()> {
        // Zero-sized tensors have nothing to write; step over them unless named.
        while let Some((n, 0)) = self.tensors.get(self.next) {
            if n == name {
                break;
            }
            self.next += 1;
        }
        let Some((expected, size)) = self.tensors.get(self.next) else {
            return Err(GgufError::OutOfOrder {
                expected: "<no more tensors>".into(),
                got: name.into(),
            });
        };
        if expected != name {
            return Err(GgufError::OutOfOrder {
                expected: expected.clone(),
                got: name.into(),
            });
        }
        let total = self.written + data.len() as u64;
        if total > *size {
            return Err(GgufError::TooMuchData {
                name: name.into(),
                expected: *size,
                got: total,
            });
        }
        let size = *size;
        self.out
            .write_all(data)
            .map_err(|e| GgufError::io("write", io_path, e))?;
        self.written = total;
        self.bytes_out += data.len() as u64;
        if self.written == size {
            self.finish_tensor(io_path)?;
        }
        Ok(())
    }

    fn finish_tensor(&mut self, io_path: &std::path::Path) -> Result<()> {
        let size = self.tensors[self.next].1;
        let pad = align_up(size, self.alignment).unwrap_or(size) - size;
        const ZEROS: [u8; 256] = [0; 256];
        let mut left = pad as usize;
        while left > 0 {
            let n = left.min(ZEROS.len());
            self.out
                .write_all(&ZEROS[..n])
                .map_err(|e| GgufError::io("write", io_path, e))?;
            left -= n;
        }
        self.bytes_out += pad;
        self.next += 1;
        self.written = 0;
        Ok(())
    }

    /// Checks every tensor was written in full and returns the sink and the bytes written.
    pub fn finish(mut self, io_path: &std::path::Path) -> Result<(W, u64)> {
        while self.tensors.get(self.next).is_some_and(|t| t.1 == 0) {
            self.next += 1;
        }
        if let Some((name, size)) = self.tensors.get(self.next) {
            return Err(GgufError::Incomplete {
                name: name.clone(),
                written: self.written,
                expected: *size,
            });
        }
        self.out
            .flush()
            .map_err(|e| GgufError::io("write", io_path, e))?;
        Ok((self.out, self.bytes_out))
    }
}
