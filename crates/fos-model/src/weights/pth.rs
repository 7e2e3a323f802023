//! Reading `torch.save` checkpoints without torch: the zip format (torch >= 1.6)
//! and the legacy format (a sequence of pickles followed by raw storages).

use std::collections::HashMap;
use std::io::{Cursor, Read};

use super::pickle::{self, StorageDtype, Value};
use super::{strip_prefix, Weights, WeightsError};

/// The magic number that opens a legacy torch checkpoint (LONG1, little-endian).
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

fn format(msg: impl Into<String>) -> WeightsError {
    WeightsError::Format(msg.into())
}

/// Parses a torch checkpoint held in memory into float weights.
///
/// The state dict is the top-level dict, or the first nested dict holding
/// tensors (`{"state_dict": {...}}`, `{"model": {...}}`). Integer tensors such as
/// `num_batches_tracked` are dropped; half, bfloat16 and double become f32.
pub fn read_pth(bytes: &[u8]) -> Result<Weights, WeightsError> {
    let (root, storages) = if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes)?
    } else {
        read_legacy(bytes)?
    };
    let entries = find_state_dict(&root)
        .ok_or_else(|| format("no dict of tensors found in the checkpoint"))?;
    let mut w = Weights::new();
    for (name, t) in entries {
        if let Value::Tensor {
            dtype,
            key,
            offset,
            shape,
            stride,
        } = t
        {
            let Some(data) = to_f32(
                *dtype,
                storages.get(key.as_str()),
                *offset,
                shape,
                stride,
                name,
            )?
            else {
                continue;
            };
            let shape = shape.iter().map(|&d| d as usize).collect();
            w.insert(strip_prefix(name), shape, data);
        }
    }
    if w.is_empty() {
        return Err(format("the checkpoint holds no floating-point tensors"));
    }
    Ok(w)
}

type Storages<'a> = HashMap<String, std::borrow::Cow<'a, [u8]>>;

fn read_zip(bytes: &[u8]) -> Result<(Value, Storages<'static>), WeightsError> {
    let mut z = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format(e.to_string()))?;
    let pkl_name = z
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .map(str::to_owned)
        .ok_or_else(|| format("zip checkpoint without data.pkl"))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_owned();
    let pkl = read_entry(&mut z, &pkl_name)?;
    let mut pos = 0;
    let root = pickle::load(&pkl, &mut pos)?;
    let mut storages = Storages::new();
    for key in storage_keys(&root) {
        let data = read_entry(&mut z, &format!("{prefix}data/{key}"))?;
        storages.insert(key, data.into());
    }
    Ok((root, storages))
}

fn read_entry(z: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str) -> Result<Vec<u8>, WeightsError> {
    let mut f = z
        .by_name(name)
        .map_err(|e| format(format!("zip entry {name}: {e}")))?;
    let mut out = Vec::with_capacity(f.size().min(1 << 31) as usize);
    f.read_to_end(&mut out)
        .map_err(|e| format(format!("zip entry {name}: {e}")))?;
    Ok(out)
}

fn read_legacy(bytes: &[u8]) -> Result<(Value, Storages<'_>), WeightsError> {
    let mut pos = 0;
    match pickle::load(bytes, &mut pos) {
        Ok(Value::Bytes(m)) if m == LEGACY_MAGIC => {}
        _ => {
            return Err(format(
                "not a torch checkpoint (neither the zip nor the legacy format)",
            ))
        }
    }
    let _protocol = pickle::load(bytes, &mut pos)?;
    let _sys_info = pickle::load(bytes, &mut pos)?;
    let root = pickle::load(bytes, &mut pos)?;
    let keys = match pickle::load(bytes, &mut pos)? {
        Value::List(k) => k,
        _ => return Err(format("legacy checkpoint: storage key list missing")),
    };
    let dtypes = storage_dtypes(&root);
    let mut storages = Storages::new();
    for k in keys {
        let key = match k {
            Value::Str(s) => s,
            _ => return Err(format("legacy checkpoint: storage key is not a string")),
        };
        let numel = bytes
            .get(pos..pos + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(|| format("legacy checkpoint truncated in the storages"))?;
        pos += 8;
        let elsize = dtypes.get(key.as_str()).map_or(4, |d| d.size()) as u64;
        let len = numel
            .checked_mul(elsize)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| pos.checked_add(n).is_some_and(|e| e <= bytes.len()))
            .ok_or_else(|| format(format!("storage {key} runs past the end of the file")))?;
        storages.insert(key, bytes[pos..pos + len].into());
        pos += len;
    }
    Ok((root, storages))
}

