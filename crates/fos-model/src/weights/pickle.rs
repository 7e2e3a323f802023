//! A small, defensive Python pickle interpreter for `torch.save` checkpoints.
//!
//! It understands the opcodes of protocols 2 to 5 that torch writes, and turns the
//! few callables a state dict uses (`OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `_rebuild_parameter`, the `torch.*Storage` types) into plain values. Nothing is
//! ever executed: every other global becomes an inert [`Value::Object`]. Lengths are
//! checked against the input before anything is allocated, so a hostile file gives
//! an error, not a panic or a huge allocation.

use std::collections::HashMap;

/// Errors of the pickle interpreter.
#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    /// The stream ended early.
    #[error("pickle stream truncated at byte {0}")]
    Truncated(usize),
    /// An opcode this reader does not implement.
    #[error("unsupported pickle opcode 0x{op:02x} at byte {pos}")]
    UnsupportedOpcode {
        /// The opcode.
        op: u8,
        /// Its offset.
        pos: usize,
    },
    /// The stream is malformed (stack underflow, bad memo reference, ...).
    #[error("malformed pickle at byte {pos}: {what}")]
    Malformed {
        /// Offset of the offending opcode.
        pos: usize,
        /// What is wrong.
        what: String,
    },
}

/// The element type of a torch storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    /// float32
    F32,
    /// float64
    F64,
    /// float16
    F16,
    /// bfloat16
    BF16,
    /// int64
    I64,
    /// int32
    I32,
    /// int16
    I16,
    /// int8
    I8,
    /// uint8 (also untyped storage)
    U8,
    /// bool
    Bool,
}

impl StorageDtype {
    /// Maps a torch storage class name (`FloatStorage`, ...) to its element type.
    pub fn from_storage_name(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" | "UntypedStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
}

/// A value on the pickle stack.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`
    None,
    /// `True` / `False`
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A float.
    Float(f64),
    /// A text string.
    Str(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A dict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A reference to a global (`module.name`), not resolved.
    Global(String, String),
    /// A storage reference from a persistent id.
    Storage {
        /// Element type.
        dtype: StorageDtype,
        /// Key of the storage in the checkpoint.
        key: String,
        /// Number of elements.
        numel: u64,
    },
    /// A tensor view into a storage.
    Tensor {
        /// Element type.
        dtype: StorageDtype,
        /// Key of the storage.
        key: String,
        /// Offset in elements.
        offset: u64,
        /// Shape.
        shape: Vec<u64>,
        /// Strides in elements.
        stride: Vec<u64>,
    },
    /// Any other object: the class and its constructor arguments, inert.
    Object(String, String, Vec<Value>),
}

enum Slot {
    Mark,
    V(Value),
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, Value>,
    /// Values that memo gets and DUP may still copy: bounds the "billion laughs"
    /// growth of a stream that duplicates a list into itself.
    copy_budget: usize,
}

/// Value nodes that copies may create, in all (a real state dict copies a few
/// thousand small tuples).
const COPY_BUDGET: usize = 1 << 22;

/// Number of nodes in `v`, counting at most `cap`.
fn nodes(v: &Value, cap: usize) -> usize {
    let mut n = 0;
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        n += 1;
        if n >= cap {
            break;
        }
        match v {
            Value::Tuple(i) | Value::List(i) | Value::Object(_, _, i) => todo.extend(i),
            Value::Dict(d) => todo.extend(d.iter().flat_map(|(k, v)| [k, v])),
            _ => {}
        }
    }
    n
}

fn malformed(pos: usize, what: impl Into<String>) -> PickleError {
    PickleError::Malformed {
        pos,
        what: what.into(),
    }
}

/// Unpickles one object from `data`, starting at `*pos`; `*pos` is left after STOP.
pub fn load(data: &[u8], pos: &mut usize) -> Result<Value, PickleError> {
    let mut vm = Vm {
        data,
        pos: *pos,
        stack: Vec::new(),
        memo: HashMap::new(),
        copy_budget: COPY_BUDGET,
    };
    let v = vm.run()?;
    *pos = vm.pos;
    Ok(v)
}

