//! The documentation is held to the code: the configuration reference must be what the code generates, the REST
//! API's description (`docs/openapi.yaml`) must name exactly the routes the listeners serve and, with the test
//! environment's Python, validate and have its examples answered as it says, and every relative link and anchor of
//! the README and `docs/` must resolve. Each check is also shown to fail on a planted fault.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{TestServer, bundled_models, config_from_flags, temp_dir};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const REGENERATE: &str = "cargo run --release -- docs config > docs/configuration-reference.md";

#[test]
fn the_configuration_reference_is_what_the_code_generates() {
    let generated = infergate::config::configuration_reference()
        .unwrap_or_else(|missing| panic!("these settings have no description (a doc comment): {missing:?}"));
    let committed = std::fs::read_to_string(root().join("docs/configuration-reference.md")).unwrap();
    if let Some(difference) = first_difference(&committed, &generated) {
        panic!("docs/configuration-reference.md is not what the code generates ({difference}); run `{REGENERATE}`");
    }
}

/// Where two texts first differ, by line; `None` when they are equal.
fn first_difference(committed: &str, generated: &str) -> Option<String> {
    if committed == generated {
        return None;
    }
    let mut committed_lines = committed.lines();
    let mut generated_lines = generated.lines();
    for line in 1.. {
        match (committed_lines.next(), generated_lines.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (None, None) => return Some("line endings".to_owned()),
            (a, b) => {
                return Some(format!(
                    "line {line}: the page has {:?}, the code generates {:?}",
                    a.unwrap_or("(end)"),
                    b.unwrap_or("(end)")
                ));
            }
        }
    }
    unreachable!()
}

/// A table row broken over two lines, or an unescaped `<name>` that Markdown would take for an HTML tag, spoils the
/// page though it equals the generator's output.
#[test]
fn the_configuration_reference_renders() {
    let page = infergate::config::configuration_reference().unwrap();
    let mut in_table = false;
    for line in page.lines() {
        if line.starts_with('|') {
            in_table = true;
            assert!(line.ends_with('|') && line.len() > 1, "a table row broken over lines: {line:?}");
            let outside_code: String = line.split('`').step_by(2).collect();
            assert!(!outside_code.contains('<'), "a bare '<' outside code: {line:?}");
        } else {
            assert!(!in_table || line.is_empty(), "a line glued to a table: {line:?}");
            in_table = false;
        }
    }
}

#[test]
fn a_setting_missing_from_the_page_is_caught() {
    let generated = infergate::config::configuration_reference().unwrap();
    // Planted: the page as it was before a flag was added (its row missing).
    let row = generated.lines().find(|l| l.starts_with("| `--feedback-max-batch`")).unwrap();
    let stale = generated.replace(&format!("{row}\n"), "");
    let difference = first_difference(&stale, &generated).unwrap();
    assert!(difference.contains("--feedback-max-batch"), "{difference}");
}

/// Every variable named in a source file that reads the environment is in the reference (besides the flags' own
/// `INFERGATE_*` ones, which the flag table lists).
#[test]
fn every_environment_variable_read_is_documented() {
    let page = infergate::config::configuration_reference().unwrap();
    let mut undocumented = BTreeSet::new();
    for file in rust_files(&root().join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        if !text.contains("env::var") {
            continue;
        }
        for name in upper_case_literals(&text) {
            // `env!` reads the build's environment, not the server's.
            if text.contains(&format!("env!(\"{name}\")")) {
                continue;
            }
            if !page.contains(&format!("`{name}`")) {
                undocumented.insert(format!("{name} ({})", file.strip_prefix(root()).unwrap().display()));
            }
        }
    }
    assert!(undocumented.is_empty(), "environment variables read but not in the reference: {undocumented:?}");
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// String literals that look like environment variable names: `"SOME_NAME"`.
fn upper_case_literals(text: &str) -> Vec<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.len() >= 4
                && s.contains('_')
                && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && s.starts_with(|c: char| c.is_ascii_uppercase())
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn planted_environment_variables_are_found() {
    let code = "let a = std::env::var(\"NEW_SETTING\"); let b = \"lowercase\"; let c = \"X\";";
    assert_eq!(upper_case_literals(code), ["NEW_SETTING"]);
}

/// A (method, path, listener) the REST API's description or the server has.
type Operation = (String, String, &'static str);

/// The operations of an OpenAPI description, with the listener each is on (port 8000: REST, 8002: metrics).
fn documented_operations(spec: &serde_yaml_ng::Value) -> BTreeSet<Operation> {
    let listener = |servers: &serde_yaml_ng::Value| -> Vec<&'static str> {
        servers
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("url").and_then(|u| u.as_str()))
            .map(|url| if url.ends_with(":8002") { "metrics" } else { "rest" })
            .collect()
    };
    let top = listener(&spec["servers"]);
    let mut operations = BTreeSet::new();
    for (path, item) in spec["paths"].as_mapping().into_iter().flatten() {
        let path = path.as_str().unwrap_or_default().to_owned();
        let listeners = if item.get("servers").is_some() { listener(&item["servers"]) } else { top.clone() };
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                for &on in &listeners {
                    operations.insert((method.to_uppercase(), path.clone(), on));
                }
            }
        }
    }
    operations
}

