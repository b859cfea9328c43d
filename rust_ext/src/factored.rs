//! Exact top-k over output rows that are sparse combinations of base rows (tokbench.dynamic.factored).
//!
//! Logits factor: l_t = sum_j c_tj (h . a_j) + b_t, where a_j are the atoms (the model's base rows, then
//! extra rows such as the mean row). One query costs a pass over the atoms (float32 or bfloat16 storage, f32
//! accumulation: bfloat16 is lossless for a model whose head is stored in bfloat16) and one pass over the CSR
//! coefficients, both split across threads; no array of all n scores is kept: the k-th best base score is a
//! floor below which no combined row can enter the top k.
use rayon::prelude::*;

/// Atom storage: float32 values, or the upper 16 bits of float32 (bfloat16).
#[derive(Debug)]
pub enum Atoms {
    F32(Vec<f32>),
    Bf16(Vec<u16>),
}

#[derive(Debug)]
pub struct Factored {
    dim: usize,
    n_atoms: usize,
    n_base: usize,
    atoms: Atoms,
    indptr: Vec<u64>,
    indices: Vec<u32>,
    data: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// For convex rows (weights >= 0 summing to 1), whose logit is at most the best constituent's plus the
    /// largest bias: the rows holding each atom, with their coefficients inline (Postings), and that largest bias.
    postings: Option<Postings>,
    bias_max: f32,
    /// Prune only when the postings to visit are under rows / prune (0: never prune).
    pub prune: u32,
    /// int8 prefilter (set_prefilter): the atoms quantised per row, and a bound on each row's quantisation error.
    q8: Option<Q8>,
}

/// The rows holding each atom, with each row's coefficients inline: for atom j, one record per row that holds it,
/// `[t, m, (column, weight bits) x m]` (the row's CSR entries, in CSR order), so that the rows a query visits are
/// read in sequence instead of gathered from the CSR. A row is stored once per distinct column; an atom's records
/// are ordered by row length, then row id. Records are grouped in segments of at most SEGMENT, the units the walk
/// splits across threads.
#[derive(Debug)]
struct Postings {
    /// records of each atom (rows holding it)
    count: Vec<u32>,
    /// the segments of atom j are seg_ptr[j]..seg_ptr[j + 1]; segment s is recs[seg[s]..seg[s + 1]]
    seg_ptr: Vec<u64>,
    seg: Vec<u64>,
    recs: Vec<u32>,
    /// the longest row's entries
    max_len: usize,
}

/// Records per segment of Postings.
const SEGMENT: usize = 4096;
/// Postings are not built (no pruning: one pass over all rows) when they would take more than this many words per
/// coefficient (a row of m columns is stored m times; m = 100 would be 200 words per coefficient).
const MAX_WORDS_PER_COEFFICIENT: usize = 16;

impl Postings {
    /// None when the records would exceed MAX_WORDS_PER_COEFFICIENT (very long rows).
    fn new(n_atoms: usize, indptr: &[u64], indices: &[u32], data: &[f32]) -> Option<Postings> {
        let rows = indptr.len() - 1;
        let span = |t: usize| indptr[t] as usize..indptr[t + 1] as usize;
        // positions of the row's distinct columns (first occurrences)
        let distinct = |t: usize| span(t).filter(move |&p| !indices[indptr[t] as usize..p].contains(&indices[p]));
        let mut count = vec![0u32; n_atoms];
        let mut words = vec![0u64; n_atoms + 1];
        for t in 0..rows {
            let m = span(t).len() as u64;
            for p in distinct(t) {
                count[indices[p] as usize] += 1;
                words[indices[p] as usize + 1] += 2 + 2 * m;
            }
        }
        for j in 0..n_atoms {
            words[j + 1] += words[j];
        }
        let total = words[n_atoms] as usize;
        if total > MAX_WORDS_PER_COEFFICIENT * indices.len().max(1) {
            return None;
        }
        let mut recs = big_vec(total, 0u32);
        let mut fill = words.clone();
        // each atom's records by row length, then row id: runs of equal length keep the walk's loops predictable
        let mut order: Vec<usize> = (0..rows).collect();
        order.sort_by_key(|&t| span(t).len());
        for &t in &order {
            let m = span(t).len();
            for p in distinct(t) {
                let o = fill[indices[p] as usize] as usize;
                recs[o] = t as u32;
                recs[o + 1] = m as u32;
                for (i, q) in span(t).enumerate() {
                    recs[o + 2 + 2 * i] = indices[q];
                    recs[o + 3 + 2 * i] = data[q].to_bits();
                }
                fill[indices[p] as usize] += 2 + 2 * m as u64;
            }
        }
        let (mut seg_ptr, mut seg) = (vec![0u64; n_atoms + 1], Vec::new());
        for j in 0..n_atoms {
            let mut o = words[j] as usize;
            for r in 0..count[j] as usize {
                if r % SEGMENT == 0 {
                    seg.push(o as u64);
                }
                o += 2 + 2 * recs[o + 1] as usize;
            }
            seg_ptr[j + 1] = seg.len() as u64;
        }
        seg.push(total as u64);
        let max_len = (0..rows).map(|t| span(t).len()).max().unwrap_or(0);
        Some(Postings { count, seg_ptr, seg, recs, max_len })
    }

    /// f(t, offset of t's record, its (column, weight bits) pairs) for every row holding an atom of `hot`
    /// (ascending; `is_hot` its bitset), once each: in the records of its first hot column (in row order).
    /// Split across threads by segment; what f returns, collected.
    fn walk<T: Send>(&self, hot: &[usize], is_hot: &[u64], f: impl Fn(usize, usize, &[u32]) -> Option<T> + Sync)
                     -> Vec<T> {
        let segs: Vec<(usize, usize)> =
            hot.iter().flat_map(|&j| (self.seg_ptr[j]..self.seg_ptr[j + 1]).map(move |s| (j, s as usize))).collect();
        let recs = &self.recs;
        segs.par_iter()
            .flat_map_iter(|&(j, s)| {
                let (mut o, end) = (self.seg[s] as usize, self.seg[s + 1] as usize);
                let mut out = Vec::new();
                while o < end {
                    let m = recs[o + 1] as usize;
                    let pairs = &recs[o + 2..o + 2 + 2 * m];
                    let first_hot = pairs.iter().step_by(2).map(|&c| c as usize).find(|&c| is_hot[c / 64] >> (c % 64) & 1 == 1);
                    if first_hot == Some(j) {
                        out.extend(f(recs[o] as usize, o, pairs));
                    }
                    o += 2 + 2 * m;
                }
                out
            })
            .collect()
    }

    fn nbytes(&self) -> usize {
        4 * self.count.len() + 8 * (self.seg_ptr.len() + self.seg.len()) + 4 * self.recs.len()
    }
}

/// f32 weight times logit, summed in order over (column, weight bits) pairs: the same float32 sum as over the CSR.
#[inline(always)]
fn pairs_sum(pairs: &[u32], logit: impl Fn(usize) -> f32) -> f32 {
    let mut s = 0f32;
    for p in pairs.chunks_exact(2) {
        s += f32::from_bits(p[1]) * logit(p[0] as usize);
    }
    s
}

