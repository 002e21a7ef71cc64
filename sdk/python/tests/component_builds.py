"""Builds the test projects into components once, for the component tests.

Builds are kept in the temp folder under a hash of everything that goes into
them (the SDK, the project, the WIT, componentize-py's version), so a second
test run costs nothing. The WIT is ``$CONSUMER_HOST_WIT`` or the repository's
``wit/``; it must be the 0.2.0 world (with the ``handler`` interface).
"""

import hashlib
import os
import subprocess
import sys
import tempfile

import support

WIT = os.environ.get("CONSUMER_HOST_WIT") or os.path.join(support.SDK, "..", "..", "wit")


def missing():
    """Why the component tests cannot run here, or None."""
    try:
        import wasmtime  # noqa: F401
        from importlib.metadata import version
        version("componentize-py")
    except Exception as err:
        return f"needs wasmtime and componentize-py in this Python ({err})"
    try:
        text = "".join(open(os.path.join(WIT, f), encoding="utf-8").read()
                       for f in sorted(os.listdir(WIT)) if f.endswith(".wit"))
    except OSError as err:
        return f"no WIT at {WIT} ({err})"
    if "consumer-host:consumer@0.2.0" not in text or "interface handler" not in text:
        return f"{WIT} is not the 0.2.0 consumer world; set CONSUMER_HOST_WIT"
    return None


def _digest(*folders):
    from importlib.metadata import version
    h = hashlib.sha256(version("componentize-py").encode())
    for folder in folders:
        for root, dirs, files in sorted(os.walk(folder)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith((".py", ".wit", ".toml")):
                    path = os.path.join(root, name)
                    h.update(os.path.relpath(path, folder).encode())
                    with open(path, "rb") as f:
                        h.update(f.read())
    return h.hexdigest()[:24]


def build(project):
    """The component built from ``project`` (built now if not kept)."""
    key = _digest(os.path.join(support.SDK, "consumer_host"), project, WIT)
    out = os.path.join(tempfile.gettempdir(), "consumer-host-test-builds", f"{key}.wasm")
    if not os.path.exists(out):
        result = subprocess.run(
            [sys.executable, "-m", "consumer_host.build", "--project", project, "--wit", WIT, "-o", out],
            cwd=support.SDK, capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"building {project} failed ({result.returncode}):\n{result.stderr}")
    return out
