"""Make the Kubernetes JSON schemas of the `kubernetes-validate` package usable by kubeconform.

The package (a PyPI dependency of the dev extras) ships one folder per
Kubernetes version whose schemas point at each other as `/api/_definitions.json`,
a path only its own resolver understands. This writes a copy whose references
are absolute `file://` URLs, which kubeconform's loader follows, so validation
needs no network at all.

Usage: python localize.py OUT_DIR VERSION...   (VERSION like 1.33.0)
"""

from __future__ import annotations

import sys
from pathlib import Path

import kubernetes_validate

REFERENCE = '"/api/_definitions.json'


def localize(source: Path, target: Path) -> int:
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    count = 0
    for schema in source.glob("*.json"):
        text = schema.read_text(encoding="utf-8")
        url = f'"file://{target}/_definitions.json'
        (partial / schema.name).write_text(text.replace(REFERENCE, url), encoding="utf-8")
        count += 1
    partial.rename(target)
    return count


def main(out: str, *versions: str) -> int:
    shipped = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    for version in versions:
        name = f"v{version}-local-strict"
        source, target = shipped / name, Path(out).resolve() / name
        if target.is_dir():
            continue
        if not source.is_dir():
            available = sorted(p.name for p in shipped.glob("v*-local-strict"))
            print(f"no schemas for Kubernetes {version}; the package has {available}")
            return 1
        print(f"{target}: {localize(source, target)} schemas")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
