"""What a teacher pins: one version everywhere, a changelog entry, the constraints file, licences
and a citation file that validates."""

import os
import re
import sys
from importlib import metadata
from pathlib import Path

import jsonschema
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

import gqlearn

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# The Citation File Format 1.2.0's rules for the keys CITATION.cff uses, and its list of allowed
# top-level keys (https://github.com/citation-file-format/citation-file-format, schema.json).
CFF_KEYS = ["abstract", "authors", "cff-version", "commit", "contact", "date-released", "doi",
            "identifiers", "keywords", "license", "license-url", "message", "preferred-citation",
            "references", "repository", "repository-artifact", "repository-code", "title", "type",
            "url", "version"]
_SPDX = {"enum": ["MIT", "CC-BY-4.0", "Apache-2.0", "BSD-3-Clause"]}
CFF_SCHEMA = {
    "type": "object",
    "required": ["authors", "cff-version", "message", "title"],
    "additionalProperties": False,
    "properties": {
        **{key: {} for key in CFF_KEYS},
        "cff-version": {"type": "string", "pattern": r"^1\.2\.0$"},
        "message": {"type": "string", "minLength": 1},
        "title": {"type": "string", "minLength": 1},
        "abstract": {"type": "string", "minLength": 1},
        "type": {"enum": ["software", "dataset"]},
        "version": {"type": ["string", "number"], "minLength": 1},
        "date-released": {"type": "string",
                          "pattern": r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$"},
        "keywords": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
        "license": {"oneOf": [_SPDX, {"type": "array", "minItems": 1, "uniqueItems": True,
                                      "items": _SPDX}]},
        "authors": {"type": "array", "minItems": 1, "items": {"anyOf": [
            {"type": "object", "required": ["name"], "properties": {"name": {"type": "string",
                                                                             "minLength": 1}}},
            {"type": "object",
             "anyOf": [{"required": ["family-names"]}, {"required": ["given-names"]}]},
        ]}},
    },
}


def _cff() -> dict:
    # YAML 1.2 as CFF requires: dates and versions are quoted, so safe_load keeps them strings
    return yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def test_citation_cff_validates_against_the_cff_rules():
    jsonschema.validate(_cff(), CFF_SCHEMA)
    for bad in ({"cff-version": "1.1.0"}, {"date-released": "30.11.2026"}, {"authors": []},
                {"license": "MIT-ish"}, {"titel": "typo"}):
        broken = {**_cff(), **bad}
        try:
            jsonschema.validate(broken, CFF_SCHEMA)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"the schema accepted {bad}")


def test_one_version_everywhere_with_a_changelog_entry():
    version = PROJECT["version"]
    assert gqlearn.__version__ == version
    cff = _cff()
    assert cff["version"] == version
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d\d-\d\d)$", changelog, re.M)
    assert releases[0] == (version, cff["date-released"])
    assert "## [Unreleased]" in changelog.split(f"## [{version}]")[0]


def test_licences_code_mit_content_cc_by():
    assert PROJECT["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    legal = (ROOT / "LICENSES" / "CC-BY-4.0.txt").read_text(encoding="utf-8")
    assert "Attribution 4.0 International Public License" in legal and len(legal.split()) > 2500
    notice = (ROOT / "LICENSE-CONTENT").read_text(encoding="utf-8")
    assert "CC BY 4.0" in notice and "LICENSES/CC-BY-4.0.txt" in notice
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "CC BY 4.0" in readme and "LICENSE-CONTENT" in readme


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_constraints_pin_every_requirement_exactly():
    pins = _pins()
    assert "gqlearn" not in pins
    required = PROJECT["dependencies"] + PROJECT["optional-dependencies"]["dev"]
    for requirement in required:
        if "python_version < '3.11'" in requirement:
            continue
        name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"constraints.txt does not pin {name}"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install -e ".[dev]" -c constraints.txt' in readme


def test_ci_installed_exactly_the_constraints():
    """In CI (``.ci/run`` installs with ``-c constraints.txt``) the pins are what runs."""
    if not os.environ.get("CI"):
        return  # a local install may try newer versions (README: without -c)
    differ = {}
    for name, version in _pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # pinned for another platform's or extra's dependency tree
        if installed != version:
            differ[name] = (version, installed)
    assert not differ, f"installed versions differ from constraints.txt: {differ}"
