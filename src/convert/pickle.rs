//! A minimal pickle virtual machine for `torch.save` checkpoints (pickle
//! protocol 2, plus the protocol 3/4 opcodes a newer pickler may emit).
//!
//! No Python objects are created and no code runs: globals are names,
//! `REDUCE`/`NEWOBJ` of a callable become an opaque [`Py::Object`] except for
//! the few torch understands (`torch._utils._rebuild_tensor_v2`,
//! `_rebuild_parameter`, `collections.OrderedDict`), and persistent ids (torch's
//! storages) stay descriptors. Stack, memo and nesting depth are bounded.

use super::tensor::Dtype;

/// Most items on the stack / in the memo (a checkpoint with a few thousand
/// tensors uses tens of thousands).
const MAX_ITEMS: usize = 1 << 24;
/// Deepest nesting of containers accepted.
const MAX_DEPTH: usize = 128;

/// A tensor as torch pickles it: a view of a storage held in the archive.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    /// Storage key: the archive entry `data/KEY`.
    pub storage: String,
    /// Element type, or the storage class name when not f32/f16/bf16.
    pub dtype: Result<Dtype, String>,
    /// In elements of the storage.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// A value on the pickle stack.
#[derive(Clone, Debug, PartialEq)]
pub enum Py {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Py>),
    List(Vec<Py>),
    Dict(Vec<(Py, Py)>),
    /// `module.name`, not resolved.
    Global(String, String),
    /// The argument of a persistent load (torch: a storage descriptor tuple).
    Persistent(Box<Py>),
    /// An object built by a callable meki does not interpret.
    Object {
        class: Box<Py>,
        args: Box<Py>,
        state: Option<Box<Py>>,
    },
    Tensor(TensorRef),
    /// Stack marker (`MARK`); never inside a container.
    Mark,
}

impl Py {
    fn depth(&self) -> usize {
        match self {
            Py::Tuple(v) | Py::List(v) => 1 + v.iter().map(Py::depth).max().unwrap_or(0),
            Py::Dict(v) => {
                1 + v
                    .iter()
                    .map(|(k, x)| k.depth().max(x.depth()))
                    .max()
                    .unwrap_or(0)
            }
            Py::Persistent(x) => 1 + x.depth(),
            Py::Object { class, args, state } => {
                1 + class
                    .depth()
                    .max(args.depth())
                    .max(state.as_ref().map_or(0, |s| s.depth()))
            }
            _ => 0,
        }
    }

