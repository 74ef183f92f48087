//! Every committed corpus file of every fuzz target, through the target's check: the fuzzers'
//! findings and seeds stay checked by `cargo test` on stable, without a fuzzer.

#[test]
fn every_corpus_file_passes_its_check() {
    for (target, check) in portico_fuzzcheck::TARGETS {
        let dir = portico_fuzzcheck::corpus_dir(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 3,
            "{target}: only {} corpus files",
            files.len()
        );
        for f in files {
            let data = std::fs::read(&f).expect("a corpus file");
            let run = std::panic::catch_unwind(|| check(&data));
            assert!(run.is_ok(), "{target}: {} fails its check", f.display());
        }
    }
}