impl<'a> Vm<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated(self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn le<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated(self.data.len()))?;
        let s = self.take(n + 1)?;
        std::str::from_utf8(&s[..n]).map_err(|_| malformed(self.pos, "non-UTF-8 text line"))
    }
    fn text(&mut self, n: usize) -> Result<Value, PickleError> {
        let at = self.pos;
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| malformed(at, "invalid UTF-8 string"))?;
        Ok(Value::Str(s.to_owned()))
    }
    fn push(&mut self, v: Value) {
        self.stack.push(Slot::V(v));
    }
    fn pop(&mut self, at: usize) -> Result<Value, PickleError> {
        match self.stack.pop() {
            Some(Slot::V(v)) => Ok(v),
            Some(Slot::Mark) => Err(malformed(at, "unexpected mark")),
            None => Err(malformed(at, "stack underflow")),
        }
    }
    fn top(&mut self, at: usize) -> Result<&mut Value, PickleError> {
        match self.stack.last_mut() {
            Some(Slot::V(v)) => Ok(v),
            _ => Err(malformed(at, "stack underflow")),
        }
    }
    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>, PickleError> {
        let mut items = Vec::new();
        loop {
            match self.stack.pop() {
                Some(Slot::Mark) => break,
                Some(Slot::V(v)) => items.push(v),
                None => return Err(malformed(at, "mark not found")),
            }
        }
        items.reverse();
        Ok(items)
    }
    fn memo_put(&mut self, key: u32, at: usize) -> Result<(), PickleError> {
        let v = match self.stack.last() {
            Some(Slot::V(v)) => v.clone(),
            _ => return Err(malformed(at, "memoize with empty stack")),
        };
        self.memo.insert(key, v);
        Ok(())
    }
    fn memo_get(&mut self, key: u32, at: usize) -> Result<(), PickleError> {
        let cap = self.copy_budget.saturating_add(1);
        let n = self
            .memo
            .get(&key)
            .map(|v| nodes(v, cap))
            .ok_or_else(|| malformed(at, format!("memo key {key} missing")))?;
        self.spend(n, at)?;
        let v = self.memo[&key].clone();
        self.push(v);
        Ok(())
    }
    fn spend(&mut self, n: usize, at: usize) -> Result<(), PickleError> {
        self.copy_budget = self
            .copy_budget
            .checked_sub(n)
            .ok_or_else(|| malformed(at, "too many copied values (a self-referencing bomb?)"))?;
        Ok(())
    }

    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?;
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(at),
                b'(' => self.stack.push(Slot::Mark),
                b'0' => {
                    self.pop(at)?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let cap = self.copy_budget.saturating_add(1);
                    let n = nodes(self.top(at)?, cap);
                    self.spend(n, at)?;
                    let v = self.top(at)?.clone();
                    self.push(v);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.push(Value::Int(v.into()));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        usize::from(self.u8()?)
                    } else {
                        u32::from_le_bytes(self.le()?) as usize
                    };
                    let b = self.take(n)?;
                    self.push(long_from_le(b));
                }
                b'I' | b'L' => {
                    let s = self.line()?.trim_end_matches('L');
                    let v = match s {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => Value::Int(s.parse().map_err(|_| malformed(at, "bad integer"))?),
                    };
                    self.push(v);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.le()?);
                    self.push(Value::Float(v));
                }
                b'X' | b'T' => {
                    let n = u32::from_le_bytes(self.le()?) as usize;
                    let v = self.text(n)?;
                    self.push(v);
                }
                0x8c | b'U' => {
                    let n = usize::from(self.u8()?);
                    let v = self.text(n)?;
                    self.push(v);
                }
                0x8d => {
                    let n = usize::try_from(u64::from_le_bytes(self.le()?))
                        .map_err(|_| PickleError::Truncated(at))?;
                    let v = self.text(n)?;
                    self.push(v);
                }
                b'B' | b'C' | 0x8e => {
                    let n = match op {
                        b'C' => usize::from(self.u8()?),
                        b'B' => u32::from_le_bytes(self.le()?) as usize,
                        _ => usize::try_from(u64::from_le_bytes(self.le()?))
                            .map_err(|_| PickleError::Truncated(at))?,
                    };
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b));
                }
                b')' => self.push(Value::Tuple(vec![])),
                b't' => {
                    let items = self.pop_mark(at)?;
                    self.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = (0..n)
                        .map(|_| self.pop(at))
                        .collect::<Result<Vec<_>, _>>()?;
                    items.reverse();
                    self.push(Value::Tuple(items));
                }
                b']' => self.push(Value::List(vec![])),
                b'l' => {
                    let items = self.pop_mark(at)?;
                    self.push(Value::List(items));
                }
                b'a' => {
                    let v = self.pop(at)?;
                    match self.top(at)? {
                        Value::List(l) => l.push(v),
                        _ => return Err(malformed(at, "APPEND to a non-list")),
                    }
                }
                b'e' => {
                    let items = self.pop_mark(at)?;
                    match self.top(at)? {
                        Value::List(l) => l.extend(items),
                        _ => return Err(malformed(at, "APPENDS to a non-list")),
                    }
                }
                b'}' => self.push(Value::Dict(vec![])),
                b'd' => {
                    let items = self.pop_mark(at)?;
                    let d = pairs(items, at)?;
                    self.push(Value::Dict(d));
                }
                b's' => {
                    let v = self.pop(at)?;
                    let k = self.pop(at)?;
                    dict_extend(self.top(at)?, vec![(k, v)], at)?;
                }
                b'u' => {
                    let items = self.pop_mark(at)?;
                    let d = pairs(items, at)?;
                    dict_extend(self.top(at)?, d, at)?;
                }
                0x8f => self.push(Value::List(vec![])),
                0x90 => {
                    let items = self.pop_mark(at)?;
                    if let Value::List(l) = self.top(at)? {
                        l.extend(items);
                    }
                }
                0x91 => {
                    let items = self.pop_mark(at)?;
                    self.push(Value::List(items));
                }
                b'c' => {
                    let module = self.line()?.to_owned();
                    let name = self.line()?.to_owned();
                    self.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.push(Value::Global(m, n)),
                        _ => return Err(malformed(at, "STACK_GLOBAL needs two strings")),
                    }
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(k.into(), at)?;
                }
                b'r' => {
                    let k = u32::from_le_bytes(self.le()?);
                    self.memo_put(k, at)?;
                }
                b'p' => {
                    let k = self.line()?.parse().map_err(|_| malformed(at, "bad PUT"))?;
                    self.memo_put(k, at)?;
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len()).unwrap_or(u32::MAX);
                    self.memo_put(k, at)?;
                }
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(k.into(), at)?;
                }
                b'j' => {
                    let k = u32::from_le_bytes(self.le()?);
                    self.memo_get(k, at)?;
                }
                b'g' => {
                    let k = self.line()?.parse().map_err(|_| malformed(at, "bad GET"))?;
                    self.memo_get(k, at)?;
                }
                b'R' | 0x81 => {
                    let args = match self.pop(at)? {
                        Value::Tuple(a) => a,
                        _ => return Err(malformed(at, "REDUCE arguments are not a tuple")),
                    };
                    let func = self.pop(at)?;
                    self.push(reduce(func, args, at)?);
                }
                b'b' => {
                    // BUILD: state for an object. State dicts keep no useful state here
                    // except for OrderedDict subclasses, whose items come via SETITEMS.
                    self.pop(at)?;
                }
                b'Q' => {
                    let pid = self.pop(at)?;
                    self.push(persistent_load(pid, at)?);
                }
                _ => return Err(PickleError::UnsupportedOpcode { op, pos: at }),
            }
        }
    }
}

