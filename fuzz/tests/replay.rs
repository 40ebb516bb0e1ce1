//! Runs every committed input of every fuzz target (`corpus/<target>/`,
//! the seeds, and `regressions/<target>/`, each input that once crashed a
//! target) through the target's body, so a fixed crash stays fixed.

use std::path::Path;

#[test]
fn every_corpus_and_regression_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in wechat_oauth_fuzz::TARGETS {
        let mut seen = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} fails", path.display());
                seen += 1;
            }
        }
        assert!(seen > 0, "{name} has no committed inputs");
    }
}