fn walk<'v>(v: &'v Value, f: &mut impl FnMut(&'v Value)) {
    f(v);
    match v {
        Value::Tuple(items) | Value::List(items) | Value::Object(_, _, items) => {
            items.iter().for_each(|i| walk(i, f))
        }
        Value::Dict(d) => d.iter().for_each(|(_, x)| walk(x, f)),
        _ => {}
    }
}

fn storage_keys(root: &Value) -> Vec<String> {
    let mut keys = std::collections::BTreeSet::new();
    walk(root, &mut |v| {
        if let Value::Tensor { key, .. } = v {
            keys.insert(key.clone());
        }
    });
    keys.into_iter().collect()
}

fn storage_dtypes(root: &Value) -> HashMap<&str, StorageDtype> {
    let mut m = HashMap::new();
    walk(root, &mut |v| {
        if let Value::Tensor { key, dtype, .. } = v {
            m.insert(key.as_str(), *dtype);
        }
    });
    m
}

fn find_state_dict(v: &Value) -> Option<Vec<(&str, &Value)>> {
    let Value::Dict(d) = v else { return None };
    let tensors: Vec<(&str, &Value)> = d
        .iter()
        .filter_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Tensor { .. }) => Some((k.as_str(), v)),
            _ => None,
        })
        .collect();
    if !tensors.is_empty() {
        return Some(tensors);
    }
    d.iter().find_map(|(_, v)| find_state_dict(v))
}

/// Gathers a strided view of a storage into a dense row-major f32 vector;
/// `None` for integer and bool tensors.
fn to_f32(
    dtype: StorageDtype,
    storage: Option<&std::borrow::Cow<'_, [u8]>>,
    offset: u64,
    shape: &[u64],
    stride: &[u64],
    name: &str,
) -> Result<Option<Vec<f32>>, WeightsError> {
    let conv: fn(&[u8]) -> f32 = match dtype {
        StorageDtype::F32 => |b| f32::from_le_bytes(b.try_into().unwrap()),
        StorageDtype::F16 => |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
        StorageDtype::BF16 => |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        StorageDtype::F64 => |b| f64::from_le_bytes(b.try_into().unwrap()) as f32,
        _ => return Ok(None),
    };
    let storage = storage.ok_or_else(|| format(format!("{name}: storage missing")))?;
    let es = dtype.size() as u64;
    let numel_storage = storage.len() as u64 / es;
    let numel: u64 = shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format(format!("{name}: shape overflows")))?;
    // Broadcast (stride-0) views can claim any shape over a tiny storage; a
    // checkpoint parameter is never much larger than its storage.
    if numel > numel_storage.max(1).saturating_mul(16) {
        return Err(format(format!(
            "{name}: view of {numel} elements over a storage of {numel_storage}"
        )));
    }
    if numel > 0 {
        let last = shape.iter().zip(stride).try_fold(offset, |a, (&d, &s)| {
            (d - 1).checked_mul(s).and_then(|x| x.checked_add(a))
        });
        if last.is_none_or(|l| l >= numel_storage) {
            return Err(format(format!("{name}: view runs past its storage")));
        }
    }
    let mut out = Vec::with_capacity(numel as usize);
    let mut idx = vec![0u64; shape.len()];
    for _ in 0..numel {
        let off: u64 = offset + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<u64>();
        let b = (off * es) as usize;
        out.push(conv(&storage[b..b + es as usize]));
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_gather_matches_manual_transpose() {
        // storage 0..6 as a 2x3 row-major, read as its 3x2 transpose (strides 1, 3).
        let st: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let cow = std::borrow::Cow::from(&st[..]);
        let v = to_f32(StorageDtype::F32, Some(&cow), 0, &[3, 2], &[1, 3], "t")
            .unwrap()
            .unwrap();
        assert_eq!(v, vec![0., 3., 1., 4., 2., 5.]);
        assert!(to_f32(StorageDtype::F32, Some(&cow), 1, &[3, 2], &[1, 3], "t").is_err());
        assert!(to_f32(StorageDtype::I64, Some(&cow), 0, &[1], &[1], "t")
            .unwrap()
            .is_none());
    }
}
