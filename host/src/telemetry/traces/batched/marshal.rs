//! The CPython marshal form of a span batch, for Python guests
//! (wit/telemetry.wit, `span-batch`): the bytes of `marshal.dumps(ops, 2)`,
//! where `ops` is a tuple of operations, each a tuple of the JSON form's
//! fields in the same order. CPython writes that format in C in every
//! build, componentize-py's included, whose interpreter has neither a fast
//! JSON encoder nor `struct` for the binary form.
//!
//! Format version 2 (CPython's `Python/marshal.c`, the version
//! `marshal.dumps(x, 2)` writes) has no back-references and one string
//! type. Each value is a type byte and its payload, integers little-endian:
//!
//! | byte | value | payload |
//! |---|---|---|
//! | `N` `T` `F` | None, True, False | — |
//! | `i` | int within 32 bits | i32 |
//! | `l` | larger int | i32 n: \|n\| 15-bit digits (u16 each, least significant first), the sign of n the int's |
//! | `g` | float | f64 |
//! | `u` | str | i32 length, UTF-8 |
//! | `(` `[` | tuple, list | i32 count, the items |
//! | `{` | dict | key, value pairs, then `0` |
//!
//! A span takes values of those types only. bytes (`s`), sets (`<`, `>`),
//! complex numbers (`y`), Ellipsis (`.`) and StopIteration (`S`) are read
//! and left out as values that are not attribute values; any other type
//! byte (a code object, a back-reference of a later format version) makes
//! the batch malformed from there on.

use super::json::{Dialect, J, apply_item};
use super::{BatchError, RequestTrace};
use std::borrow::Cow;

/// The most values one batch may hold. Every value is held as a [`J`] of
/// ~40 bytes until its operation is applied, and marshal writes None in one
/// byte: without it a 16 MiB batch could make the host hold ~0.6 GiB. The
/// Python SDK sends one operation of a few dozen values.
const MAX_VALUES: usize = 1 << 20;

/// The deepest a container may sit (the batch is 0): an operation (1), its
/// attributes (2), an array value (3), and one more level so that an array
/// inside an array is read, then refused as a value.
const MAX_DEPTH: u8 = 4;

/// Apply a marshal batch (`bytes` starts with `(`): each operation as it is
/// read. A malformed operation is skipped and the rest applied, as in JSON;
/// bytes that are not marshal stop the batch there. The first error is
/// returned, with the operation's index as its offset (0: the batch).
pub(super) fn apply(trace: &mut RequestTrace, bytes: &[u8]) -> Result<(), BatchError> {
    let error = |offset, what| BatchError {
        offset,
        what,
        json: true,
    };
    let mut r = Reader {
        buf: bytes,
        pos: 1,
        invalid: 0,
        values: 0,
    };
    let n = r.count().map_err(|what| error(0, what))?;
    let mut first_error = None;
    for i in 1..=n {
        let item = match r.value(1) {
            Ok(item) => item,
            Err(what) => return Err(first_error.unwrap_or(error(i, what))),
        };
        trace.adjustments.invalid_values += std::mem::take(&mut r.invalid);
        if apply_item(trace, i, item, Dialect::Marshal, &mut first_error).is_err() {
            break;
        }
    }
    if first_error.is_none() && r.pos < bytes.len() {
        first_error = Some(error(0, "bytes after the batch"));
    }
    first_error.map_or(Ok(()), Err)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Dict entries left out for a key that is not a str.
    invalid: u64,
    /// Values read so far (at most [`MAX_VALUES`]).
    values: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or("truncated")?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn i32(&mut self) -> Result<i32, &'static str> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    /// A length or count: at most what is left, since every item takes at
    /// least a byte (a hostile count allocates nothing).
    fn count(&mut self) -> Result<usize, &'static str> {
        let n = usize::try_from(self.i32()?).map_err(|_| "negative length")?;
        if n > self.buf.len() - self.pos {
            return Err("length past the end");
        }
        Ok(n)
    }

    fn value(&mut self, depth: u8) -> Result<J<'a>, &'static str> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err("more than 1048576 values in one batch");
        }
        let code = self.array::<1>()?[0];
        if matches!(code, b'(' | b'[' | b'{' | b'<' | b'>') && depth > MAX_DEPTH {
            return Err("values nested too deep");
        }
        Ok(match code {
            b'N' => J::Null,
            b'T' => J::Bool(true),
            b'F' => J::Bool(false),
            b'i' => J::Int(i128::from(self.i32()?)),
            b'l' => self.long()?,
            b'g' => J::Float(f64::from_le_bytes(self.array()?)),
            b'u' => {
                let n = self.count()?;
                let bytes = self.take(n)?;
                // Lone surrogates (marshal writes them) become U+FFFD.
                J::Str(match std::str::from_utf8(bytes) {
                    Ok(s) => Cow::Borrowed(s),
                    Err(_) => String::from_utf8_lossy(bytes),
                })
            }
            b'(' | b'[' => {
                let n = self.count()?;
                let mut items = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                J::Array(items)
            }
            b'{' => {
                let mut entries = Vec::new();
                while self.buf.get(self.pos) != Some(&b'0') {
                    let key = self.value(depth + 1)?;
                    let value = self.value(depth + 1)?;
                    match key {
                        J::Str(key) => entries.push((key, value)),
                        _ => self.invalid += 1,
                    }
                }
                self.pos += 1;
                J::Object(entries)
            }
            b's' => {
                let n = self.count()?;
                self.take(n)?;
                J::Other
            }
            b'<' | b'>' => {
                for _ in 0..self.count()? {
                    self.value(depth + 1)?;
                }
                J::Other
            }
            b'y' => {
                self.take(16)?;
                J::Other
            }
            b'.' | b'S' => J::Other,
            _ => return Err("a marshal type a span batch does not take"),
        })
    }

    /// An int past 32 bits. Past 120 bits it is kept as `i128::MAX` (or
    /// its negative): out of range for every field and attribute.
    fn long(&mut self) -> Result<J<'a>, &'static str> {
        let n = self.i32()?;
        let digits = n.unsigned_abs() as usize;
        let bytes = self.take(digits.checked_mul(2).ok_or("truncated")?)?;
        let mut v: i128 = 0;
        for (i, d) in bytes.chunks_exact(2).enumerate() {
            let d = u16::from_le_bytes([d[0], d[1]]);
            if d >= 1 << 15 {
                return Err("an int digit past 15 bits");
            }
            if i < 8 {
                v |= i128::from(d) << (15 * i);
            } else if d != 0 {
                v = i128::MAX;
            }
        }
        Ok(J::Int(if n < 0 { -v } else { v }))
    }
}