/// Atoms quantised to int8 with one scale per row (a_j ~ scale_j * v_j), and err_j >= ||a_j - scale_j v_j||_2 plus
/// a float-rounding allowance, so that |h.a_j - scale_j (h.v_j)| <= err_j ||h||_2 for any query h.
#[derive(Debug, Clone)]
struct Q8 {
    vals: Vec<i8>,
    scale: Vec<f32>,
    err: Vec<f32>,
}

/// A vector of n copies of `v` whose pages the kernel is asked to back with transparent huge pages (Linux,
/// madvise mode) before they are first touched: a query streams tens of MB of atoms and postings, and with 4 KiB
/// pages a cold pass also walks thousands of cold page-table entries. Elsewhere, or when the kernel declines,
/// an ordinary vector.
fn big_vec<T: Copy>(n: usize, v: T) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        const MADV_HUGEPAGE: i32 = 14;
        const HUGE: usize = 2 << 20;
        let (start, len) = (out.as_mut_ptr() as usize, n * std::mem::size_of::<T>());
        let first = start.next_multiple_of(HUGE);
        if len >= HUGE && first + HUGE <= start + len {
            // SAFETY: the range lies inside this vector's allocation; madvise only changes how pages are backed
            // (its result is advisory: on failure nothing changes)
            unsafe { madvise(first as *mut std::ffi::c_void, (start + len - first) / HUGE * HUGE, MADV_HUGEPAGE) };
        }
    }
    out.resize(n, v);
    out
}

/// Rows of atoms per parallel task, and combined rows per task.
const ATOM_BLOCK: usize = 2048;
const ROW_BLOCK: usize = 16384;

/// Sum of widen(row[i]) * q[i] over 16 lanes (the portable loop; the AVX2 one is in `avx2`).
#[inline(always)]
fn dot_by<T: Copy>(row: &[T], q: &[f32], widen: impl Fn(T) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let (rc, rr) = row.split_at(row.len() / 16 * 16);
    let (qc, qr) = q.split_at(rc.len());
    for (r, x) in rc.chunks_exact(16).zip(qc.chunks_exact(16)) {
        for i in 0..16 {
            acc[i] += widen(r[i]) * x[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (r, x) in rr.iter().zip(qr) {
        s += widen(*r) * x;
    }
    s
}

fn widen_bf16(v: u16) -> f32 {
    f32::from_bits((v as u32) << 16)
}

#[inline(always)]
fn dot_f32(row: &[f32], q: &[f32]) -> f32 {
    dot_by(row, q, |v| v)
}

#[inline(always)]
fn dot_bf16(row: &[u16], q: &[f32]) -> f32 {
    dot_by(row, q, widen_bf16)
}

/// out[(j - start) * nq + q] = atom_j . query_q for the atoms of one block, with the given dot products (a macro:
/// the AVX2 variant must see its dots inside its own target-feature function).
macro_rules! atom_loop {
    ($atoms:expr, $dim:expr, $start:expr, $queries:expr, $nq:expr, $out:expr, $f32:path, $bf16:path) => {{
        let (dim, nq) = ($dim, $nq);
        for r in 0..$out.len() / nq {
            let j = $start + r;
            for q in 0..nq {
                let x = &$queries[q * dim..(q + 1) * dim];
                $out[r * nq + q] = match $atoms {
                    Atoms::F32(v) => $f32(&v[j * dim..(j + 1) * dim], x),
                    Atoms::Bf16(v) => $bf16(&v[j * dim..(j + 1) * dim], x),
                };
            }
        }
    }};
}

/// out[(j - start) * nq + q] = scale_j * (v_j . query_q): the int8 atom pass (a macro, as atom_loop).
macro_rules! q8_loop {
    ($q8:expr, $dim:expr, $start:expr, $queries:expr, $nq:expr, $out:expr, $i8:path) => {{
        let (dim, nq) = ($dim, $nq);
        for r in 0..$out.len() / nq {
            let j = $start + r;
            for q in 0..nq {
                let x = &$queries[q * dim..(q + 1) * dim];
                $out[r * nq + q] = $q8.scale[j] * $i8(&$q8.vals[j * dim..(j + 1) * dim], x);
            }
        }
    }};
}

fn atom_block(atoms: &Atoms, dim: usize, start: usize, queries: &[f32], nq: usize, out: &mut [f32]) {
    atom_loop!(atoms, dim, start, queries, nq, out, dot_f32, dot_bf16)
}

/// AVX2 + FMA dot products: four independent 8-lane accumulators (hides the FMA latency); bfloat16 widened to
/// float32 by a zero-extend and a 16-bit shift. The sum order differs from the scalar loop (float rounding only).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Atoms;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// `pub unsafe fn $name(row: &[$t], q: &[f32]) -> f32`: `$p => $load` loads 8 row values at pointer $p as
    /// float32 lanes, `$v => $one` widens one value (expressions, not closures: they compile with AVX2).
    macro_rules! dot {
        ($name:ident, $t:ty, $p:ident => $load:expr, $v:ident => $one:expr) => {
            #[target_feature(enable = "avx2,fma")]
            pub unsafe fn $name(row: &[$t], q: &[f32]) -> f32 {
                let n = row.len().min(q.len());
                let (r, x) = (row.as_ptr(), q.as_ptr());
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut i = 0;
                while i + 32 <= n {
                    for (a, acc) in acc.iter_mut().enumerate() {
                        let o = i + 8 * a;
                        let $p = r.add(o);
                        *acc = _mm256_fmadd_ps($load, _mm256_loadu_ps(x.add(o)), *acc);
                    }
                    i += 32;
                }
                let mut s = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
                while i < n {
                    let $v = *r.add(i);
                    s += $one * *x.add(i);
                    i += 1;
                }
                s
            }
        };
    }

    dot!(dot_f32, f32, p => _mm256_loadu_ps(p), v => v);
    dot!(dot_bf16, u16,
         p => _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)), 16)),
         v => super::widen_bf16(v));

    dot!(dot_i8, i8,
         p => _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))),
         v => v as f32);

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn atom_block(atoms: &Atoms, dim: usize, start: usize, queries: &[f32], nq: usize, out: &mut [f32]) {
        atom_loop!(atoms, dim, start, queries, nq, out, dot_f32, dot_bf16)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q8_block(q8: &super::Q8, dim: usize, start: usize, queries: &[f32], nq: usize, out: &mut [f32]) {
        q8_loop!(q8, dim, start, queries, nq, out, dot_i8)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_atom(atoms: &Atoms, dim: usize, j: usize, q: &[f32]) -> f32 {
        match atoms {
            Atoms::F32(v) => dot_f32(&v[j * dim..(j + 1) * dim], q),
            Atoms::Bf16(v) => dot_bf16(&v[j * dim..(j + 1) * dim], q),
        }
    }
}

fn dot_i8(row: &[i8], q: &[f32]) -> f32 {
    dot_by(row, q, |v| v as f32)
}

fn q8_block(q8: &Q8, dim: usize, start: usize, queries: &[f32], nq: usize, out: &mut [f32]) {
    q8_loop!(q8, dim, start, queries, nq, out, dot_i8)
}

fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The exact logit of atom j (the same dot product as the atom pass).
fn dot_atom_best(atoms: &Atoms, dim: usize, j: usize, q: &[f32], fast: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if fast {
            // SAFETY: `fast` is avx2_fma(): the CPU has the features the function is compiled for
            return unsafe { avx2::dot_atom(atoms, dim, j, q) };
        }
    }
    let _ = fast;
    match atoms {
        Atoms::F32(v) => dot_f32(&v[j * dim..(j + 1) * dim], q),
        Atoms::Bf16(v) => dot_bf16(&v[j * dim..(j + 1) * dim], q),
    }
}

