//! Metadata values (`gguf_type`) and the ordered key/value store.

use super::error::{GgufError, Result};
use std::collections::HashMap;

/// GGUF metadata value type ids (`enum gguf_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub const ALL: [ValueType; 13] = [
        ValueType::U8,
        ValueType::I8,
        ValueType::U16,
        ValueType::I16,
        ValueType::U32,
        ValueType::I32,
        ValueType::F32,
        ValueType::Bool,
        ValueType::String,
        ValueType::Array,
        ValueType::U64,
        ValueType::I64,
        ValueType::F64,
    ];

    pub fn from_id(id: u32) -> Option<ValueType> {
        Self::ALL.get(id as usize).copied()
    }

    /// gguf-py's name (`UINT32`, `STRING`, ...), as gguf-dump prints it.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "UINT8",
            ValueType::I8 => "INT8",
            ValueType::U16 => "UINT16",
            ValueType::I16 => "INT16",
            ValueType::U32 => "UINT32",
            ValueType::I32 => "INT32",
            ValueType::F32 => "FLOAT32",
            ValueType::Bool => "BOOL",
            ValueType::String => "STRING",
            ValueType::Array => "ARRAY",
            ValueType::U64 => "UINT64",
            ValueType::I64 => "INT64",
            ValueType::F64 => "FLOAT64",
        }
    }

    /// Smallest encoded size of one value of this type: bounds element
    /// counts by the bytes left before anything is allocated.
    pub(crate) fn min_encoded_size(self) -> u64 {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
            ValueType::U16 | ValueType::I16 => 2,
            ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
            ValueType::U64 | ValueType::I64 | ValueType::F64 => 8,
            ValueType::String => 8,
            ValueType::Array => 12,
        }
    }
}

impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A typed metadata array: one `Vec` per element type, so a 150k-token
/// vocabulary is one `Vec<String>` and its scores one `Vec<f32>`.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    /// Nested arrays; each element carries its own element type.
    Array(Vec<Array>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// Type name for messages: `UINT32`, or `[STRING]` for arrays.
    pub fn type_label(&self) -> String {
        match self {
            Value::Array(a) => format!("[{}]", a.element_type().name()),
            v => v.value_type().name().to_string(),
        }
    }

    /// Any integer type as `u64`, `None` for negative values and non-integers.
    pub fn as_u64_lossless(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

impl Array {
    pub fn element_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a scalar [`Value`] (nested arrays are cloned).
    pub fn get(&self, i: usize) -> Option<Value> {
        Some(match self {
            Array::U8(v) => Value::U8(*v.get(i)?),
            Array::I8(v) => Value::I8(*v.get(i)?),
            Array::U16(v) => Value::U16(*v.get(i)?),
            Array::I16(v) => Value::I16(*v.get(i)?),
            Array::U32(v) => Value::U32(*v.get(i)?),
            Array::I32(v) => Value::I32(*v.get(i)?),
            Array::F32(v) => Value::F32(*v.get(i)?),
            Array::Bool(v) => Value::Bool(*v.get(i)?),
            Array::String(v) => Value::String(v.get(i)?.clone()),
            Array::Array(v) => Value::Array(v.get(i)?.clone()),
            Array::U64(v) => Value::U64(*v.get(i)?),
            Array::I64(v) => Value::I64(*v.get(i)?),
            Array::F64(v) => Value::F64(*v.get(i)?),
        })
    }
}

macro_rules! value_from {
    ($($t:ty => $var:ident),* $(,)?) => {
        $(
            impl From<$t> for Value {
                fn from(v: $t) -> Value { Value::$var(v) }
            }
            impl From<Vec<$t>> for Array {
                fn from(v: Vec<$t>) -> Array { Array::$var(v) }
            }
            impl From<Vec<$t>> for Value {
                fn from(v: Vec<$t>) -> Value { Value::Array(Array::$var(v)) }
            }
        )*
    };
}

value_from!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, u64 => U64, i64 => I64, f64 => F64,
);

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::String(v.to_string())
    }
}

impl From<Array> for Value {
    fn from(v: Array) -> Value {
        Value::Array(v)
    }
}

impl From<Vec<Array>> for Value {
    fn from(v: Vec<Array>) -> Value {
        Value::Array(Array::Array(v))
    }
}

/// Metadata key/value pairs in file order, with lookup by key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

macro_rules! scalar_getter {
    ($($(#[$doc:meta])* $fn:ident -> $t:ty = $var:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $fn(&self, key: &str) -> Result<$t> {
                match self.require(key)? {
                    Value::$var(v) => Ok(*v),
                    other => Err(wrong_type(key, ValueType::$var.name(), other)),
                }
            }
        )*
    };
}