fn long_from_le(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Int(0);
    }
    if b.len() > 8 {
        // Torch writes a 10-byte magic number in legacy files; keep it as bytes.
        return Value::Bytes(b.to_vec());
    }
    let neg = b[b.len() - 1] & 0x80 != 0;
    let mut buf = if neg { [0xFF; 8] } else { [0; 8] };
    buf[..b.len()].copy_from_slice(b);
    Value::Int(i64::from_le_bytes(buf))
}

fn pairs(items: Vec<Value>, at: usize) -> Result<Vec<(Value, Value)>, PickleError> {
    if !items.len().is_multiple_of(2) {
        return Err(malformed(at, "odd number of dict items"));
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn dict_extend(
    target: &mut Value,
    items: Vec<(Value, Value)>,
    at: usize,
) -> Result<(), PickleError> {
    match target {
        Value::Dict(d) => {
            for (k, v) in items {
                if let Some(slot) = d.iter_mut().find(|(dk, _)| *dk == k) {
                    slot.1 = v;
                } else {
                    d.push((k, v));
                }
            }
            Ok(())
        }
        // Items set on an inert object (e.g. an OrderedDict subclass): keep them as a dict.
        Value::Object(..) => {
            *target = Value::Dict(items);
            Ok(())
        }
        _ => Err(malformed(at, "SETITEM on a non-dict")),
    }
}

fn as_u64(v: &Value, at: usize) -> Result<u64, PickleError> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as u64),
        _ => Err(malformed(at, "expected a non-negative integer")),
    }
}

fn as_u64s(v: &Value, at: usize) -> Result<Vec<u64>, PickleError> {
    match v {
        Value::Tuple(t) | Value::List(t) => t.iter().map(|x| as_u64(x, at)).collect(),
        _ => Err(malformed(at, "expected a tuple of integers")),
    }
}