fn q8_block_best(q8: &Q8, dim: usize, start: usize, queries: &[f32], nq: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2_fma() {
            // SAFETY: the CPU has the features the function is compiled for (checked just above)
            return unsafe { avx2::q8_block(q8, dim, start, queries, nq, out) };
        }
    }
    q8_block(q8, dim, start, queries, nq, out)
}

fn atom_block_best(atoms: &Atoms, dim: usize, start: usize, queries: &[f32], nq: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for (checked just above)
            return unsafe { avx2::atom_block(atoms, dim, start, queries, nq, out) };
        }
    }
    atom_block(atoms, dim, start, queries, nq, out)
}

/// Scores of combined rows [start, start + len) against the atom logits lt (n_atoms x nq, query-minor); keeps
/// (query, row, score) where score >= floor[query].
fn row_block(f: &Factored, lt: &[f32], nq: usize, floor: &[f32], start: usize, end: usize) -> Vec<(u32, u32, f32)> {
    let mut keep = Vec::new();
    let bias = f.bias.as_deref().map(|b| &b[f.n_base..]);
    if nq == 1 {
        let (fl, mut lo) = (floor[0], f.indptr[start] as usize);
        for t in start..end {
            let hi = f.indptr[t + 1] as usize;
            let mut s = 0f32;
            for (&c, &j) in f.data[lo..hi].iter().zip(&f.indices[lo..hi]) {
                s += c * lt[j as usize];
            }
            lo = hi;
            let s = s + bias.map_or(0.0, |b| b[t]);
            if s >= fl {
                keep.push((0, t as u32, s));
            }
        }
        return keep;
    }
    let mut acc = vec![0f32; nq];
    for t in start..end {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for p in f.indptr[t] as usize..f.indptr[t + 1] as usize {
            let c = f.data[p];
            let col = f.indices[p] as usize * nq;
            for (a, l) in acc.iter_mut().zip(&lt[col..col + nq]) {
                *a += c * *l;
            }
        }
        let b = bias.map_or(0.0, |b| b[t]);
        for q in 0..nq {
            let s = acc[q] + b;
            if s >= floor[q] {
                keep.push((q as u32, t as u32, s));
            }
        }
    }
    keep
}

