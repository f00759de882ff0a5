//! The demos of the README and the examples' docs, run as written: each `cargo run
//! --example` line starts that example's binary (built by `cargo test`) with the line's
//! environment, each `curl` line runs in `bash` with real `curl`, and the `x-cache` each
//! response carries is the one the docs say. Only the ports change: `3000` and `3001`
//! become free ones, and the Redis and memcached the demos name are servers the test
//! starts. Without `curl`, `redis-server` or `memcached` the tests are skipped with a
//! message — except under `CI=true`, where that is a failure (`scripts/test.sh` installs
//! them).

#![allow(clippy::unwrap_used)]

#[path = "common/installed.rs"]
mod installed;
#[path = "common/memcached_server.rs"]
mod memcached_server;
#[allow(dead_code)]
#[path = "redis/servers.rs"]
mod servers;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use installed::installed;
use memcached_server::Memcached;
use servers::{RedisServer, free_port};

/// The addresses a demo names, and what the test puts there.
struct Ports {
    first: u16,
    second: u16,
    redis: Option<String>,
    memcached: Option<String>,
}

impl Ports {
    fn new() -> Self {
        Self {
            first: free_port(),
            second: free_port(),
            redis: None,
            memcached: None,
        }
    }

    /// `line` with the demo's addresses replaced by the test's.
    fn rewrite(&self, line: &str) -> String {
        let mut line = line
            .replace(":3000", &format!(":{}", self.first))
            .replace(":3001", &format!(":{}", self.second));
        if let Some(redis) = &self.redis {
            line = line.replace("redis://127.0.0.1:6379", redis);
        }
        if let Some(memcached) = &self.memcached {
            line = line.replace("127.0.0.1:11211", memcached);
        }
        line
    }
}

/// An example's binary, as `cargo test` builds it next to the test's own.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test --all-features` builds the examples (a `--test demos` alone does not)",
        path.display()
    );
    path
}

/// A running example; killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts what a `cargo run … --example NAME` line (with `VAR=value` words before it) runs,
/// and waits until it accepts connections on its `LISTEN` port.
fn start(line: &str, ports: &Ports) -> Running {
    let line = ports.rewrite(line);
    let words: Vec<&str> = line.split_whitespace().collect();
    let example = words
        .iter()
        .position(|word| *word == "--example")
        .and_then(|at| words.get(at + 1))
        .unwrap();
    let mut command = Command::new(example_binary(example));
    let mut port = ports.first;
    for word in words.iter().take_while(|word| **word != "cargo") {
        let (name, value) = word.split_once('=').unwrap();
        command.env(name, value);
        if name == "LISTEN" {
            port = value.rsplit(':').next().unwrap().parse().unwrap();
        }
    }
    if !words.iter().any(|word| word.starts_with("LISTEN=")) {
        command.env("LISTEN", format!("127.0.0.1:{port}"));
    }
    let running = Running(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{example} listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    running
}

/// What `curl` printed for a line, run in `bash` with the test's ports.
fn curl(line: &str, ports: &Ports) -> String {
    let output = Command::new("bash")
        .args(["-c", &format!("{} --max-time 10", ports.rewrite(line))])
        .output()
        .unwrap();
    assert!(output.status.success(), "`{line}` failed: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The value of the `x-cache` header in `curl -i` output.
fn x_cache(output: &str) -> Option<&str> {
    output.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("x-cache").then(|| value.trim())
    })
}

/// The cache status a demo's comment says a line's response carries (`# MISS on the
/// first instance`, `# x-cache: HIT, Age: 0`).
fn said_status(comment: &str) -> Option<&'static str> {
    ["MISS", "HIT", "REFRESH", "STALE", "BYPASS", "REVALIDATED"]
        .into_iter()
        .find(|status| {
            comment
                .split(|c: char| !c.is_ascii_alphabetic())
                .any(|word| word == *status)
        })
}

