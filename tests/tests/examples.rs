//! The README's host commands and the example configs agree: each host
//! example has its own config whose `public_url` is the port the README
//! starts it on (else WeChat sends the browser back to another host), and
//! every such config loads.

use wechat_e2e::workspace_root;

#[test]
fn each_host_example_has_its_own_config_on_the_port_the_readme_starts_it_on() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut seen = Vec::new();
    for line in readme.lines() {
        let Some(rest) = line.trim().strip_prefix("WECHAT_OAUTH_CONFIG=") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let config = words.next().unwrap();
        let port = words
            .next()
            .and_then(|w| w.strip_prefix("PORT="))
            .unwrap_or_else(|| panic!("no PORT= in {line:?}"));
        let path = root.join(config);
        let loaded = wechat_oauth::Config::load(&path)
            .unwrap_or_else(|e| panic!("{config} does not load: {e}"));
        assert_eq!(
            loaded
                .gateway
                .public_url
                .port()
                .map(|p| p.to_string())
                .as_deref(),
            Some(port),
            "{config}: public_url {} is not the port {port} the README runs it on",
            loaded.gateway.public_url
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("WECHAT_OAUTH_CONFIG={config} PORT={port}")),
            "{config}'s own comment starts it another way"
        );
        seen.push(config.to_owned());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        3,
        "one config per host (C, PHP, Java): {seen:?}"
    );
}

#[test]
fn the_license_file_is_the_one_cargo_toml_names() {
    let root = workspace_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("license = \"Apache-2.0\""));
    let license = std::fs::read_to_string(root.join("LICENSE")).expect("a LICENSE file");
    assert!(license.contains("Apache License") && license.contains("Version 2.0, January 2004"));
}
