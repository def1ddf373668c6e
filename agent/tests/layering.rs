//! The agent's modules stand in layers (lib.rs), and a lower layer never names a higher one: a
//! cycle of imports would tie them into one piece again, which can be neither tested nor changed
//! alone. Read from the sources: any `crate::LAYER` path (in code or in doc links) counts.

use std::path::{Path, PathBuf};

/// Bottom first. Layers of one rank are neighbours: neither may name the other.
const LAYERS: &[(&str, u8)] =
    &[("os", 0), ("config", 1), ("ops", 2), ("link", 3), ("proto", 3), ("daemon", 4), ("cli", 5)];

fn rank(layer: &str) -> Option<u8> {
    LAYERS.iter().find(|(l, _)| *l == layer).map(|(_, r)| *r)
}

/// Every `.rs` file under `dir` (bounded depth: the tree is a few levels deep).
fn sources(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    assert!(depth < 8, "source tree deeper than expected at {}", dir.display());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, depth + 1, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer a file of `src` belongs to: its first path component, without `.rs`.
fn layer_of(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?.as_os_str().to_str()?.to_owned();
    Some(first.trim_end_matches(".rs").to_owned())
}

#[test]
fn no_layer_names_a_higher_or_neighbouring_one() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, 0, &mut files);
    let mut seen = std::collections::BTreeSet::new();
    let mut wrong = Vec::new();
    for file in &files {
        let Some(layer) = layer_of(&src, file) else { continue };
        let Some(own) = rank(&layer) else {
            assert!(layer == "lib" || layer == "main", "{} is in no layer: add it to LAYERS", file.display());
            continue;
        };
        seen.insert(layer.clone());
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for (i, _) in line.match_indices("crate::") {
                let name: String =
                    line[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let Some(other) = rank(&name) else { continue };
                if name != layer && other >= own {
                    wrong.push(format!(
                        "{}:{}: {layer} names {name}: {}",
                        file.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert_eq!(seen.len(), LAYERS.len(), "a layer has no files: {seen:?}");
    assert!(wrong.is_empty(), "imports against the layering:\n{}", wrong.join("\n"));
}