macro_rules! array_getter {
    ($($(#[$doc:meta])* $fn:ident -> $t:ty = $var:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $fn(&self, key: &str) -> Result<&[$t]> {
                match self.require(key)? {
                    Value::Array(Array::$var(v)) => Ok(v),
                    other => Err(wrong_type(
                        key,
                        &format!("[{}]", ValueType::$var.name()),
                        other,
                    )),
                }
            }
        )*
    };
}

fn wrong_type(key: &str, wanted: &str, got: &Value) -> GgufError {
    GgufError::metadata(
        key,
        format!("expected {wanted}, found {}", got.type_label()),
    )
}

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a pair; an existing key is an error (GGUF keys are unique).
    pub fn push(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Result<()> {
        let key = key.into();
        if self.index.contains_key(&key) {
            return Err(GgufError::metadata(&key, "duplicate key"));
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value.into()));
        Ok(())
    }

    /// Replaces the value of `key` in place, or appends the pair.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value.into(),
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value.into()));
            }
        }
    }

    /// Removes `key`, keeping the order of the others; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        let (_, v) = self.entries.remove(i);
        for slot in self.index.values_mut() {
            if *slot > i {
                *slot -= 1;
            }
        }
        Some(v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pairs in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Like [`Metadata::get`], but a missing key is an error.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| GgufError::metadata(key, "missing"))
    }

    scalar_getter! {
        get_u8 -> u8 = U8;
        get_i8 -> i8 = I8;
        get_u16 -> u16 = U16;
        get_i16 -> i16 = I16;
        /// A `UINT32` value (strict: other integer types are an error; see [`Metadata::get_uint`]).
        get_u32 -> u32 = U32;
        get_i32 -> i32 = I32;
        get_f32 -> f32 = F32;
        get_bool -> bool = Bool;
        get_u64 -> u64 = U64;
        get_i64 -> i64 = I64;
        get_f64 -> f64 = F64;
    }

    /// Any non-negative integer value, whatever its width or signedness
    /// (converters disagree on `u32` vs `i32` for counts).
    pub fn get_uint(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64_lossless().ok_or_else(|| {
            GgufError::metadata(
                key,
                format!(
                    "expected a non-negative integer, found {} {v:?}",
                    v.type_label()
                ),
            )
        })
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.require(key)? {
            Value::String(s) => Ok(s),
            other => Err(wrong_type(key, "STRING", other)),
        }
    }

    /// Any array value.
    pub fn get_array(&self, key: &str) -> Result<&Array> {
        match self.require(key)? {
            Value::Array(a) => Ok(a),
            other => Err(wrong_type(key, "ARRAY", other)),
        }
    }

    array_getter! {
        get_u8_array -> u8 = U8;
        get_i8_array -> i8 = I8;
        get_u16_array -> u16 = U16;
        get_i16_array -> i16 = I16;
        get_u32_array -> u32 = U32;
        get_i32_array -> i32 = I32;
        get_f32_array -> f32 = F32;
        get_bool_array -> bool = Bool;
        get_str_array -> String = String;
        get_nested_array -> Array = Array;
        get_u64_array -> u64 = U64;
        get_i64_array -> i64 = I64;
        get_f64_array -> f64 = F64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_remove_keep_order_and_index() {
        let mut m = Metadata::new();
        m.push("a", 1u32).unwrap();
        m.push("b", "x").unwrap();
        m.push("c", vec![1.5f32]).unwrap();
        assert!(m.push("b", 2u8).is_err());
        m.set("b", 9i64);
        m.set("d", true);
        assert_eq!(m.remove("a"), Some(Value::U32(1)));
        let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "c", "d"]);
        // Lookups still land on the right entries after the removal.
        assert_eq!(m.get_i64("b").unwrap(), 9);
        assert_eq!(m.get_f32_array("c").unwrap(), &[1.5]);
        assert!(m.get_bool("d").unwrap());
        assert!(m.get("a").is_none());
    }

    #[test]
    fn getters_name_key_and_types_on_mismatch() {
        let mut m = Metadata::new();
        m.push("n", vec![1i32, 2]).unwrap();
        m.push("neg", -3i32).unwrap();
        let e = m.get_u32_array("n").unwrap_err().to_string();
        assert_eq!(e, "metadata key \"n\": expected [UINT32], found [INT32]");
        let e = m.get_str("neg").unwrap_err().to_string();
        assert_eq!(e, "metadata key \"neg\": expected STRING, found INT32");
        assert!(m.get_uint("neg").is_err());
        assert_eq!(m.get_i32_array("n").unwrap(), &[1, 2]);
        assert_eq!(
            m.get_u8("missing").unwrap_err().to_string(),
            "metadata key \"missing\": missing"
        );
    }

    #[test]
    fn type_ids_match_gguf() {
        for (i, t) in ValueType::ALL.iter().enumerate() {
            assert_eq!(*t as u32, i as u32);
            assert_eq!(ValueType::from_id(i as u32), Some(*t));
        }
        assert_eq!(ValueType::from_id(13), None);
    }
}
