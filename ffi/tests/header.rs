//! `include/wechat_oauth.h` and `include/wechat_oauth_cdef.h` are generated
//! by cbindgen (pinned in Cargo.toml) and committed; this test regenerates
//! both and fails on any difference. `WECHAT_OAUTH_BLESS=1` rewrites them.

use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate(config: cbindgen::Config) -> String {
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir())
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    String::from_utf8(out).unwrap()
}

/// The header for PHP's `FFI::cdef`, which reads no preprocessor lines and
/// no comments: the same declarations, bare.
fn cdef_config(mut config: cbindgen::Config) -> cbindgen::Config {
    config.include_guard = None;
    config.cpp_compat = false;
    config.sys_includes = Vec::new();
    config.no_includes = true;
    config.documentation = false;
    config.autogen_warning = None;
    config
}

/// Evaluates the few conditionals cbindgen emits as a C99 compiler would
/// (no `__cplusplus`, `__STDC_VERSION__` below C23) and drops every
/// preprocessor line. Any other condition fails the test, to be looked at.
fn preprocess_as_c99(text: &str) -> String {
    let mut out = String::new();
    let mut stack: Vec<(bool, bool)> = Vec::new(); // (this branch taken, parent active)
    let active = |stack: &Vec<(bool, bool)>| {
        stack
            .last()
            .map_or(true, |(taken, parent)| *taken && *parent)
    };
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(directive) = trimmed.strip_prefix('#') {
            let directive = directive.split("//").next().unwrap().trim();
            let parent = active(&stack);
            if let Some(cond) = directive.strip_prefix("ifndef ") {
                assert_eq!(cond.trim(), "__cplusplus", "unexpected #ifndef {cond}");
                stack.push((true, parent));
            } else if let Some(cond) = directive.strip_prefix("ifdef ") {
                assert_eq!(cond.trim(), "__cplusplus", "unexpected #ifdef {cond}");
                stack.push((false, parent));
            } else if let Some(cond) = directive.strip_prefix("if ") {
                let known = [
                    "defined(__cplusplus) || __STDC_VERSION__ >= 202311L",
                    "__STDC_VERSION__ >= 202311L",
                ];
                assert!(known.contains(&cond.trim()), "unexpected #if {cond}");
                stack.push((false, parent));
            } else if directive == "else" {
                let (taken, parent) = stack.pop().expect("#else without #if");
                stack.push((!taken, parent));
            } else if directive.starts_with("endif") {
                stack.pop().expect("#endif without #if");
            } else {
                panic!("unexpected directive #{directive}");
            }
            continue;
        }
        if active(&stack) {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(stack.is_empty(), "unbalanced conditionals");
    out
}

fn check(path: &Path, generated: &str) {
    if std::env::var_os("WECHAT_OAUTH_BLESS").is_some() {
        std::fs::write(path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run `WECHAT_OAUTH_BLESS=1 cargo test -p wechat-oauth-ffi --test header` and commit it",
        path.display()
    );
}

#[test]
fn committed_headers_match_the_code() {
    let config = cbindgen::Config::from_file(crate_dir().join("cbindgen.toml")).unwrap();
    let include = crate_dir().join("../include");
    let header = generate(config.clone());
    check(&include.join("wechat_oauth.h"), &header);
    let cdef = preprocess_as_c99(&generate(cdef_config(config)));
    assert!(
        !cdef.lines().any(|l| l.trim_start().starts_with('#')),
        "no preprocessor lines"
    );
    assert!(!cdef.contains("/*") && !cdef.contains("//"), "no comments");
    check(&include.join("wechat_oauth_cdef.h"), &cdef);
}

#[test]
fn every_declared_function_is_prefixed() {
    let header =
        std::fs::read_to_string(crate_dir().join("../include/wechat_oauth_cdef.h")).unwrap();
    let mut functions = 0;
    for line in header.lines() {
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        if let Some(open) = line.find('(') {
            let name = line[..open].trim_end().rsplit([' ', '*']).next().unwrap();
            assert!(name.starts_with("wechat_oauth_"), "{name} in {line:?}");
            functions += 1;
        }
    }
    assert!(functions >= 20, "{functions}");
}

/// The header's enum constants: `WECHAT_OAUTH_…` name → value.
fn header_constants() -> std::collections::HashMap<String, i64> {
    let header = std::fs::read_to_string(crate_dir().join("../include/wechat_oauth.h")).unwrap();
    header
        .lines()
        .filter_map(|line| {
            let (name, value) = line.trim().trim_end_matches(',').split_once(" = ")?;
            name.starts_with("WECHAT_OAUTH_")
                .then(|| Some((name.to_owned(), value.trim().parse().ok()?)))?
        })
        .collect()
}

/// `NAME = N;` constants declared in a binding's source (PHP `const`, Java `static final int`).
fn binding_constants(path: &str) -> Vec<(String, i64)> {
    let source = std::fs::read_to_string(crate_dir().join(path)).unwrap();
    source
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let decl = line
                .strip_prefix("public const ")
                .or_else(|| line.strip_prefix("public static final int "))
                .or_else(|| line.strip_prefix("static final int "))?;
            let (name, value) = decl.trim_end_matches(';').split_once(" = ")?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn the_php_and_java_bindings_use_the_headers_numbers() {
    let header = header_constants();
    assert!(header.len() > 20, "{header:?}");
    let kinds: Vec<(&String, &i64)> = header
        .iter()
        .filter(|(n, _)| n.starts_with("WECHAT_OAUTH_DECISION_KIND_"))
        .collect();
    for binding in [
        "../examples/php/WechatOAuth.php",
        "../examples/java/src/WechatOAuth.java",
    ] {
        let constants = binding_constants(binding);
        for (name, value) in &constants {
            let matches: Vec<&i64> = header
                .iter()
                .filter(|(h, _)| {
                    h.ends_with(&format!("_{name}")) || h.ends_with(&format!("_IDENTITY_{name}"))
                })
                .map(|(_, v)| v)
                .collect();
            assert!(
                matches.contains(&value),
                "{binding}: {name} = {value}, the header says {matches:?}"
            );
        }
        // Every decision kind is known to the binding.
        for (kind, value) in &kinds {
            let short = kind.trim_start_matches("WECHAT_OAUTH_DECISION_KIND_");
            assert!(
                constants.iter().any(|(n, v)| n == short && v == *value),
                "{binding} lacks {short} = {value}"
            );
        }
    }
    // PHP's identity field map.
    let php = std::fs::read_to_string(crate_dir().join("../examples/php/WechatOAuth.php")).unwrap();
    let map = php
        .lines()
        .find(|l| l.contains("IDENTITY_FIELDS = ["))
        .expect("the PHP identity field map");
    for (field, value) in header
        .iter()
        .filter_map(|(n, v)| Some((n.strip_prefix("WECHAT_OAUTH_IDENTITY_FIELD_")?, v)))
    {
        assert!(
            map.contains(&format!("'{}' => {value}", field.to_lowercase())),
            "PHP identity field {field} = {value}: {map}"
        );
    }
}
