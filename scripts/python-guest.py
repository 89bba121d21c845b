#!/usr/bin/env python3
"""Steps of a Python guest build that scripts/build-guest.sh delegates:

  python-guest.py deps REQUIREMENTS DIR PIP
      Install REQUIREMENTS (a requirements.txt) with PIP into DIR/site, once
      per content of the file. Native extensions (.so, .pyd) cannot run in
      WebAssembly and componentize-py bundles pure Python only: they are
      removed, listed in DIR/native.json and named on stderr. A package with
      a pure-Python fallback (MarkupSafe) works without them.
  python-guest.py entry WORK [SITE]
      Print the module componentize-py starts from. An app.py that defines
      IncomingHandler is its own entry unless SITE has packages; otherwise a
      generated polytrace_main.py imports every module of SITE's packages
      (componentize-py bundles exactly what is imported while it builds) and
      serves app.py's WSGI callable `app` (Flask) through polytrace.wsgi.
  python-guest.py explain LOG DIR
      After a failed componentize-py run: when LOG shows an import of a
      module whose native extension was removed, say which package it is
      and why it cannot be bundled.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

NATIVE_SUFFIXES = (".so", ".pyd", ".dylib")


# The interpreter componentize-py 0.25 embeds: packages are chosen for it,
# not for the Python that runs pip.
GUEST_PYTHON = "3.14"


def deps(requirements, out, pip):
    # Keyed by every .txt beside it too (-r and -c files) and the guest Python.
    digest = hashlib.sha256(GUEST_PYTHON.encode())
    folder = os.path.dirname(os.path.abspath(requirements))
    for name in sorted(os.listdir(folder)):
        if name.endswith(".txt"):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    key = digest.hexdigest()
    stamp = os.path.join(out, ".complete")
    if not (os.path.exists(stamp) and open(stamp).read() == key):
        install(requirements, out, pip, key)
    for n in json.load(open(os.path.join(out, "native.json"))):
        print(
            f"note: {n['package']} {n['version']} ships a native extension ({n['file']}) that cannot run in "
            "WebAssembly; it is left out, so the package must work from its pure-Python code",
            file=sys.stderr,
        )


def install(requirements, out, pip, key):
    shutil.rmtree(out, ignore_errors=True)
    site = os.path.join(out, "site")
    os.makedirs(site)
    print(f"build: installing {requirements} (pip)", file=sys.stderr)
    code = subprocess.call(
        [
            pip, "install", "--quiet", "--disable-pip-version-check", "--no-compile",
            # Wheels for the guest's Python (markers and Requires-Python
            # judged for it); pure-Python wheels are what can be bundled.
            "--python-version", GUEST_PYTHON, "--only-binary=:all:",
            "--target", site, "-r", requirements,
        ],
        stdout=sys.stderr,
    )
    if code != 0:
        sys.exit(
            f"error: pip could not install {requirements} for Python {GUEST_PYTHON} (status {code}): see its "
            "output above (a package with no wheel, only a source archive, cannot be installed for the guest)"
        )
    native = remove_native(site)
    with open(os.path.join(out, "native.json"), "w") as f:
        json.dump(native, f, indent=1)
    with open(os.path.join(out, ".complete"), "w") as f:
        f.write(key)


def remove_native(site):
    """Delete native extension files under `site`; return what they were:
    [{package, version, file, module}]."""
    owners = {}
    for entry in os.listdir(site):
        if not entry.endswith(".dist-info"):
            continue
        package, _, version = entry[: -len(".dist-info")].partition("-")
        record = os.path.join(site, entry, "RECORD")
        if os.path.exists(record):
            for line in open(record, encoding="utf-8"):
                owners[line.split(",", 1)[0]] = (package, version)
    removed = []
    for dirpath, _, files in os.walk(site):
        for name in files:
            if not name.endswith(NATIVE_SUFFIXES):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, site).replace(os.sep, "/")
            package, version = owners.get(rel, (rel.split("/", 1)[0], "?"))
            # `markupsafe/_speedups.cpython-311-x86_64-linux-gnu.so` → markupsafe._speedups
            module = rel.split(".", 1)[0].replace("/", ".")
            removed.append({"package": package, "version": version, "file": rel, "module": module})
            os.remove(path)
    return removed


def top_level(site):
    """The importable top-level names installed in `site`."""
    names = []
    for entry in sorted(os.listdir(site)):
        path = os.path.join(site, entry)
        if entry.startswith((".", "_")) or entry.endswith((".dist-info", ".data", ".pth")) or entry in ("bin", "__pycache__"):
            continue
        if os.path.isdir(path) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", entry):
            names.append(entry)
        elif entry.endswith(".py"):
            names.append(entry[:-3])
    return names


def entry(work, site=None):
    app = os.path.join(work, "app.py")
    if not os.path.exists(app):
        sys.exit("error: a Python component is a directory with an app.py")
    text = open(app, encoding="utf-8").read()
    defines_handler = re.search(r"^(class\s+IncomingHandler\b|IncomingHandler\s*=)", text, re.M) is not None
    packages = top_level(site) if site else []
    if defines_handler and not packages:
        print("app")
        return
    serve = (
        "from app import IncomingHandler  # noqa: E402,F401\n"
        if defines_handler
        else (
            "import app as _app  # noqa: E402\n\n"
            "if not callable(getattr(_app, 'app', None)):\n"
            "    raise SystemExit(\n"
            "        'app.py defines neither IncomingHandler (a wasi:http handler) nor a WSGI '\n"
            "        'application named app (Flask: app = Flask(__name__))'\n"
            "    )\n"
            "IncomingHandler = _wsgi.handler(_app.app)\n"
        )
    )
    with open(os.path.join(work, "polytrace_main.py"), "w", encoding="utf-8") as f:
        f.write(
            '"""Generated by scripts/build-guest.sh: the component\'s entry module."""\n\n'
            "import polytrace.wsgi as _wsgi\n\n"
            f"_wsgi.preload({packages!r})\n\n" + serve
        )
    print("polytrace_main")


def explain(log, out):
    native_file = os.path.join(out, "native.json")
    if not os.path.exists(native_file):
        return
    native = json.load(open(native_file))
    text = open(log, encoding="utf-8", errors="replace").read()
    missing = set(re.findall(r"No module named '([\w.]+)'", text))
    missing |= set(re.findall(r"cannot import name '\w+' from '([\w.]+)'", text))
    for n in native:
        if any(m == n["module"] or n["module"].startswith(m + ".") or m.startswith(n["module"]) for m in missing):
            print(
                f"error: package `{n['package']}` {n['version']} needs its native extension {n['file']}, which cannot "
                "run in WebAssembly (componentize-py bundles pure-Python packages only): use a pure-Python "
                "alternative, or a build of the package for wasm32-wasi",
                file=sys.stderr,
            )


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"deps": deps, "entry": entry, "explain": explain}[command](*args)