    /// Looks a string key up in a dict.
    pub fn get(&self, key: &str) -> Option<&Py> {
        match self {
            Py::Dict(items) => items.iter().rev().find_map(|(k, v)| match k {
                Py::Str(s) if s == key => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    /// The attribute dict of an object (`argparse.Namespace` and the like).
    pub fn state(&self) -> Option<&Py> {
        match self {
            Py::Object { state: Some(s), .. } => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Py::Int(i) => Some(*i),
            Py::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    pub fn as_float(&self) -> Option<f64> {
        match self {
            Py::Float(f) => Some(*f),
            Py::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Py::Bool(b) => Some(*b),
            Py::Int(i) => Some(*i != 0),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Py::Str(s) => Some(s),
            _ => None,
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("pickle: {n} bytes at offset {} run past the end", self.pos))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.b[self.pos..];
        let n = rest
            .iter()
            .take(4096)
            .position(|&c| c == b'\n')
            .ok_or_else(|| format!("pickle: no newline after offset {}", self.pos))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn sized(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| format!("pickle: length {n} too large"))?;
        self.take(n)
    }
}

fn utf8(b: &[u8], at: usize) -> Result<String, String> {
    String::from_utf8(b.to_vec())
        .map_err(|_| format!("pickle: invalid UTF-8 string at offset {at}"))
}

struct Vm {
    stack: Vec<Py>,
    memo: std::collections::HashMap<u32, Py>,
}

impl Vm {
    fn push(&mut self, v: Py) -> Result<(), String> {
        if self.stack.len() >= MAX_ITEMS {
            return Err("pickle: stack too large".into());
        }
        self.stack.push(v);
        Ok(())
    }
    fn pop(&mut self, at: usize) -> Result<Py, String> {
        match self.stack.pop() {
            Some(Py::Mark) | None => Err(format!("pickle: stack underflow at offset {at}")),
            Some(v) => Ok(v),
        }
    }
    fn top(&mut self, at: usize) -> Result<&mut Py, String> {
        match self.stack.last_mut() {
            Some(Py::Mark) | None => Err(format!("pickle: empty stack at offset {at}")),
            Some(v) => Ok(v),
        }
    }
    /// Pops everything above the topmost mark, and the mark.
    fn pop_mark(&mut self, at: usize) -> Result<Vec<Py>, String> {
        let m = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Py::Mark))
            .ok_or_else(|| format!("pickle: no MARK on the stack at offset {at}"))?;
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items)
    }
    fn memo_put(&mut self, k: u32, at: usize) -> Result<(), String> {
        if self.memo.len() >= MAX_ITEMS {
            return Err("pickle: memo too large".into());
        }
        let v = self.top(at)?.clone();
        self.memo.insert(k, v);
        Ok(())
    }
    fn memo_get(&mut self, k: u32, at: usize) -> Result<(), String> {
        let v = self
            .memo
            .get(&k)
            .cloned()
            .ok_or_else(|| format!("pickle: memo key {k} unset at offset {at}"))?;
        self.push(v)
    }
}

fn checked(v: Py, at: usize) -> Result<Py, String> {
    if v.depth() > MAX_DEPTH {
        return Err(format!(
            "pickle: containers nested deeper than {MAX_DEPTH} at offset {at}"
        ));
    }
    Ok(v)
}

fn storage_dtype(class: &Py) -> Result<Dtype, String> {
    match class {
        Py::Global(m, n) if m == "torch" => match n.as_str() {
            "FloatStorage" => Ok(Dtype::F32),
            "HalfStorage" => Ok(Dtype::F16),
            "BFloat16Storage" => Ok(Dtype::BF16),
            other => Err(other.to_string()),
        },
        other => Err(format!("{other:?}")),
    }
}

fn usize_tuple(v: &Py, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Py::Tuple(items) | Py::List(items) => items
            .iter()
            .map(|x| x.as_int().and_then(|i| usize::try_from(i).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("pickle: tensor {what} holds a non-integer")),
        _ => Err(format!("pickle: tensor {what} is not a tuple")),
    }
}

/// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
fn rebuild_tensor(args: &Py) -> Result<Py, String> {
    let Py::Tuple(a) = args else {
        return Err("pickle: _rebuild_tensor_v2 arguments are not a tuple".into());
    };
    if a.len() < 4 {
        return Err(format!(
            "pickle: _rebuild_tensor_v2 takes >= 4 arguments, got {}",
            a.len()
        ));
    }
    let Py::Persistent(pid) = &a[0] else {
        return Err("pickle: _rebuild_tensor_v2's storage is not a persistent id".into());
    };
    let Py::Tuple(p) = pid.as_ref() else {
        return Err("pickle: storage persistent id is not a tuple".into());
    };
    if p.len() < 5 || p[0].as_str() != Some("storage") {
        return Err("pickle: persistent id is not ('storage', class, key, location, numel)".into());
    }
    let storage = match &p[2] {
        Py::Str(s) => s.clone(),
        Py::Int(i) => i.to_string(),
        _ => return Err("pickle: storage key is not a string".into()),
    };
    let offset = a[1]
        .as_int()
        .and_then(|i| usize::try_from(i).ok())
        .ok_or("pickle: tensor storage offset is not a non-negative integer")?;
    Ok(Py::Tensor(TensorRef {
        storage,
        dtype: storage_dtype(&p[1]),
        offset,
        shape: usize_tuple(&a[2], "size")?,
        stride: usize_tuple(&a[3], "stride")?,
    }))
}

/// What `REDUCE` (and `NEWOBJ`) make of `callable(*args)`.
fn call(callable: Py, args: Py) -> Result<Py, String> {
    if let Py::Global(m, n) = &callable {
        match (m.as_str(), n.as_str()) {
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                return rebuild_tensor(&args)
            }
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => {
                if let Py::Tuple(a) = &args {
                    if let Some(t @ Py::Tensor(_)) = a.first() {
                        return Ok(t.clone());
                    }
                }
                return Err("pickle: _rebuild_parameter without a tensor".into());
            }
            ("collections", "OrderedDict") => return Ok(Py::Dict(Vec::new())),
            _ => {}
        }
    }
    Ok(Py::Object {
        class: Box::new(callable),
        args: Box::new(args),
        state: None,
    })
}

/// Runs a pickle and returns the value it stops with.
pub fn load(bytes: &[u8]) -> Result<Py, String> {
    let mut r = Reader { b: bytes, pos: 0 };
    let mut vm = Vm {
        stack: Vec::new(),
        memo: Default::default(),
    };
    loop {
        let at = r.pos;
        let op = r.u8()?;
        match op {
            0x80 => {
                let proto = r.u8()?;
                if proto > 5 {
                    return Err(format!("pickle: protocol {proto} is not supported"));
                }
            }
            0x95 => {
                r.u64()?; // FRAME: a length hint only
            }
            b'.' => return vm.pop(at),
            b'(' => vm.push(Py::Mark)?,
            b'0' => {
                vm.pop(at)?;
            }
            b'1' => {
                vm.pop_mark(at)?;
            }
            b'2' => {
                let v = vm.top(at)?.clone();
                vm.push(v)?;
            }
            b'}' => vm.push(Py::Dict(Vec::new()))?,
            b']' => vm.push(Py::List(Vec::new()))?,
            b')' => vm.push(Py::Tuple(Vec::new()))?,
            b'N' => vm.push(Py::None)?,
            0x88 => vm.push(Py::Bool(true))?,
            0x89 => vm.push(Py::Bool(false))?,
            b'J' => {
                let v = r.u32()? as i32;
                vm.push(Py::Int(i64::from(v)))?
            }
            b'K' => {
                let v = r.u8()?;
                vm.push(Py::Int(i64::from(v)))?
            }
            b'M' => {
                let v = r.u16()?;
                vm.push(Py::Int(i64::from(v)))?
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    u64::from(r.u8()?)
                } else {
                    u64::from(r.u32()?)
                };
                let b = r.sized(n)?;
                if b.len() > 8 {
                    return Err(format!(
                        "pickle: integer of {} bytes at offset {at} is too large",
                        b.len()
                    ));
                }
                let mut v: i64 = 0;
                for (i, &x) in b.iter().enumerate() {
                    v |= i64::from(x) << (8 * i);
                }
                if !b.is_empty() && b.len() < 8 && b[b.len() - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * b.len()); // sign-extend
                }
                vm.push(Py::Int(v))?
            }
            b'G' => {
                let s = r.take(8)?;
                vm.push(Py::Float(f64::from_be_bytes(
                    s.try_into().expect("8 bytes"),
                )))?
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => u64::from(r.u32()?),
                    0x8c => u64::from(r.u8()?),
                    _ => r.u64()?,
                };
                let s = utf8(r.sized(n)?, at)?;
                vm.push(Py::Str(s))?
            }
            b'T' | b'U' => {
                let n = if op == b'T' {
                    u64::from(r.u32()?)
                } else {
                    u64::from(r.u8()?)
                };
                let s = String::from_utf8_lossy(r.sized(n)?).into_owned();
                vm.push(Py::Str(s))?
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => u64::from(r.u32()?),
                    b'C' => u64::from(r.u8()?),
                    _ => r.u64()?,
                };
                let b = r.sized(n)?.to_vec();
                vm.push(Py::Bytes(b))?
            }
            b't' => {
                let items = vm.pop_mark(at)?;
                vm.push(checked(Py::Tuple(items), at)?)?
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(vm.pop(at)?);
                }
                items.reverse();
                vm.push(checked(Py::Tuple(items), at)?)?
            }
            b'l' => {
                let items = vm.pop_mark(at)?;
                vm.push(checked(Py::List(items), at)?)?
            }
            b'd' => {
                let items = vm.pop_mark(at)?;
                let pairs = pairs(items, at)?;
                vm.push(checked(Py::Dict(pairs), at)?)?
            }
            b'a' => {
                let v = checked(vm.pop(at)?, at)?;
                match vm.top(at)? {
                    Py::List(l) => l.push(v),
                    _ => return Err(format!("pickle: APPEND to a non-list at offset {at}")),
                }
            }
            b'e' => {
                let items = vm.pop_mark(at)?;
                for v in &items {
                    checked(v.clone(), at)?;
                }
                match vm.top(at)? {
                    Py::List(l) => l.extend(items),
                    _ => return Err(format!("pickle: APPENDS to a non-list at offset {at}")),
                }
            }
            b's' => {
                let v = vm.pop(at)?;
                let k = vm.pop(at)?;
                let kv = pairs(vec![k, v], at)?;
                set_items(vm.top(at)?, kv, at)?;
            }
            b'u' => {
                let items = vm.pop_mark(at)?;
                let kv = pairs(items, at)?;
                set_items(vm.top(at)?, kv, at)?;
            }
            b'q' => {
                let k = u32::from(r.u8()?);
                vm.memo_put(k, at)?
            }
            b'r' => {
                let k = r.u32()?;
                vm.memo_put(k, at)?
            }
            0x94 => {
                let k = vm.memo.len() as u32;
                vm.memo_put(k, at)?
            }
            b'h' => {
                let k = u32::from(r.u8()?);
                vm.memo_get(k, at)?
            }
            b'j' => {
                let k = r.u32()?;
                vm.memo_get(k, at)?
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                vm.push(Py::Global(module, name))?
            }
            0x93 => {
                let name = vm.pop(at)?;
                let module = vm.pop(at)?;
                match (module, name) {
                    (Py::Str(m), Py::Str(n)) => vm.push(Py::Global(m, n))?,
                    _ => {
                        return Err(format!(
                            "pickle: STACK_GLOBAL of non-strings at offset {at}"
                        ))
                    }
                }
            }
            b'Q' => {
                let pid = vm.pop(at)?;
                vm.push(Py::Persistent(Box::new(pid)))?
            }
            b'R' | 0x81 => {
                let args = vm.pop(at)?;
                let callable = vm.pop(at)?;
                let v = call(callable, args)?;
                vm.push(checked(v, at)?)?
            }
            b'b' => {
                let state = vm.pop(at)?;
                // Tensors and dicts may carry extra state (e.g. parameters' __dict__): ignored.
                if let Py::Object { state: s, .. } = vm.top(at)? {
                    *s = Some(Box::new(state));
                }
            }
            0x8f => vm.push(Py::List(Vec::new()))?, // EMPTY_SET, as a list
            0x90 => {
                let items = vm.pop_mark(at)?;
                match vm.top(at)? {
                    Py::List(l) => l.extend(items),
                    _ => return Err(format!("pickle: ADDITEMS to a non-set at offset {at}")),
                }
            }
            0x91 => {
                let items = vm.pop_mark(at)?;
                vm.push(checked(Py::List(items), at)?)?
            }
            other => {
                return Err(format!(
                    "pickle: opcode 0x{other:02x} at offset {at} is not one torch.save uses"
                ))
            }
        }
    }
}

fn pairs(items: Vec<Py>, at: usize) -> Result<Vec<(Py, Py)>, String> {
    if items.len() & 1 != 0 {
        return Err(format!("pickle: odd number of dict items at offset {at}"));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((checked(k, at)?, checked(v, at)?));
    }
    Ok(out)
}

fn set_items(target: &mut Py, kv: Vec<(Py, Py)>, at: usize) -> Result<(), String> {
    match target {
        Py::Dict(d) => {
            // Duplicate keys are not merged: lookups take the last one, as Python keeps it.
            d.extend(kv);
            Ok(())
        }
        // A dict subclass built by REDUCE (e.g. a custom mapping): keep its items as state.
        Py::Object { state, .. } => {
            let s = state.get_or_insert_with(|| Box::new(Py::Dict(Vec::new())));
            set_items(s, kv, at)
        }
        _ => Err(format!("pickle: SETITEM(S) on a non-dict at offset {at}")),
    }
}