/// Best first; ties by id (the order tokbench.dynamic.factored uses).
fn best_first(a: &(f32, u64), b: &(f32, u64)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

impl Factored {
    /// atoms: n_atoms x dim, row-major; the CSR (indptr, indices, data) has one row per combined output, with
    /// columns < n_atoms; bias (n_base + rows) or none. Outputs 0..n_base are atoms 0..n_base.
    pub fn new(dim: usize, n_base: usize, atoms: Atoms, indptr: Vec<u64>, indices: Vec<u32>, data: Vec<f32>,
               bias: Option<Vec<f32>>) -> Result<Self, String> {
        let len = match &atoms {
            Atoms::F32(v) => v.len(),
            Atoms::Bf16(v) => v.len(),
        };
        if dim == 0 || len % dim != 0 {
            return Err(format!("atoms: {len} values are not rows of {dim}"));
        }
        let n_atoms = len / dim;
        if n_base == 0 || n_base > n_atoms {
            return Err(format!("n_base {n_base} must be in 1..={n_atoms} (the atom rows)"));
        }
        if indptr.is_empty() || indptr[0] != 0 || indptr.windows(2).any(|w| w[0] > w[1])
            || *indptr.last().unwrap() as usize != indices.len() || indices.len() != data.len() {
            return Err("coefficients: indptr must start at 0, never decrease and end at len(indices) == len(data)".into());
        }
        if let Some(&bad) = indices.iter().find(|&&c| c as usize >= n_atoms) {
            return Err(format!("coefficients: column {bad} is not an atom (0..{n_atoms})"));
        }
        let rows = indptr.len() - 1;
        if u32::try_from(rows).is_err() {
            return Err(format!("{rows} combined rows: at most 2^32 - 1"));
        }
        if let Some(b) = &bias {
            if b.len() != n_base + rows {
                return Err(format!("bias: {} values for {} outputs", b.len(), n_base + rows));
            }
        }
        let convex = rows > 0
            && (0..rows).all(|t| {
                let w = &data[indptr[t] as usize..indptr[t + 1] as usize];
                w.iter().all(|&c| c >= 0.0) && (w.iter().map(|&c| c as f64).sum::<f64>() - 1.0).abs() <= 1e-4
            });
        let postings = if convex { Postings::new(n_atoms, &indptr, &indices, &data) } else { None };
        let bias_max = bias.as_ref().map_or(0.0, |b| b[n_base..].iter().copied().fold(0.0, f32::max));
        Ok(Factored { dim, n_atoms, n_base, atoms, indptr, indices, data, bias, postings, bias_max, prune: 4, q8: None })
    }

    /// Turn the int8 prefilter on or off. On: a query's atom logits are first taken from int8 copies of the atoms
    /// (a quarter of the float32 bytes, half of bfloat16's) with a bound on their error; the k-th best lower bound
    /// among the base rows is the floor, and only the base rows and combined rows whose upper bound reaches it are
    /// rescored with the exact atoms. The result is the same top-k as without it (same sums, same ties).
    pub fn set_prefilter(&mut self, on: bool) {
        if !on {
            self.q8 = None;
            return;
        }
        let (dim, n) = (self.dim, self.n_atoms);
        let mut vals = big_vec(n * dim, 0i8);
        let (mut scale, mut err) = (vec![0f32; n], vec![0f32; n]);
        // float32 rounding of a dot product of length dim, for either pass: at most dim * 2^-24 * sum |a_i h_i|
        // <= dim * 2^-24 * ||a|| ||h|| each; doubled, and doubled again for safety
        let gamma = 4.0 * dim as f64 * (2f64).powi(-24);
        for j in 0..n {
            let row: Vec<f64> = (0..dim).map(|i| self.atom_value(j, i) as f64).collect();
            let amax = row.iter().fold(0f64, |m, v| m.max(v.abs()));
            let s = if amax > 0.0 { (amax / 127.0) as f32 } else { 1.0 };
            let (mut r2, mut a2) = (0f64, 0f64);
            for (i, &v) in row.iter().enumerate() {
                let qv = (v / s as f64).round().clamp(-127.0, 127.0);
                vals[j * dim + i] = qv as i8;
                let d = v - qv * s as f64;
                r2 += d * d;
                a2 += v * v;
            }
            scale[j] = s;
            err[j] = ((r2.sqrt() + gamma * (a2.sqrt() + 127.0 * s as f64 * (dim as f64).sqrt())) * 1.001 + 1e-30) as f32;
        }
        self.q8 = Some(Q8 { vals, scale, err });
    }

    fn atom_value(&self, j: usize, i: usize) -> f32 {
        match &self.atoms {
            Atoms::F32(v) => v[j * self.dim + i],
            Atoms::Bf16(v) => widen_bf16(v[j * self.dim + i]),
        }
    }

    /// The hot atoms of a query, for pruning: those with `is_hot(j, floor - largest bias)` (their logit reaches the
    /// bound: only convex rows holding one can reach floor), ascending, and their bitset. None when pruning does
    /// not apply (rows not all convex, prune 0, no finite floor) or the rows to visit reach rows / prune.
    fn hot_atoms(&self, floor: f32, mut is_hot: impl FnMut(usize, f32) -> bool) -> Option<(&Postings, Vec<usize>, Vec<u64>)> {
        let p = self.postings.as_ref()?;
        if !floor.is_finite() || self.prune == 0 {
            return None;
        }
        let bound = floor - self.bias_max;
        let hot: Vec<usize> = (0..self.n_atoms).filter(|&j| is_hot(j, bound)).collect();
        let visits: u64 = hot.iter().map(|&j| p.count[j] as u64).sum();
        if visits as usize * self.prune as usize >= self.indptr.len() - 1 {
            return None;
        }
        let mut bits = vec![0u64; self.n_atoms.div_ceil(64)];
        for &j in &hot {
            bits[j / 64] |= 1 << (j % 64);
        }
        Some((p, hot, bits))
    }

    /// Combined rows that can reach `floor` for query q (the rows holding a hot atom), scored; None when pruning
    /// does not apply (hot_atoms).
    fn pruned(&self, lt: &[f32], nq: usize, q: usize, floor: f32) -> Option<Vec<(u32, u32, f32)>> {
        let (p, hot, bits) = self.hot_atoms(floor, |j, bound| lt[j * nq + q] >= bound)?;
        let bias = self.bias.as_deref().map(|b| &b[self.n_base..]);
        Some(p.walk(&hot, &bits, |t, _, pairs| {
            let s = pairs_sum(pairs, |j| lt[j * nq + q]) + bias.map_or(0.0, |b| b[t]);
            (s >= floor).then_some((q as u32, t as u32, s))
        }))
    }

    /// topk with the int8 prefilter (set_prefilter): approximate atom logits lt ~ h.a_j within e_j = err_j ||h||.
    fn topk_prefiltered(&self, q8: &Q8, queries: &[f32], nq: usize, k: usize) -> (Vec<u64>, Vec<f32>) {
        let dim = self.dim;
        let mut lt = vec![0f32; self.n_atoms * nq];
        lt.par_chunks_mut(ATOM_BLOCK * nq).enumerate().for_each(|(b, out)| {
            q8_block_best(q8, dim, b * ATOM_BLOCK, queries, nq, out)
        });
        let per_query: Vec<Vec<(f32, u64)>> = (0..nq)
            .into_par_iter()
            .map(|q| self.query_prefiltered(q8, &lt, nq, q, &queries[q * dim..(q + 1) * dim], k))
            .collect();
        let mut ids = Vec::with_capacity(nq * k);
        let mut scores = Vec::with_capacity(nq * k);
        for c in per_query {
            for &(s, i) in c.iter().take(k) {
                ids.push(i);
                scores.push(s);
            }
        }
        (ids, scores)
    }

    /// One query of topk_prefiltered: the best k (score, id), exact scores, best first.
    ///
    /// 1. F0: the k-th best lower bound (approx - e + bias) among the base rows. Every base row whose upper bound
    ///    reaches F0 gets its exact logit; the k best of those are the k best base rows, so their k-th score is
    ///    the plain kernel's floor F.
    /// 2. Convex rows: the hot atoms are those whose exact logit is >= F - max bias (an atom whose upper bound is
    ///    below that cannot be one; the others get their exact logit), the same set as the plain kernel's, so the
    ///    same rows are visited. Other rows (or too many visits): every row.
    /// 3. A visited row whose upper bound (sum of c * (approx + e), plus rounding) reaches F is rescored exactly
    ///    (exact atom logits computed once, when first needed) and kept when its exact score is >= F.
    fn query_prefiltered(&self, q8: &Q8, lt: &[f32], nq: usize, q: usize, h: &[f32], k: usize) -> Vec<(f32, u64)> {
        let hn = h.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt() as f32;
        let e = |j: usize| q8.err[j] * hn;
        let approx = |j: usize| lt[j * nq + q];
        let bias = self.bias.as_deref();
        let base_bias = |j: usize| bias.map_or(0.0, |b| b[j]);
        let fast = avx2_fma();
        let mut exact = vec![f32::NAN; self.n_atoms];
        let exact_of = |j: usize, exact: &mut [f32]| {
            if exact[j].is_nan() {
                exact[j] = dot_atom_best(&self.atoms, self.dim, j, h, fast);
            }
            exact[j]
        };
        let mut cands: Vec<(f32, u64)> = Vec::new();
        let floor = if self.n_base >= k {
            let mut lower: Vec<f32> = (0..self.n_base).map(|j| approx(j) - e(j) + base_bias(j)).collect();
            let (_, kth, _) = lower.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            let f0 = *kth;
            for j in 0..self.n_base {
                if approx(j) + e(j) + base_bias(j) >= f0 {
                    cands.push((exact_of(j, &mut exact) + base_bias(j), j as u64));
                }
            }
            let mut s: Vec<f32> = cands.iter().map(|c| c.0).collect();
            let (_, kth, _) = s.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            *kth
        } else {
            for j in 0..self.n_base {
                cands.push((exact_of(j, &mut exact) + base_bias(j), j as u64));
            }
            f32::NEG_INFINITY
        };
        cands.retain(|c| c.0 >= floor);
        let rows = self.indptr.len() - 1;
        let row_bias = bias.map(|b| &b[self.n_base..]);
        let hot = self.hot_atoms(floor, |j, bound| approx(j) + e(j) >= bound && exact_of(j, &mut exact) >= bound);
        // a row's upper bound, summed in f64: sum c * approx + |c| * e, plus the plain kernel's own f32 rounding of
        // its sum of m terms (at most (m + 2) 2^-24 sum |c| (|approx| + e)) and of the bias addition
        let ae: Vec<[f32; 2]> = if hot.is_none() { (0..self.n_atoms).map(|j| [approx(j), e(j)]).collect() } else { vec![] };
        let upper = |t: usize, o: Option<usize>| {
            let (mut s, mut err, mut mag, mut m) = (0f64, 0f64, 0f64, 0usize);
            for (c, j) in self.entries(t, o) {
                let [a, ej] = ae[j];
                let (c, a, ej) = (c as f64, a as f64, ej as f64);
                s += c * a;
                err += c.abs() * ej;
                mag += c.abs() * (a.abs() + ej);
                m += 1;
            }
            let b = row_bias.map_or(0.0, |b| b[t]) as f64;
            let gamma = (m + 2) as f64 * (2f64).powi(-24);
            (s + err + gamma * mag + (2f64).powi(-23) * (s.abs() + err + b.abs()) + b) as f32
        };
        // the visited rows are convex (weights >= 0 summing to 1 within 1e-4): a cheaper upper bound, a float32
        // sum of c * (approx + e) in the plain kernel's order plus one allowance per row for the rounding of that
        // sum, of approx + e, of the plain kernel's own sum and of its bias addition (each term at most g, the
        // largest |approx| + e; u = 2^-24, gm = m u / (1 - m u)), doubled for safety
        const U: f64 = 1.0 / 16_777_216.0;
        let (hi, allow) = match &hot {
            Some((p, _, _)) => {
                let hi: Vec<f32> = (0..self.n_atoms).map(|j| approx(j) + e(j)).collect();
                let g = (0..self.n_atoms).map(|j| approx(j).abs() as f64 + e(j) as f64).fold(0f64, f64::max);
                let g = 1.001 * g * (1.0 + 4.0 * U);
                let allow: Vec<f64> = (0..=p.max_len).map(|m| {
                    let gm = m as f64 * U / (1.0 - m as f64 * U);
                    2.0 * g * (2.0 * gm * (1.0 + U) + U + U * (1.0 + gm))
                }).collect();
                (hi, allow)
            }
            None => (vec![], vec![]),
        };
        let convex_upper = |t: usize, pairs: &[u32]| {
            let b = row_bias.map_or(0.0, |b| b[t]) as f64;
            pairs_sum(pairs, |j| hi[j]) as f64 + b + allow[pairs.len() / 2] + 2.0 * U * b.abs()
        };
        // (read-only, so split across threads like the plain kernel's row pass)
        let survivors: Vec<(usize, Option<usize>)> = match &hot {
            Some((p, hot, bits)) => {
                p.walk(hot, bits, |t, o, pairs| (convex_upper(t, pairs) >= floor as f64).then_some((t, Some(o))))
            }
            None => (0..rows).into_par_iter().with_min_len(ROW_BLOCK).filter(|&t| upper(t, None) >= floor)
                .map(|t| (t, None)).collect(),
        };
        // the exact logits the survivors need, computed once each (in parallel), then the survivors rescored
        let mut need = vec![0u64; self.n_atoms.div_ceil(64)];
        for &(t, o) in &survivors {
            for (_, j) in self.entries(t, o) {
                if exact[j].is_nan() {
                    need[j / 64] |= 1 << (j % 64);
                }
            }
        }
        let todo: Vec<usize> = need.iter().enumerate()
            .flat_map(|(w, &bits)| (0..64).filter(move |b| bits >> b & 1 == 1).map(move |b| w * 64 + b))
            .collect();
        let vals: Vec<f32> = todo.par_iter().with_min_len(256)
            .map(|&j| dot_atom_best(&self.atoms, self.dim, j, h, fast)).collect();
        for (&j, v) in todo.iter().zip(vals) {
            exact[j] = v;
        }
        let exact = &exact;
        let kept: Vec<(f32, u64)> = survivors.par_chunks(ROW_BLOCK / 4).flat_map_iter(|c| {
            c.iter().filter_map(|&(t, o)| {
                let mut s = 0f32;
                for (c, j) in self.entries(t, o) {
                    s += c * exact[j];
                }
                let s = s + row_bias.map_or(0.0, |b| b[t]);
                (s >= floor).then_some((s, self.n_base as u64 + t as u64))
            }).collect::<Vec<_>>()
        }).collect();
        cands.extend(kept);
        cands.sort_unstable_by(best_first);
        cands.truncate(k);
        cands
    }

    /// The (weight, column) entries of combined row t, in CSR order: from its record at offset o of the postings,
    /// or from the CSR (o None). The same values in the same order either way.
    fn entries(&self, t: usize, o: Option<usize>) -> impl Iterator<Item = (f32, usize)> + '_ {
        let inline = o.map(|o| {
            let r = &self.postings.as_ref().expect("a record offset comes from the postings").recs;
            &r[o + 2..o + 2 + 2 * r[o + 1] as usize]
        });
        let csr = if o.is_none() { self.indptr[t] as usize..self.indptr[t + 1] as usize } else { 0..0 };
        inline.into_iter().flat_map(|p| p.chunks_exact(2).map(|x| (f32::from_bits(x[1]), x[0] as usize)))
            .chain(csr.map(move |p| (self.data[p], self.indices[p] as usize)))
    }

    /// Bytes the kernel holds: atoms, CSR, bias, postings, the int8 prefilter's copies.
    pub fn nbytes(&self) -> usize {
        let atoms = match &self.atoms {
            Atoms::F32(v) => 4 * v.len(),
            Atoms::Bf16(v) => 2 * v.len(),
        };
        let q8 = self.q8.as_ref().map_or(0, |q| q.vals.len() + 4 * (q.scale.len() + q.err.len()));
        atoms + 8 * self.indptr.len() + 4 * (self.indices.len() + self.data.len())
            + 4 * self.bias.as_ref().map_or(0, |b| b.len()) + self.postings.as_ref().map_or(0, |p| p.nbytes()) + q8
    }

    pub fn n_outputs(&self) -> usize {
        self.n_base + self.indptr.len() - 1
    }

    /// Atom logits of nq queries (row-major nq x dim): n_atoms x nq, query-minor (runs in the current pool).
    pub fn atom_logits(&self, queries: &[f32], nq: usize) -> Vec<f32> {
        let mut lt = vec![0f32; self.n_atoms * nq];
        lt.par_chunks_mut(ATOM_BLOCK * nq).enumerate().for_each(|(b, out)| {
            atom_block_best(&self.atoms, self.dim, b * ATOM_BLOCK, queries, nq, out)
        });
        lt
    }

    /// Top-k ids and scores (nq x k each, best first, ties by id) of nq queries (row-major nq x dim).
    pub fn topk(&self, queries: &[f32], nq: usize, k: usize) -> Result<(Vec<u64>, Vec<f32>), String> {
        if nq == 0 || queries.len() != nq * self.dim {
            return Err(format!("queries: {} values are not {nq} rows of {}", queries.len(), self.dim));
        }
        if k == 0 || k > self.n_outputs() {
            return Err(format!("k must be in 1..={}", self.n_outputs()));
        }
        if let Some(q8) = &self.q8 {
            return Ok(self.topk_prefiltered(q8, queries, nq, k));
        }
        let lt = self.atom_logits(queries, nq);
        // per query: the k best base rows, and the floor (their k-th score; -inf when k > n_base)
        let mut cands: Vec<Vec<(f32, u64)>> = (0..nq)
            .into_par_iter()
            .map(|q| {
                let mut base: Vec<(f32, u64)> = (0..self.n_base)
                    .map(|j| (lt[j * nq + q] + self.bias.as_ref().map_or(0.0, |b| b[j]), j as u64))
                    .collect();
                if base.len() > k {
                    base.select_nth_unstable_by(k - 1, best_first);
                    base.truncate(k);
                }
                base
            })
            .collect();
        let floor: Vec<f32> = cands
            .iter()
            .map(|c| if c.len() == k { c.iter().map(|x| x.0).fold(f32::INFINITY, f32::min) } else { f32::NEG_INFINITY })
            .collect();
        let rows = self.indptr.len() - 1;
        // pruned per query when every query allows it, else one pass over all rows for the whole batch
        let pruned: Option<Vec<Vec<(u32, u32, f32)>>> =
            (0..nq).into_par_iter().map(|q| self.pruned(&lt, nq, q, floor[q])).collect();
        let kept: Vec<Vec<(u32, u32, f32)>> = match pruned {
            Some(p) => p,
            None => (0..rows.div_ceil(ROW_BLOCK))
                .into_par_iter()
                .map(|b| row_block(self, &lt, nq, &floor, b * ROW_BLOCK, ((b + 1) * ROW_BLOCK).min(rows)))
                .collect(),
        };
        for (q, t, s) in kept.into_iter().flatten() {
            cands[q as usize].push((s, self.n_base as u64 + t as u64));
        }
        let mut ids = Vec::with_capacity(nq * k);
        let mut scores = Vec::with_capacity(nq * k);
        for mut c in cands {
            c.sort_unstable_by(best_first);
            for &(s, i) in c.iter().take(k) {
                ids.push(i);
                scores.push(s);
            }
        }
        Ok((ids, scores))
    }
}