fn served_operations() -> BTreeSet<Operation> {
    let rest = infergate::api::http::rest_routes().into_iter().map(|r| (r, "rest"));
    let metrics = infergate::api::http::metrics_routes().into_iter().map(|r| (r, "metrics"));
    rest.chain(metrics).map(|(route, on)| (route.method.to_string(), route.path.to_owned(), on)).collect()
}

/// What one set has that the other lacks, as a readable complaint; `None` when they are equal.
fn compare_operations(documented: &BTreeSet<Operation>, served: &BTreeSet<Operation>) -> Option<String> {
    let undocumented: Vec<_> = served.difference(documented).collect();
    let not_served: Vec<_> = documented.difference(served).collect();
    (!undocumented.is_empty() || !not_served.is_empty()).then(|| {
        format!(
            "served but not in docs/openapi.yaml: {undocumented:?}; in docs/openapi.yaml but not served: {not_served:?}"
        )
    })
}

fn openapi() -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(root().join("docs/openapi.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

#[test]
fn the_openapi_file_names_exactly_the_served_routes() {
    let served = served_operations();
    assert!(served.len() > 25, "{served:?}");
    if let Some(complaint) = compare_operations(&documented_operations(&openapi()), &served) {
        panic!("{complaint}");
    }
}

#[test]
fn a_route_missing_from_the_openapi_file_is_caught() {
    let mut spec = openapi();
    // Planted: the feedback route left out of the file.
    spec["paths"].as_mapping_mut().unwrap().remove("/v2/models/{model}/feedback");
    let complaint = compare_operations(&documented_operations(&spec), &served_operations()).unwrap();
    assert!(complaint.contains("/v2/models/{model}/feedback"), "{complaint}");
    // Planted: a path the server does not have.
    let mut spec = openapi();
    spec["paths"]["/v2/models/{model}/explain"] =
        serde_yaml_ng::from_str("post: {responses: {'200': {description: x}}}").unwrap();
    let complaint = compare_operations(&documented_operations(&spec), &served_operations()).unwrap();
    assert!(complaint.contains("/v2/models/{model}/explain"), "{complaint}");
}

/// The file is validated by a real OpenAPI validator, and each of its examples is sent to a server started as the
/// examples expect: the answer must have the example's status and match the file's description of it.
#[tokio::test]
#[ignore = "needs the test environment's Python (tests/requirements.txt, installed by scripts/test)"]
async fn the_openapi_file_is_valid_and_the_server_answers_its_examples_as_documented() {
    let repository = temp_dir("openapi");
    copy_dir(&bundled_models(), &repository);
    let iris = repository.join("iris/model.toml");
    let toml = std::fs::read_to_string(&iris).unwrap_or_default();
    std::fs::write(&iris, format!("{toml}\n[feedback]\ntask = \"classification\"\n")).unwrap();
    let state = temp_dir("openapi-state");
    // The webhook answers only with a secret, which needs a registry to follow: one that is not there, so its model
    // stays unavailable (the examples of 503). The traffic examples' policies are kept in a state folder of their own.
    let flags = [
        "--admin-token",
        ADMIN_TOKEN,
        "--shared-memory",
        "--state-dir",
        state.to_str().unwrap(),
        "--mlflow-uri",
        "http://127.0.0.1:9",
        "--mlflow-model",
        "registered-model@champion",
        "--mlflow-webhook-secret",
        "openapi-webhook-secret-0123456789",
    ];
    let config = config_from_flags(&repository, &flags);
    let server = TestServer::start(config).await;
    let run = tokio::process::Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/interop/openapi_check.py"))
        .arg("--spec")
        .arg(root().join("docs/openapi.yaml"))
        .args(["--rest", &server.base])
        .args(["--metrics", &format!("http://{}", server.server.metrics_addr())])
        .args(["--admin-token", ADMIN_TOKEN])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run).await.expect("openapi_check.py hung").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "openapi_check.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("OPENAPI_EXAMPLES_OK"), "{stdout}");
    server.server.shutdown();
    std::fs::remove_dir_all(&repository).unwrap();
    std::fs::remove_dir_all(&state).unwrap();
}

const ADMIN_TOKEN: &str = "openapi-admin-token-0123456789";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The calls of the gRPC services this server declares (`proto/*.proto`) that `docs/grpc-api.md` does not name.
fn undocumented_calls(protos: &[String], page: &str) -> Vec<String> {
    protos
        .iter()
        .flat_map(|proto| proto.lines())
        .filter_map(|line| line.trim_start().strip_prefix("rpc "))
        .filter_map(|rest| rest.split(['(', ' ']).next())
        .filter(|call| !page.split(|c: char| !c.is_ascii_alphanumeric()).any(|word| word == *call))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_grpc_call_is_documented() {
    let protos: Vec<String> = ["proto/inference.proto", "proto/health.proto"]
        .iter()
        .map(|p| std::fs::read_to_string(root().join(p)).unwrap())
        .collect();
    let page = std::fs::read_to_string(root().join("docs/grpc-api.md")).unwrap();
    let missing = undocumented_calls(&protos, &page);
    assert!(missing.is_empty(), "calls of proto/*.proto not named in docs/grpc-api.md: {missing:?}");
    // Planted: a call the page does not name.
    let planted = format!("{}\n  rpc ModelExplain(ExplainRequest) returns (ExplainResponse) {{}}", protos[0]);
    assert_eq!(undocumented_calls(&[planted], &page), ["ModelExplain"]);
}

/// The README and every page of `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let broken: Vec<String> = pages().iter().flat_map(|page| broken_links(page)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn a_broken_link_or_anchor_is_caught() {
    let dir = temp_dir("links");
    std::fs::write(dir.join("other.md"), "# Other page\n\n## A `code` section: with punctuation!\n").unwrap();
    let page = dir.join("page.md");
    std::fs::write(
        &page,
        "# Page\n\n## Twice\n\n## Twice\n\n[ok](other.md) [ok](other.md#a-code-section-with-punctuation) \
         [ok](#twice-1) [ok](https://example.com/x.md) [ok](#page)\n\n```\n[not a link](nowhere.md)\n```\n\n\
         [missing file](gone.md) [missing anchor](other.md#nope) [missing here](#twice-2) `[code](nope.md)`\n",
    )
    .unwrap();
    let broken = broken_links(&page);
    assert_eq!(broken.len(), 3, "{broken:#?}");
    for target in ["gone.md", "other.md#nope", "#twice-2"] {
        assert!(broken.iter().any(|b| b.contains(target)), "{target} not reported: {broken:#?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// The relative links of a Markdown page whose file or anchor does not exist.
fn broken_links(page: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(page).unwrap();
    let mut anchors_of: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let mut broken = Vec::new();
    for (number, target) in links(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = target.split_once('#').map_or((target.as_str(), None), |(f, a)| (f, Some(a)));
        let path = if file.is_empty() { page.to_owned() } else { page.parent().unwrap().join(file) };
        let where_ = format!("{}:{number}: {target}", page.strip_prefix(root()).unwrap_or(page).display());
        if !path.exists() {
            broken.push(format!("{where_} (no such file)"));
            continue;
        }
        let Some(anchor) = anchor.filter(|_| path.extension().is_some_and(|e| e == "md")) else { continue };
        let anchors = anchors_of
            .entry(path.clone())
            .or_insert_with(|| std::fs::read_to_string(&path).map(|t| anchors(&t)).unwrap_or_default());
        if !anchors.contains(anchor) {
            broken.push(format!("{where_} (no such anchor)"));
        }
    }
    broken
}

/// The Markdown lines outside fenced code blocks, with their numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push((index + 1, line));
        }
    }
    lines
}

/// Removes inline code spans, whose brackets are not links.
fn without_code_spans(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join("")
}

/// The targets of the inline links (`[text](target)`) and reference definitions (`[label]: target`) of a page.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in prose_lines(text) {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or("");
            found.push((number, target.trim_matches(['<', '>']).to_owned()));
            rest = &after[end..];
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some((_, target)) = trimmed.split_once("]: ")
        {
            found.push((number, target.split_whitespace().next().unwrap_or("").to_owned()));
        }
    }
    found
}

/// The anchors of a page: its headings' slugs as GitHub makes them (a repeated slug gets `-1`, `-2`, ...), and
/// `id`/`name` attributes of HTML anchors.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (_, line) in prose_lines(text) {
        for attribute in ["id=\"", "name=\""] {
            if let Some(start) = line.find(&format!("<a {attribute}")) {
                let value = &line[start + 3 + attribute.len()..];
                anchors.insert(value.split('"').next().unwrap_or("").to_owned());
            }
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let slug = slug(&line[hashes..]);
        let count = seen.entry(slug.clone()).or_insert(0);
        anchors.insert(if *count == 0 { slug.clone() } else { format!("{slug}-{count}") });
        *count += 1;
    }
    anchors
}

/// GitHub's heading slug: the heading's text (a link's text, not its target), lower case, without punctuation
/// but `-` and `_`, spaces as `-`.
fn slug(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading.trim();
    while let Some(start) = rest.find("](") {
        text.push_str(&rest[..start]);
        rest = rest[start..].split_once(')').map_or("", |(_, after)| after);
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}