fn reduce(func: Value, mut args: Vec<Value>, at: usize) -> Result<Value, PickleError> {
    let (module, name) = match func {
        Value::Global(m, n) => (m, n),
        _ => return Err(malformed(at, "REDUCE on a non-callable")),
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") | ("builtins", "dict") => Ok(Value::Dict(vec![])),
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            if args.len() < 4 {
                return Err(malformed(at, "_rebuild_tensor needs 4 arguments"));
            }
            let (dtype, key) = match &args[0] {
                Value::Storage { dtype, key, .. } => (*dtype, key.clone()),
                _ => return Err(malformed(at, "_rebuild_tensor without a storage")),
            };
            let shape = as_u64s(&args[2], at)?;
            let stride = as_u64s(&args[3], at)?;
            if shape.len() != stride.len() {
                return Err(malformed(at, "shape and stride ranks differ"));
            }
            Ok(Value::Tensor {
                dtype,
                key,
                offset: as_u64(&args[1], at)?,
                shape,
                stride,
            })
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            if args.is_empty() {
                return Err(malformed(at, "_rebuild_parameter without data"));
            }
            Ok(args.swap_remove(0))
        }
        _ => Ok(Value::Object(module, name, args)),
    }
}

fn persistent_load(pid: Value, at: usize) -> Result<Value, PickleError> {
    let t = match pid {
        Value::Tuple(t) if t.len() >= 5 => t,
        _ => return Err(malformed(at, "persistent id is not a storage tuple")),
    };
    if t[0] != Value::Str("storage".into()) {
        return Err(malformed(at, "persistent id is not a storage"));
    }
    let dtype = match &t[1] {
        Value::Global(_, n) => StorageDtype::from_storage_name(n)
            .ok_or_else(|| malformed(at, format!("unsupported storage type {n}")))?,
        _ => return Err(malformed(at, "storage type is not a class")),
    };
    let key = match &t[2] {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => return Err(malformed(at, "storage key is not a string")),
    };
    Ok(Value::Storage {
        dtype,
        key,
        numel: as_u64(&t[4], at)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_protocol2_dict_of_ints_and_strings() {
        // pickle.dumps({'a': 1, 'b': [2, 'x'], 'c': -3}, protocol=2)
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(K\x02X\x01\x00\x00\x00xq\x04eX\x01\x00\x00\x00cq\x05J\xfd\xff\xff\xffu.";
        let mut pos = 0;
        let v = load(p, &mut pos).unwrap();
        assert_eq!(pos, p.len());
        assert_eq!(
            v,
            Value::Dict(vec![
                (Value::Str("a".into()), Value::Int(1)),
                (
                    Value::Str("b".into()),
                    Value::List(vec![Value::Int(2), Value::Str("x".into())])
                ),
                (Value::Str("c".into()), Value::Int(-3)),
            ])
        );
    }

    #[test]
    fn reads_protocol4_frame_memoize_and_short_unicode() {
        // pickle.dumps(('ab', 300, None, True), protocol=4)
        let p = b"\x80\x04\x95\x0e\x00\x00\x00\x00\x00\x00\x00(\x8c\x02ab\x94M,\x01N\x88t\x94.";
        let mut pos = 0;
        let v = load(p, &mut pos).unwrap();
        assert_eq!(
            v,
            Value::Tuple(vec![
                Value::Str("ab".into()),
                Value::Int(300),
                Value::None,
                Value::Bool(true)
            ])
        );
    }

    #[test]
    fn hostile_streams_are_errors_not_panics() {
        for p in [
            &b""[..],
            b"\x80\x02",
            b"X\xff\xff\xff\x7f",
            b"h\x05.",
            b"t.",
            b"a.",
            b"\xff",
            b"\x80\x02N\x85R.",
        ] {
            let mut pos = 0;
            assert!(load(p, &mut pos).is_err(), "{p:?}");
        }
    }

    #[test]
    fn self_doubling_list_is_refused_not_exploded() {
        // A list memoised, then 64 times: get it twice and store the pair: 2^64 nodes.
        let mut p = b"]q\x00".to_vec();
        for _ in 0..64 {
            p.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        p.push(b'.');
        let mut pos = 0;
        let e = load(&p, &mut pos).unwrap_err().to_string();
        assert!(e.contains("too many copied values"), "{e}");
    }

    #[test]
    fn unknown_globals_stay_inert() {
        // GLOBAL os.system, args ('rm',), REDUCE: must not run, just be an object.
        let p = b"cos\nsystem\nX\x02\x00\x00\x00rm\x85R.";
        let mut pos = 0;
        let v = load(p, &mut pos).unwrap();
        assert_eq!(
            v,
            Value::Object("os".into(), "system".into(), vec![Value::Str("rm".into())])
        );
    }
}