/// The lines of the first ```` ```text ```` block of an example's `//!` docs, with `\`
/// continuations joined.
fn example_demo(name: &str) -> Vec<String> {
    let source = std::fs::read_to_string(format!("examples/{name}.rs")).unwrap();
    let docs: Vec<&str> = source
        .lines()
        .map_while(|line| line.strip_prefix("//!"))
        .map(str::trim)
        .collect();
    let start = docs.iter().position(|line| *line == "```text").unwrap() + 1;
    let end = start
        + docs[start..]
            .iter()
            .position(|line| *line == "```")
            .unwrap();
    let mut lines: Vec<String> = Vec::new();
    let mut continued = false;
    for line in &docs[start..end] {
        if continued {
            let last = lines.last_mut().unwrap();
            last.push(' ');
            last.push_str(line.trim_end_matches('\\'));
        } else {
            lines.push(line.trim_end_matches('\\').to_owned());
        }
        continued = line.ends_with('\\');
    }
    lines
}

/// The lines of the README's first ```` ```sh ```` block that runs `--example NAME`.
fn readme_demo(name: &str) -> Vec<String> {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let block = readme
        .split("```sh\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .find(|block| block.contains(&format!("--example {name}\n")))
        .unwrap();
    block.lines().map(str::to_owned).collect()
}

/// Runs an example's demo as written: its processes, then its `curl` lines, checking the
/// `x-cache` of each line whose comment names one. Returns how many it checked.
fn run_example_demo(name: &str, ports: &Ports) -> usize {
    run_demo(example_demo(name), ports)
}

fn run_demo(lines: Vec<String>, ports: &Ports) -> usize {
    let mut running = Vec::new();
    let mut checked = 0;
    for line in lines {
        let (command, comment) = match line.split_once(" # ") {
            Some((command, comment)) => (command.trim(), comment),
            None => (line.trim(), ""),
        };
        if command.is_empty() || command.starts_with('#') {
            continue;
        }
        if command.contains("cargo run") {
            running.push(start(command, ports));
        } else if command.starts_with("curl") {
            let output = curl(command, ports);
            if let Some(status) = said_status(comment) {
                assert_eq!(
                    x_cache(&output),
                    Some(status),
                    "`{line}` printed:\n{output}"
                );
                checked += 1;
            }
        }
    }
    checked
}

#[test]
fn the_quickstart_example_answers_as_its_docs_say() {
    if !installed("curl") {
        return;
    }
    assert_eq!(run_example_demo("quickstart", &Ports::new()), 3);
}

#[test]
fn the_invalidation_example_answers_as_its_docs_say() {
    if !installed("curl") {
        return;
    }
    assert_eq!(run_example_demo("invalidation", &Ports::new()), 5);
}

#[test]
fn two_instances_of_the_redis_example_share_entries_as_its_docs_say() {
    if !installed("curl") || !servers::available() {
        return;
    }
    let redis = RedisServer::start(&[]);
    let mut ports = Ports::new();
    ports.redis = Some(redis.url());
    assert_eq!(run_example_demo("redis", &ports), 2);
    // And the README's, on a Redis emptied first.
    redis.cli(&["FLUSHALL"]);
    assert_eq!(run_demo(readme_demo("redis"), &ports), 2);
}

#[test]
fn two_instances_of_the_memcached_example_share_entries_as_its_docs_say() {
    if !installed("curl") || !memcached_server::available() {
        return;
    }
    let memcached = Memcached::start(&[]);
    let mut ports = Ports::new();
    ports.memcached = Some(memcached.address());
    assert_eq!(run_example_demo("memcached", &ports), 2);
}

/// The README's walk through the quick start: each `$ curl` line's response carries the
/// `x-cache` and handler call number printed under it, and `/stats` the counts shown.
#[test]
fn the_readme_walkthrough_answers_as_printed() {
    if !installed("curl") {
        return;
    }
    let readme = std::fs::read_to_string("README.md").unwrap();
    let start_at = readme.find("```console\n").unwrap() + "```console\n".len();
    let block = &readme[start_at..start_at + readme[start_at..].find("```").unwrap()];
    let ports = Ports::new();
    let _quickstart = start("cargo run --release --example quickstart", &ports);
    let mut checked = 0;
    for step in block.split("$ ").filter(|step| !step.trim().is_empty()) {
        let (command, printed) = step.split_once('\n').unwrap();
        let output = curl(command, &ports);
        if let Some(status) = x_cache(printed) {
            assert_eq!(
                x_cache(&output),
                Some(status),
                "`{command}` printed:\n{output}"
            );
            let call = |text: &str| {
                text.split("handler call #").nth(1).map(|rest| {
                    rest.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
            };
            assert_eq!(
                call(&output),
                call(printed),
                "`{command}` printed:\n{output}"
            );
            checked += 1;
        } else {
            // The stats: every top-level count the README shows has that value.
            let actual: serde_json::Value = serde_json::from_str(&output).unwrap();
            let shown = printed.split("\"routes\"").next().unwrap();
            for pair in shown.split(',') {
                let Some((name, value)) = pair.trim_start_matches('{').split_once(':') else {
                    continue;
                };
                let name = name.trim_matches('"');
                if let Ok(value) = value.parse::<f64>() {
                    assert_eq!(actual[name].as_f64(), Some(value), "{name} in {output}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 3 + 5, "the walkthrough checked {checked} things");
}

/// What the store table in the README and the `store` module's docs says each store does,
/// held to the stores' capabilities (a row the test does not know fails it too).
#[test]
fn the_store_tables_say_what_the_capabilities_say() {
    use tower_response_cache::store::Store;
    use tower_response_cache::{
        MemcachedConfig, MemcachedStore, MemoryStore, RedisStore, TieredConfig, TieredStore,
    };
    if !servers::available() || !memcached_server::available() {
        return;
    }
    let redis = RedisServer::start(&[]);
    let memcached = Memcached::start(&[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stores: Vec<Box<dyn Store>> = runtime.block_on(async {
        let redis_store = || async { RedisStore::connect_url(&redis.url()).await.unwrap() };
        vec![
            Box::new(MemoryStore::new(1 << 20)) as Box<dyn Store>,
            Box::new(redis_store().await),
            Box::new(
                TieredStore::connect(redis_store().await, TieredConfig::default())
                    .await
                    .unwrap(),
            ),
            Box::new(MemcachedStore::new(MemcachedConfig::new([memcached.address()])).unwrap()),
        ]
    });
    let says = |row: &str, store: &dyn Store| -> bool {
        let can = store.capabilities();
        match row {
            r#"get, put, remove, clear; put if absent and "an older entry never over a newer one", atomic"# => {
                true
            }
            "hits in place, without a round trip or decoding" => can.reads_in_place,
            "touch (sliding expiry)" => can.touch,
            "prefix purge" => can.prefix_purges,
            "purge of the URLs under a path (a prefix with a filter)" => can.filtered_prefix_purges,
            "tag purge" => can.tag_purges,
            "soft purge" => can.soft_purges,
            "a purge counts what it took" => can.counts_purges,
            "counters" => store.counters().is_some(),
            "many keys in one round trip" => store.batches().is_some(),
            "shared: purges seen by every instance, fetches under way included" => {
                store.shared().is_some()
            }
            "one origin fetch across instances (fill lock)" => can.fill_locks,
            unknown => panic!("a row the test does not know: {unknown:?}"),
        }
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for (file, prefix) in [("README.md", ""), ("src/store/mod.rs", "//! ")] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let rows: Vec<Vec<String>> = text
            .lines()
            .filter_map(|line| line.strip_prefix(prefix))
            .skip_while(|line| !line.starts_with("| | `MemoryStore` |"))
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .map(|line| {
                line.trim_matches('|')
                    .split(" | ")
                    .map(|cell| cell.trim().to_owned())
                    .collect()
            })
            .collect();
        assert!(rows.len() >= 12, "{file}: the store table");
        for row in &rows {
            for (store, cell) in stores.iter().zip(&row[1..]) {
                let claimed = cell.starts_with('✅');
                assert!(claimed || cell.starts_with('—'), "{file}: {cell:?}");
                assert_eq!(
                    claimed,
                    says(&row[0], &**store),
                    "{file}: {:?} for {}",
                    row[0],
                    store.capabilities().name
                );
            }
        }
    }
}
