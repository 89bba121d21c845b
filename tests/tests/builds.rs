//! `scripts/build-guest.sh` with the real toolchains: a broken component's
//! build names the component and language and shows the tool's own error;
//! an unchanged component is not rebuilt.

use polytrace_tests::scratch_dir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-guest.sh")
}

fn build(language: &str, name: &str, src: &Path, out: &Path) -> Output {
    Command::new(script())
        .args([language, name])
        .arg(src)
        .arg(out)
        .output()
        .unwrap()
}

/// Build `source` written as `file` and expect a failure that names the
/// component, its language and the tool, and quotes `tool_says`.
fn broken(language: &str, file: &str, source: &str, tool: &str, tool_says: &str) {
    let dir = scratch_dir(&format!("broken-{language}"));
    std::fs::write(dir.join(file), source).unwrap();
    let name = format!("broken_{language}");
    let out = build(language, &name, &dir, &dir.join("out.wasm"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: building component `{name}` ({language}) failed: {tool} exited"
        )),
        "{stderr}"
    );
    assert!(stderr.contains(tool_says), "{stderr}");
    assert!(!dir.join("out.wasm").exists());
}

#[test]
fn a_python_syntax_error_is_reported_with_the_component() {
    broken(
        "python",
        "app.py",
        "def handle(:\n",
        "componentize-py",
        "SyntaxError: invalid syntax",
    );
}

#[test]
fn a_javascript_syntax_error_is_reported_with_the_component() {
    broken(
        "javascript",
        "app.js",
        "addEventListener('fetch', (e) => {\n",
        "node --check",
        "SyntaxError: Unexpected end of input",
    );
}

#[test]
fn a_go_compile_error_is_reported_with_the_component() {
    broken(
        "go",
        "handler.go",
        "package export_wasi_http_incoming_handler\n\nfunc Handle() { notDefined() }\n",
        "go build",
        "undefined: notDefined",
    );
}

#[test]
fn an_unknown_language_is_refused() {
    let dir = scratch_dir("cobol");
    let out = build("cobol", "ledger", &dir, &dir.join("out.wasm"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("component `ledger`: unknown language `cobol`")
    );
}

#[test]
fn an_unchanged_component_is_not_rebuilt() {
    let dir = scratch_dir("rebuild");
    let app = dir.join("app.js");
    std::fs::write(
        &app,
        "addEventListener('fetch', (e) => e.respondWith(new Response('ok')));\n",
    )
    .unwrap();
    let wasm = dir.join("out.wasm");
    let first = build("javascript", "rebuild_js", &dir, &wasm);
    assert!(first.status.success(), "{first:?}");
    assert!(String::from_utf8_lossy(&first.stderr).contains("build: rebuild_js"));
    let built = std::fs::metadata(&wasm).unwrap().modified().unwrap();

    let second = build("javascript", "rebuild_js", &dir, &wasm);
    assert!(second.status.success());
    assert!(
        !String::from_utf8_lossy(&second.stderr).contains("build:"),
        "{second:?}"
    );
    assert_eq!(std::fs::metadata(&wasm).unwrap().modified().unwrap(), built);

    // A changed source is rebuilt.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(
        &app,
        "addEventListener('fetch', (e) => e.respondWith(new Response('changed')));\n",
    )
    .unwrap();
    let third = build("javascript", "rebuild_js", &dir, &wasm);
    assert!(third.status.success());
    assert!(String::from_utf8_lossy(&third.stderr).contains("build: rebuild_js"));
}

