//! The CSV tokenizer's throughput against the `csv` crate's on one file, ten rounds:
//! `cargo run --release -p importer --example tokenizer_throughput -- data.csv`
//! (`bench/importer/gen.py` writes a suitable `data.csv`). Both must see the same records.

use importer::record::{Record, RecordReader};

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: tokenizer_throughput FILE.csv");
    let data = std::fs::read(path).expect("read the CSV");
    let mbs = |d: std::time::Duration| data.len() as f64 / d.as_secs_f64() / 1e6;
    for _ in 0..10 {
        let t = std::time::Instant::now();
        let mut r = RecordReader::new(&data[..], 1 << 20);
        let mut rec = Record::new();
        let (mut n, mut bytes) = (0, 0);
        while r.read(&mut rec).expect("ours") {
            n += 1;
            bytes += rec.get(rec.len() - 1).len();
        }
        let ours = t.elapsed();
        let t = std::time::Instant::now();
        let mut c = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(&data[..]);
        let mut br = csv::ByteRecord::new();
        let (mut m, mut bytes2) = (0, 0);
        while c.read_byte_record(&mut br).expect("csv crate") {
            m += 1;
            bytes2 += br.get(br.len() - 1).map_or(0, <[u8]>::len);
        }
        let theirs = t.elapsed();
        assert_eq!((n, bytes), (m, bytes2), "the two tokenizers disagree");
        println!(
            "records {n}: ours {:.0} MB/s, csv crate {:.0} MB/s",
            mbs(ours),
            mbs(theirs)
        );
    }
}