/// Python binding (thin: bytes in, bytes out, GIL released, the crate's bounded thread pools).
#[cfg(feature = "python")]
pub mod py {
    use super::{Atoms, Factored};
    use pyo3::exceptions::PyValueError;
    use pyo3::prelude::*;
    use pyo3::pybacked::PyBackedBytes;
    use pyo3::types::PyBytes;

    fn words<const N: usize>(b: &[u8], what: &str) -> PyResult<Vec<[u8; N]>> {
        if b.len() % N != 0 {
            return Err(PyValueError::new_err(format!("{what}: {} bytes are not {N}-byte values", b.len())));
        }
        Ok(b.chunks_exact(N).map(|c| c.try_into().unwrap()).collect())
    }

    fn f32s(b: &[u8], what: &str) -> PyResult<Vec<f32>> {
        Ok(words::<4>(b, what)?.into_iter().map(f32::from_le_bytes).collect())
    }

    /// Exact top-k over base rows plus combined rows (little-endian float32 / bfloat16 / uint bytes in).
    #[pyclass(frozen, module = "tokbench._core")]
    pub struct FactoredTopk {
        inner: Factored,
    }

    #[pymethods]
    impl FactoredTopk {
        #[new]
        #[pyo3(signature = (atoms, dim, n_base, bf16, indptr, indices, data, bias=None, prune=4, prefilter=false))]
        #[allow(clippy::too_many_arguments)]
        fn new(py: Python<'_>, atoms: PyBackedBytes, dim: usize, n_base: usize, bf16: bool, indptr: PyBackedBytes,
               indices: PyBackedBytes, data: PyBackedBytes, bias: Option<PyBackedBytes>, prune: u32,
               prefilter: bool) -> PyResult<Self> {
            let inner = py.allow_threads(|| -> PyResult<Factored> {
                let atoms = if bf16 {
                    let w = words::<2>(&atoms, "atoms")?;
                    let mut v = super::big_vec(w.len(), 0u16);
                    v.iter_mut().zip(w).for_each(|(v, w)| *v = u16::from_le_bytes(w));
                    Atoms::Bf16(v)
                } else {
                    let w = f32s(&atoms, "atoms")?;
                    let mut v = super::big_vec(w.len(), 0f32);
                    v.copy_from_slice(&w);
                    Atoms::F32(v)
                };
                let indptr = words::<8>(&indptr, "indptr")?.into_iter().map(u64::from_le_bytes).collect();
                let indices = words::<4>(&indices, "indices")?.into_iter().map(u32::from_le_bytes).collect();
                let bias = bias.as_deref().map(|b| f32s(b, "bias")).transpose()?;
                let mut f = Factored::new(dim, n_base, atoms, indptr, indices, f32s(&data, "data")?, bias)
                    .map_err(PyValueError::new_err)?;
                f.prune = prune;
                f.set_prefilter(prefilter);
                Ok(f)
            })?;
            Ok(FactoredTopk { inner })
        }