/// `polytrace build`: every component's command runs from the manifest's
/// directory; a failure names the component and shows its output's tail,
/// the others still build, and the exit code says it failed. A second run
/// finds the built component up to date.
#[test]
fn polytrace_build_builds_every_component_and_reports_failures() {
    let dir = scratch_dir("polytrace-build");
    let script = script();
    for sub in ["good", "broken"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join("good/app.js"),
        "addEventListener('fetch', (e) => e.respondWith(new Response('ok')));\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("broken/handler.go"),
        "package export_wasi_http_incoming_handler\n\nfunc Handle() { notDefined() }\n",
    )
    .unwrap();
    std::fs::write(dir.join("prebuilt.wasm"), b"").unwrap();
    std::fs::write(
        dir.join("polytrace.toml"),
        format!(
            r#"
app = "builds"
[[component]]
id = "good"
language = "javascript"
source = "out/good.wasm"
build = "{script} javascript pb_good good out/good.wasm"
[[component]]
id = "broken"
language = "go"
source = "out/broken.wasm"
build = "{script} go pb_broken broken out/broken.wasm"
[[component]]
id = "prebuilt"
source = "prebuilt.wasm"
"#,
            script = script.display()
        ),
    )
    .unwrap();
    let build = || {
        Command::new(polytrace_tests::polytrace_bin())
            .arg("build")
            .arg(&dir)
            .output()
            .unwrap()
    };
    let first = build();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(!first.status.success(), "{stderr}");
    assert!(stderr.contains("good (javascript): built in"), "{stderr}");
    assert!(stderr.contains("FAILED"), "{stderr}");
    assert!(stderr.contains("broken (go): `"), "{stderr}");
    assert!(stderr.contains("undefined: notDefined"), "{stderr}");
    assert!(stderr.contains("prebuilt: no build command"), "{stderr}");
    assert!(
        stderr.contains("error: build failed for component `broken`"),
        "{stderr}"
    );
    assert!(dir.join("out/good.wasm").exists());

    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-go/handler.go"),
        dir.join("broken/handler.go"),
    )
    .unwrap();
    let second = build();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(stderr.contains("good (javascript): up to date"), "{stderr}");
    assert!(stderr.contains("broken (go): built in"), "{stderr}");
    assert!(dir.join("out/broken.wasm").exists());
}

/// `polytrace up --build` builds first, then serves what it built.
#[tokio::test(flavor = "multi_thread")]
async fn up_with_build_builds_then_serves() {
    let dir = scratch_dir("up-build");
    std::fs::create_dir_all(dir.join("web")).unwrap();
    std::fs::write(
        dir.join("web/app.js"),
        "addEventListener('fetch', (e) => e.respondWith(new Response('fresh build')));\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("polytrace.toml"),
        format!(
            "app = \"b\"\n[[component]]\nid = \"web\"\nlanguage = \"javascript\"\n\
             source = \"out/web.wasm\"\nroute = \"/...\"\n\
             build = \"{} javascript up_build_web web out/web.wasm\"\n",
            script().display()
        ),
    )
    .unwrap();
    let host = polytrace_tests::Polytrace::start_with_args(
        &dir,
        &["--build"],
        &[("OTEL_TRACES_EXPORTER".into(), "none".into())],
    );
    let response = polytrace_tests::get(&host.url("/")).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "fresh build");
    let (_, log) = host.terminate();
    assert!(log.contains("web (javascript): built in"), "{log}");
}

/// A requirement whose package needs its native extension (ujson, C only):
/// the build fails naming the package and why. A package with a pure-Python
/// fallback (MarkupSafe, under Flask) builds: `flask_orders` in build-guests.sh.
#[test]
fn a_python_requirement_with_a_native_extension_fails_naming_the_package() {
    let dir = scratch_dir("python-native-requirement");
    std::fs::write(dir.join("requirements.txt"), "ujson==6.1.0\n").unwrap();
    std::fs::write(
        dir.join("app.py"),
        "import ujson\nfrom wit_world import exports\n\n\
         class IncomingHandler(exports.IncomingHandler):\n    def handle(self, request, out):\n        pass\n",
    )
    .unwrap();
    let out = build("python", "native_python", &dir, &dir.join("out.wasm"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("note: ujson 6.1.0 ships a native extension"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: package `ujson` 6.1.0 needs its native extension"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot run in WebAssembly"), "{stderr}");
    assert!(!dir.join("out.wasm").exists());
}

/// An app.py with neither a wasi:http handler nor a WSGI `app` is refused
/// with what it must define.
#[test]
fn a_python_app_with_neither_handler_nor_wsgi_app_is_refused() {
    let dir = scratch_dir("python-no-entry");
    std::fs::write(dir.join("app.py"), "greeting = 'hello'\n").unwrap();
    let out = build("python", "no_entry_python", &dir, &dir.join("out.wasm"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("app.py defines neither IncomingHandler"),
        "{stderr}"
    );
}
