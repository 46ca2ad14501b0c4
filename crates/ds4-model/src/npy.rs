//! Minimal `.npy` (format 1.0) reading and writing of little-endian f32 arrays.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

/// Write a C-order float32 array of `shape`.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        bail!("npy: shape {shape:?} holds {n} values, got {}", data.len());
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_s}, }}");
    let total = 10 + header.len() + 1;
    let pad = (64 - total % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&out)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Read a C-order float32 array; returns `(shape, data)`.
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        bail!("{}: not an .npy file", path.display());
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => {
            if b.len() < 12 {
                bail!("{}: truncated header", path.display());
            }
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        v => bail!("{}: unsupported npy version {v}", path.display()),
    };
    let header = std::str::from_utf8(b.get(start..start + hlen).context("truncated npy header")?)?;
    if !header.contains("'descr': '<f4'") {
        bail!("{}: not little-endian float32 ({header})", path.display());
    }
    if header.contains("'fortran_order': True") {
        bail!("{}: fortran order not supported", path.display());
    }
    let s = header
        .find("'shape': (")
        .context("npy header has no shape")?
        + 10;
    let e = s + header[s..].find(')').context("bad npy shape")?;
    let shape: Vec<usize> = header[s..e]
        .split(',')
        .map(|x| x.trim())
        .filter(|x| !x.is_empty())
        .map(|x| x.parse::<usize>())
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let body = &b[start + hlen..];
    if body.len() != n * 4 {
        bail!(
            "{}: {} data bytes for shape {shape:?}",
            path.display(),
            body.len()
        );
    }
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, data))
}
