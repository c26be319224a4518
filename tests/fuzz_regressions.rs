//! Replays every saved fuzzing input under `tests/fixtures/fuzz/<target>/`
//! (crashes `scripts/fuzz.sh` copies there, and inputs that once broke a
//! parser) through the same entry point as its cargo-fuzz target. Each must
//! return: a panic fails the test and names the file.

use std::path::Path;

type Target = fn(&[u8]);

#[test]
fn every_saved_fuzz_input_returns_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let targets: [(&str, Target); 3] =
        [("config", freshen::fuzzing::config), ("dockerignore", freshen::fuzzing::dockerignore), ("resolve", freshen::fuzzing::resolve)];
    let mut replayed = 0;
    for (name, target) in targets {
        // Git keeps no empty folders: a target with no saved input has none.
        let Ok(entries) = std::fs::read_dir(root.join(name)) else { continue };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                panic!("{name} panicked on {}", file.display());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no saved inputs under {}", root.display());
}
