//! Per-stage timing of the exact encoder on one text file (documents separated by a NUL byte).
//!
//!     cargo run --release --no-default-features --example encode_profile -- RANKS.tiktoken PATTERN DOCS.txt [RUNS [ENGINE]]
//!
//! ENGINE: the pre-tokenizer engine (auto, hand, fast, fancy; default auto).
//!
//! Stages: pre-tokenizer alone; pre-tokenizer + whole-piece lookup; full encode_ordinary.
//! Times are the best of RUNS in thread CPU seconds (PROFILE_WALL=1: wall seconds).
use std::time::Instant;
use _core::bpe::encoder::Encoder;
use _core::bpe::model::BpeModel;
use _core::bpe::pretokenize::Splitter;

fn b64(s: &[u8]) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let s: Vec<u8> = s.iter().copied().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for ch in s.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in ch.iter().enumerate() {
            n |= (val(c) as u32) << (18 - 6 * i);
        }
        for i in 0..ch.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// CPU seconds of the calling thread (Linux CLOCK_THREAD_CPUTIME_ID): on a shared machine the
/// time this thread waited for a core is not counted, unlike the wall clock.
fn thread_cpu() -> f64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid pointer it is given.
    unsafe { clock_gettime(3, &mut ts) };
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}

/// Best of `runs` timings of `f`, in thread CPU seconds (wall seconds with PROFILE_WALL=1).
fn best<F: FnMut() -> usize>(runs: usize, mut f: F) -> (f64, usize) {
    let wall = std::env::var_os("PROFILE_WALL").is_some();
    let mut t = f64::MAX;
    let mut r = 0;
    for _ in 0..runs {
        let (s, c) = (Instant::now(), thread_cpu());
        r = f();
        t = t.min(if wall { s.elapsed().as_secs_f64() } else { thread_cpu() - c });
    }
    (t, r)
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let ranks = std::fs::read(&a[1]).unwrap();
    let tokens: Vec<(Vec<u8>, u32)> = ranks
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut it = l.split(|&c| c == b' ');
            let t = b64(it.next().unwrap());
            let r: u32 = std::str::from_utf8(it.next().unwrap()).unwrap().trim().parse().unwrap();
            (t, r)
        })
        .collect();
    let pattern = std::fs::read_to_string(&a[2]).unwrap();
    let text = std::fs::read_to_string(&a[3]).unwrap();
    let docs: Vec<&str> = text.split('\0').collect();
    let mb = text.len() as f64 / 1e6;
    let runs: usize = a.get(4).map_or(5, |s| s.parse().unwrap());
    let engine = a.get(5).map_or("auto", |s| s.as_str());
    let model = BpeModel::from_ranks(&tokens).unwrap();
    let splitter = Splitter::new(Some(pattern.trim_end_matches('\n')), false, false, engine).unwrap();
    let mut cache = splitter.new_cache();
    let (t, n) = best(runs, || {
        let mut n = 0;
        for d in &docs {
            splitter.split(d, &mut cache, &mut |_p| n += 1).unwrap();
        }
        n
    });
    println!("split ({}): {:.1} MB/s, {} pieces", splitter.engine_name(), mb / t, n);
    let (t, hits) = best(runs, || {
        let mut hits = 0;
        for d in &docs {
            splitter.split(d, &mut cache, &mut |p| hits += model.token_id(p.as_bytes()).is_some() as usize).unwrap();
        }
        hits
    });
    println!("split + whole-piece lookup: {:.1} MB/s, {} hits ({:.1}%)", mb / t, hits, 100.0 * hits as f64 / n as f64);
    let enc = Encoder::new(BpeModel::from_ranks(&tokens).unwrap(),
                           Splitter::new(Some(pattern.trim_end_matches('\n')), false, false, engine).unwrap(),
                           &tokens, vec![]).unwrap();
    let (t, ntok) = best(runs, || docs.iter().map(|d| enc.encode_ordinary(d).unwrap().len()).sum());
    println!("encode_ordinary: {:.1} MB/s, {} tokens", mb / t, ntok);
}
