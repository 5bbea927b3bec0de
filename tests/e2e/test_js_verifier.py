"""The JavaScript package ``verifiers/js`` (npm ``authserver-verifier``): its own tests, run
by Node's test runner against real ``authserver serve`` processes started with this
virtualenv's ``authserver``.

Needs ``node`` (20 or later) and ``npm``. Outside CI their absence skips this test; under CI
(``CI=true``, set by ``.ci/run``, which installs them from Debian when missing) it fails.
``npm ci`` installs exactly the committed package-lock.json (``tests.helpers.npm_ci``: not
again when ``node_modules`` already holds that tree, and from a per-user cache of that exact
tree in a clean clone), because the Verdant server the adapter is tested against builds
``better-sqlite3`` from source when no prebuilt binary can be downloaded: minutes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from authserver_verifier import REASONS

from tests.helpers import node_and_npm
from tests.helpers import node_test
from tests.helpers import npm_ci

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PACKAGE = Path(__file__).resolve().parents[2] / "verifiers" / "js"
PYTHON_README = PACKAGE.parent / "python" / "README.md"


@pytest.mark.waits
def test_js_verifier_package() -> None:
    node, npm = node_and_npm("the JavaScript verifier's tests")
    npm_ci(npm, PACKAGE)
    bin_dir = Path(sys.executable).parent
    authserver = shutil.which("authserver", path=str(bin_dir))
    assert authserver, f"no authserver in {bin_dir}"
    node_test(node, PACKAGE, "test/suite.js", env={"AUTHSERVER_BIN": authserver})


#: The WebSocket helper's own reason (a fresh token for another user on an open
#: connection): the Python package has no WebSocket helper.
JS_ONLY_REASONS = {"wrong_subject"}


def test_both_verifiers_name_the_same_reasons() -> None:
    """The same failure has the same name in both packages, and both READMEs list every
    reason."""
    node, _ = node_and_npm("the JavaScript verifier's reasons")
    printed = subprocess.run(
        [
            node,
            "--input-type=module",
            "-e",
            "import { REASONS } from './src/errors.js';"
            "console.log(JSON.stringify(Object.keys(REASONS)))",
        ],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    js_reasons = set(json.loads(printed.stdout))
    assert js_reasons - JS_ONLY_REASONS == set(REASONS)
    for readme, reasons in ((PACKAGE / "README.md", js_reasons), (PYTHON_README, set(REASONS))):
        text = readme.read_text(encoding="utf-8")
        unlisted = sorted(r for r in reasons if f"`{r}`" not in text)
        assert not unlisted, f"{readme} does not list {unlisted}"


def test_the_npm_tarball_holds_the_package_and_its_license() -> None:
    """What ``npm pack`` would publish: the sources, the types, the README, package.json
    and the license text (package.json says Apache-2.0); no tests and nothing else."""
    files = _npm_packed_files()
    assert {"LICENSE", "README.md", "package.json", "types/index.d.ts"} <= files, files
    assert any(path.startswith("src/") for path in files), files
    assert all(path.split("/")[0] in {"src", "types"} or "/" not in path for path in files)
    assert not {path for path in files if "test" in path.split("/")[0]}, files
    assert "Apache License" in (PACKAGE / "LICENSE").read_text()


def _npm_packed_files() -> set[str]:
    """The paths ``npm pack`` would publish, relative to the package."""
    _, npm = node_and_npm("the JavaScript package's tarball")
    packed = subprocess.run(
        [npm, "pack", "--dry-run", "--json", "--ignore-scripts"],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    (report,) = json.loads(packed.stdout)
    return {entry["path"] for entry in report["files"]}


#: A link's target in Markdown (inline, image, reference definition) or HTML.
_LINK = re.compile(
    r"\]\(\s*<?([^)\s>]+)|^\s*\[[^\]]+\]:\s*<?(\S+?)>?\s*$|(?:href|src)=\"([^\"]+)\"", re.M
)


def _link_targets(text: str) -> list[str]:
    return [next(g for g in m.groups() if g) for m in _LINK.finditer(text)]


def _anchor(heading: str) -> str:
    """The anchor GitHub and npm give a heading: lower case, punctuation dropped, spaces
    as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("package", ["js", "python"])
def test_every_readme_link_works_once_published(package: str) -> None:
    """The README is the package's page on npm (the tarball holds only verifiers/js) and
    the Python distribution's long description on PyPI (rendered with no file beside it):
    a link to ../../docs/... is dead there. A link is an absolute URL, an anchor of the
    README's own headings, or (npm) a file the tarball holds."""
    readme = PACKAGE.parent / package / "README.md"
    text = readme.read_text(encoding="utf-8")
    anchors = {_anchor(h) for h in re.findall(r"^#+\s+(.+)$", text, re.M)}
    shipped = _npm_packed_files() if package == "js" else set()
    sample = '[a](../../docs/x.md#y) ![i]( <b.png> )\n[ref]: ../c.md\n<a href="d.md">'
    assert _link_targets(sample) == ["../../docs/x.md#y", "b.png", "../c.md", "d.md"]
    targets = _link_targets(text)
    dead = []
    for target in targets:
        if re.match(r"(?i)(https?|mailto):", target):
            continue
        path, _, fragment = target.partition("#")
        if not path:
            if fragment not in anchors:
                dead.append(target)
            continue
        resolved = (readme.parent / path).resolve()
        inside = resolved.is_relative_to(readme.parent.resolve())
        if not inside or str(resolved.relative_to(readme.parent.resolve())) not in shipped:
            dead.append(target)
    assert not dead, f"{readme}: links that do not work once published: {dead}"