        /// (ids as uint64 bytes, scores as float32 bytes), nq x k each, best first.
        fn topk<'py>(&self, py: Python<'py>, queries: PyBackedBytes, nq: usize, k: usize, num_threads: i64)
                     -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
            let threads = crate::pyargs::threads(num_threads)?;
            let (ids, scores) = py.allow_threads(|| -> PyResult<_> {
                let q = f32s(&queries, "queries")?;
                // one hop onto a pool worker for the whole call (rayon::scope): the parallel sections inside then
                // start on a running worker instead of each waking the pool from this thread
                crate::pool::with_pool(threads, || rayon::scope(|_| self.inner.topk(&q, nq, k)))
                    .map_err(PyValueError::new_err)?
                    .map_err(PyValueError::new_err)
            })?;
            let ib: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
            let sb: Vec<u8> = scores.iter().flat_map(|s| s.to_le_bytes()).collect();
            Ok((PyBytes::new_bound(py, &ib), PyBytes::new_bound(py, &sb)))
        }

        /// Bytes the kernel holds (atoms, CSR, bias, postings, int8 copies).
        fn nbytes(&self) -> usize {
            self.inner.nbytes()
        }
    }

    pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add_class::<FactoredTopk>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    #[test]
    fn topk_equals_the_dense_scores() {
        let (dim, n_base, rows, nq, k) = (37, 300, 2000, 3, 10);
        let mut seed = 7;
        let atoms: Vec<f32> = (0..(n_base + 1) * dim).map(|_| lcg(&mut seed)).collect();
        let mut indptr = vec![0u64];
        let (mut indices, mut data) = (vec![], vec![]);
        for t in 0..rows {
            for j in 0..(2 + t % 3) {
                indices.push(((t * 7 + j * 13) % (n_base + 1)) as u32);
                data.push(1.0 / (2 + t % 3) as f32);
            }
            indptr.push(indices.len() as u64);
        }
        let bias: Vec<f32> = (0..n_base + rows).map(|_| lcg(&mut seed)).collect();
        let q: Vec<f32> = (0..nq * dim).map(|_| lcg(&mut seed)).collect();
        // convex rows (pruned by postings) and the same rows scaled by 1.5 (not convex: the full CSR pass)
        let scaled: Vec<f32> = data.iter().map(|c| c * 1.5).collect();
        for (b, data) in [(None, &data), (Some(bias.clone()), &data), (None, &scaled), (Some(bias.clone()), &scaled)] {
            let f = Factored::new(dim, n_base, Atoms::F32(atoms.clone()), indptr.clone(), indices.clone(),
                                  data.clone(), b.clone()).unwrap();
            assert_eq!(f.postings.is_some(), data[0] < 0.6);
            let (_ids, scores) = f.topk(&q, nq, k).unwrap();
            for qi in 0..nq {
                let x = &q[qi * dim..(qi + 1) * dim];
                let l: Vec<f64> = (0..n_base + 1)
                    .map(|j| (0..dim).map(|d| atoms[j * dim + d] as f64 * x[d] as f64).sum())
                    .collect();
                let mut all: Vec<(f64, usize)> = (0..n_base + rows)
                    .map(|o| {
                        let v = if o < n_base { l[o] } else {
                            let t = o - n_base;
                            (indptr[t]..indptr[t + 1]).map(|p| data[p as usize] as f64 * l[indices[p as usize] as usize]).sum()
                        };
                        (v + b.as_ref().map_or(0.0, |b| b[o] as f64), o)
                    })
                    .collect();
                all.sort_by(|a, b| b.0.total_cmp(&a.0));
                for r in 0..k {
                    assert!((scores[qi * k + r] as f64 - all[r].0).abs() < 1e-4, "rank {r}");
                }
            }
        }
        let bf: Vec<u16> = atoms.iter().map(|x| (x.to_bits() >> 16) as u16).collect();
        let f = Factored::new(dim, n_base, Atoms::Bf16(bf), indptr.clone(), indices.clone(), data.clone(), None).unwrap();
        assert_eq!(f.topk(&q, nq, k).unwrap().0.len(), nq * k);
    }

    #[test]
    fn prefilter_gives_the_same_topk() {
        // the int8 prefilter returns exactly what the plain kernel returns: convex and scaled rows, with and
        // without bias, f32 and bf16 atoms, k below and above n_base, with ties (duplicate rows)
        let (dim, n_base, rows, nq) = (45, 200, 3000, 4);
        let mut seed = 11;
        let atoms: Vec<f32> = (0..(n_base + 1) * dim).map(|_| lcg(&mut seed) * if seed % 5 == 0 { 8.0 } else { 1.0 }).collect();
        let mut indptr = vec![0u64];
        let (mut indices, mut data) = (vec![], vec![]);
        for t in 0..rows {
            let n = 1 + t % 4;
            for j in 0..n {
                indices.push(((t / 2 * 31 + j * 17) % (n_base + 1)) as u32);  // rows 2m and 2m+1 alike: ties
                data.push(1.0 / n as f32);
            }
            indptr.push(indices.len() as u64);
        }
        let bias: Vec<f32> = (0..n_base + rows).map(|_| lcg(&mut seed) * 3.0).collect();
        let q: Vec<f32> = (0..nq * dim).map(|_| lcg(&mut seed) * 4.0).collect();
        let scaled: Vec<f32> = data.iter().map(|c| c * -1.5).collect();
        let bf: Vec<u16> = atoms.iter().map(|x| (x.to_bits() >> 16) as u16).collect();
        for bf16 in [false, true] {
            for (b, data) in [(None, &data), (Some(bias.clone()), &data), (None, &scaled), (Some(bias.clone()), &scaled)] {
                let mk = || {
                    let a = if bf16 { Atoms::Bf16(bf.clone()) } else { Atoms::F32(atoms.clone()) };
                    Factored::new(dim, n_base, a, indptr.clone(), indices.clone(), data.clone(), b.clone()).unwrap()
                };
                let plain = mk();
                let mut pre = mk();
                pre.set_prefilter(true);
                for k in [1, 10, 50, 250] {
                    for nq in [1, nq] {
                        let x = &q[..nq * dim];
                        assert_eq!(plain.topk(x, nq, k).unwrap(), pre.topk(x, nq, k).unwrap(), "bf16 {bf16} k {k} nq {nq}");
                    }
                }
            }
        }
    }

    #[test]
    fn inline_postings_give_the_full_pass_topk() {
        // the walk over the inline postings returns exactly what one pass over all rows returns (same ids, same
        // float32 scores, ties by id), with rows that name an atom twice, columns out of order, identical rows
        // (exact ties) and long rows; and visits every row exactly once
        let (dim, n_base, rows, nq) = (24, 150, 4000, 3);
        let mut seed = 5;
        let atoms: Vec<f32> = (0..(n_base + 1) * dim).map(|_| lcg(&mut seed)).collect();
        let mut indptr = vec![0u64];
        let (mut indices, mut data) = (vec![], vec![]);
        for t in 0..rows {
            let m = if t % 199 == 0 { 24 } else { 1 + t % 5 };
            for j in 0..m {
                let col = if j == 2 { indices[indices.len() - 2] } else { ((t / 3 * 29 + j * 53) % (n_base + 1)) as u32 };
                indices.push(col);  // j == 2 repeats the first column; rows 3m, 3m+1, 3m+2 share columns
                data.push(1.0 / m as f32);
            }
            indptr.push(indices.len() as u64);
        }
        let bias: Vec<f32> = (0..n_base + rows).map(|_| lcg(&mut seed) * 2.0).collect();
        let q: Vec<f32> = (0..nq * dim).map(|_| lcg(&mut seed) * 3.0).collect();
        for b in [None, Some(bias)] {
            let mk = |prune: u32, pre: bool| {
                let mut f = Factored::new(dim, n_base, Atoms::F32(atoms.clone()), indptr.clone(), indices.clone(),
                                          data.clone(), b.clone()).unwrap();
                f.prune = prune;
                f.set_prefilter(pre);
                f
            };
            let full = mk(0, false);
            let p = mk(1, false);
            let post = p.postings.as_ref().unwrap();
            let all: Vec<usize> = (0..n_base + 1).collect();
            let mut seen = p.postings.as_ref().unwrap().walk(&all, &vec![u64::MAX; (n_base + 1).div_ceil(64)], |t, _, _| Some(t));
            seen.sort_unstable();
            assert_eq!(seen, (0..rows).collect::<Vec<_>>(), "every row once");
            assert!(post.seg.len() > 1);
            let mut pruned_some = false;
            for k in [1, 5, 20, 100] {
                for nq in [1, nq] {
                    let x = &q[..nq * dim];
                    let want = full.topk(x, nq, k).unwrap();
                    for f in [&p, &mk(4, false), &mk(1, true), &mk(0, true)] {
                        assert_eq!(f.topk(x, nq, k).unwrap(), want, "k {k} nq {nq} bias {}", b.is_some());
                    }
                    let lt = p.atom_logits(x, nq);
                    let floor = want.1[k - 1];
                    pruned_some |= p.pruned(&lt, nq, 0, floor).is_some();
                    for qi in 0..nq {  // ties by id: equal scores come in ascending id order
                        for r in 1..k {
                            let (a, c) = (qi * k + r - 1, qi * k + r);
                            assert!(want.1[a] > want.1[c] || want.1[a] == want.1[c] && want.0[a] < want.0[c]);
                        }
                    }
                }
            }
            assert!(pruned_some, "the walk was taken");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_dots_equal_the_scalar_loop() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            return;
        }
        let mut seed = 3;
        for n in [1usize, 7, 31, 32, 33, 576, 1000] {
            let r: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let q: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let b: Vec<u16> = r.iter().map(|x| (x.to_bits() >> 16) as u16).collect();
            // SAFETY: features checked above
            let (f, h) = unsafe { (avx2::dot_f32(&r, &q), avx2::dot_bf16(&b, &q)) };
            assert!((f - dot_f32(&r, &q)).abs() < 1e-4, "f32 n={n}");
            assert!((h - dot_bf16(&b, &q)).abs() < 1e-4, "bf16 n={n}");
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let a = || Atoms::F32(vec![0.0; 8]);
        assert!(Factored::new(4, 2, a(), vec![0, 1], vec![2], vec![1.0], None).unwrap_err().contains("column 2"));
        assert!(Factored::new(4, 3, a(), vec![0], vec![], vec![], None).unwrap_err().contains("n_base"));
        assert!(Factored::new(4, 2, a(), vec![0, 2], vec![0], vec![1.0], None).unwrap_err().contains("indptr"));
        assert!(Factored::new(3, 2, a(), vec![0], vec![], vec![], None).unwrap_err().contains("rows of 3"));
        assert!(Factored::new(4, 2, a(), vec![0], vec![], vec![], Some(vec![0.0])).unwrap_err().contains("bias"));
        let f = Factored::new(4, 2, a(), vec![0], vec![], vec![], None).unwrap();
        assert!(f.topk(&[0.0; 3], 1, 1).unwrap_err().contains("queries"));
        assert!(f.topk(&[0.0; 4], 1, 3).unwrap_err().contains("k must be"));
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    /// Per-part timings of batch-1 queries on real data (little-endian dumps in $TOKBENCH_FACTORED_REAL:
    /// atoms.bin bf16, indptr.bin u64, indices.bin u32, data.bin f32, queries.bin f32), each query after a flush of
    /// the caches (as in benchmarks/bench_ann.py, where the exact matmul runs between the factored calls).
    #[test]
    #[ignore]
    fn time_real() {
        let Ok(dir) = std::env::var("TOKBENCH_FACTORED_REAL") else { return };
        let read = |n: &str| std::fs::read(format!("{dir}/{n}")).unwrap();
        let raw: Vec<u16> = read("atoms.bin").chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        let mut atoms = big_vec(raw.len(), 0u16);  // as the Python binding stores them
        atoms.copy_from_slice(&raw);
        let indptr: Vec<u64> = read("indptr.bin").chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        let indices: Vec<u32> = read("indices.bin").chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
        let data: Vec<f32> = read("data.bin").chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let queries: Vec<f32> = read("queries.bin").chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let dim = 576;
        let mut f = Factored::new(dim, atoms.len() / dim, Atoms::Bf16(atoms), indptr, indices, data, None).unwrap();
        f.set_prefilter(true);
        let flush: Vec<u64> = (0..600_000_000 / 8).collect();
        let mut sink = 0u64;
        let med = |mut v: Vec<f64>| { v.sort_by(|a, b| a.total_cmp(b)); v[v.len() / 2] * 1e3 };
        let (mut tq8, mut tbf, mut tplain, mut tpre, mut tstream) = (vec![], vec![], vec![], vec![], vec![]);
        let mut stream = big_vec(28_000_000 / 8, 0u64);
        stream.iter_mut().enumerate().for_each(|(i, x)| *x = i as u64);
        let q8 = f.q8.take().unwrap();
        fn cold(flush: &[u64], sink: &mut u64, tv: &mut Vec<f64>, g: impl FnOnce()) {
            *sink = sink.wrapping_add(flush.iter().sum::<u64>());
            let t = std::time::Instant::now();
            g();
            tv.push(t.elapsed().as_secs_f64());
        }
        for r in 0..40 {
            let q = &queries[(r % 256) * dim..(r % 256 + 1) * dim];
            cold(&flush, &mut sink, &mut tq8, || {
                let mut lt = vec![0f32; f.n_atoms];
                lt.par_chunks_mut(ATOM_BLOCK).enumerate().for_each(|(b, out)| q8_block_best(&q8, dim, b * ATOM_BLOCK, q, 1, out));
                std::hint::black_box(lt);
            });
            cold(&flush, &mut sink, &mut tstream, || { std::hint::black_box(stream.par_chunks(1 << 16).map(|c| c.iter().sum::<u64>()).sum::<u64>()); });
            cold(&flush, &mut sink, &mut tbf, || { std::hint::black_box(f.atom_logits(q, 1)); });
            cold(&flush, &mut sink, &mut tplain, || { std::hint::black_box(f.topk(q, 1, 20).unwrap()); });
            f.q8 = Some(q8.clone());
            cold(&flush, &mut sink, &mut tpre, || { std::hint::black_box(f.topk(q, 1, 20).unwrap()); });
            f.q8 = None;
        }
        eprintln!("cold batch-1 medians ms: int8 atom pass {:.2}, bf16 atom pass {:.2}, plain topk {:.2}, int8 topk {:.2}, \
                   28 MB read {:.2} (threads {}, {sink})", med(tq8), med(tbf), med(tplain), med(tpre), med(tstream), rayon::current_num_threads());
    }
    #[test]
    #[ignore]
    fn time_parts() {
        let (dim, n_base, rows) = (576, 49152, 950_000);
        let atoms: Vec<u16> = (0..n_base * dim).map(|i| ((i * 2654435761usize) >> 13) as u16 & 0x3fff | 0x3c00).collect();
        let mut indptr = vec![0u64];
        let (mut indices, mut data) = (vec![], vec![]);
        for t in 0..rows {
            for j in 0..(2 + t % 4) {
                indices.push(((t * 7919 + j * 104729) % n_base) as u32);
                data.push(0.3);
            }
            indptr.push(indices.len() as u64);
        }
        let f = Factored::new(dim, n_base, Atoms::Bf16(atoms), indptr, indices, data, None).unwrap();
        let q: Vec<f32> = (0..dim).map(|i| (i as f32).sin()).collect();
        for _ in 0..3 {
            let t0 = std::time::Instant::now();
            let lt = f.atom_logits(&q, 1);
            let t1 = t0.elapsed();
            let floor = vec![f32::INFINITY];
            let t2 = std::time::Instant::now();
            let kept: usize = (0..rows.div_ceil(ROW_BLOCK)).into_par_iter()
                .map(|b| row_block(&f, &lt, 1, &floor, b * ROW_BLOCK, ((b + 1) * ROW_BLOCK).min(rows)).len()).sum();
            let t3 = t2.elapsed();
            let t4 = std::time::Instant::now();
            let _ = f.topk(&q, 1, 20).unwrap();
            eprintln!("atoms {:?} rows {:?} ({kept}) topk {:?}", t1, t3, t4.elapsed());
        }
        let mut g = f;
        g.set_prefilter(true);
        let q8 = g.q8.as_ref().unwrap();
        for _ in 0..3 {
            let t0 = std::time::Instant::now();
            let mut lt = vec![0f32; g.n_atoms];
            lt.par_chunks_mut(ATOM_BLOCK).enumerate().for_each(|(b, out)| q8_block_best(q8, dim, b * ATOM_BLOCK, &q, 1, out));
            let t1 = t0.elapsed();
            let t4 = std::time::Instant::now();
            let _ = g.topk(&q, 1, 20).unwrap();
            eprintln!("int8 atoms {:?} topk {:?}", t1, t4.elapsed());
        }
    }
}
